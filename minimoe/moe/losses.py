"""Balancing losses and the router z-loss, each as written in its paper
(docs/formulas.md §4, §6–§9, §11, §15–§16).

Every loss here is returned *without* its coefficient; the layer multiplies by the coefficient of
its config. So a loss of 1.0 from `switch_balance_loss` is the perfectly balanced value, and the
Switch paper's alpha * N * sum f_i P_i is `alpha * switch_balance_loss(...)`.
"""
from .. import functional as F
from ..backend import xp_of
from ..tensor import Tensor


def assignment_fractions(expert_index, n_experts: int):
    """f_i: the fraction of the T*k token-to-expert assignments that chose expert i (an array,
    no gradient: an argmax is not differentiable)."""
    xp = xp_of(expert_index)
    counts = xp.bincount(expert_index.reshape(-1), minlength=n_experts)[:n_experts]
    return counts / max(1, expert_index.size)


def switch_balance_loss(probs: Tensor, expert_index, n_experts: int) -> Tensor:
    """N * sum_i f_i * P_i (Fedus et al. 2021, §2.2, eq. 4-6), P_i = mean router probability.

    f has no gradient, so the loss pushes on P: the router learns to lower the probability of the
    experts that got many tokens. Uniform routing gives exactly 1 (N * N * 1/N * 1/N). For k > 1,
    f counts all k choices (DeepSpeed's top-k form; the uniform value stays 1).
    """
    f = assignment_fractions(expert_index, n_experts)  # (E,)
    p_mean = probs.mean(axis=0)  # (E,)
    return (p_mean * f.astype(probs.dtype)).sum() * n_experts


def gshard_balance_loss(probs: Tensor, expert_index, n_experts: int) -> Tensor:
    """(1/E) sum_e (c_e / S) m_e, GShard's auxiliary loss as the paper writes it (Lepikhin et al.
    2020, §2.2 and Algorithm 1): c_e counts the tokens whose *first* choice is e (second choices
    never count), m_e is the mean router probability of e, over a group of S tokens (here the
    whole batch). Uniform routing gives 1/E^2. The paper's reference code multiplies by E^2, which
    makes it E * sum f P over first choices: switch_balance_loss of expert_index[:, :1].
    """
    f = assignment_fractions(expert_index[:, :1], n_experts)  # (E,) c_e / S, no gradient
    p_mean = probs.mean(axis=0)  # (E,) m_e
    return (p_mean * f.astype(probs.dtype)).sum() * (1.0 / n_experts)


def cv_squared(v: Tensor) -> Tensor:
    """The squared coefficient of variation, var / mean^2, with the population variance (vmoe's
    convention; the original t2t code uses the unbiased one). 0 exactly when all entries are equal."""
    mean = v.mean()
    centred = v - mean
    return (centred * centred).mean() / (mean * mean + 1e-10)


def one_hot(expert_index, n_experts: int, dtype):
    """(..., E) array: 1 where the last axis names the expert chosen, 0 elsewhere."""
    xp = xp_of(expert_index)
    return (expert_index[..., None] == xp.arange(n_experts)).astype(dtype)


def importance(gates: Tensor, expert_index, n_experts: int) -> Tensor:
    """Importance_i = sum over tokens of the gate value of expert i (Shazeer et al. 2017, §4, eq. 6)."""
    chosen = one_hot(expert_index, n_experts, gates.dtype)  # (T, k, E)
    return (gates.reshape(gates.shape + (1,)) * chosen).sum(axis=(0, 1))  # (E,)


def importance_loss(gates: Tensor, expert_index, n_experts: int) -> Tensor:
    """CV(Importance)^2 (eq. 7): penalises experts whose total gate weight differs."""
    return cv_squared(importance(gates, expert_index, n_experts))


def load_loss(smooth_load: Tensor) -> Tensor:
    """CV(Load)^2 with Load_i = sum over tokens of P(x, i), the smooth probability that expert i
    is chosen (Shazeer et al. 2017, App. A, eqs. 8-11): a differentiable count of tokens per expert."""
    return cv_squared(smooth_load.sum(axis=0))


def z_loss(logits: Tensor) -> Tensor:
    """(1/T) sum_t (log sum_j exp(x_tj))^2 (Zoph et al. 2022, ST-MoE, §3.3, eq. 5): keeps router
    logits small, where float rounding in the softmax stays harmless. Zero logits give (log E)^2."""
    lse = F.logsumexp(logits, axis=-1)  # (T,)
    return (lse * lse).mean()


def deepseek_sequence_loss(probs: Tensor, expert_index, n_experts: int, k: int) -> Tensor:
    """DeepSeek-V3's complementary sequence-wise balance loss (Liu et al. 2024, §2.1.2, eqs. 17-20):
    for each sequence, sum_i f_i P_i with f_i = E / (k T) * (tokens choosing i) and P_i the mean of
    the normalised affinities s'; averaged over sequences. Uniform routing gives 1.

    probs (B, T, E) Tensor; expert_index (B, T, k): each token's top k of the *unbiased* scores
    (eq. 18), which can differ from the experts the bias steered it to.
    """
    b, t, _ = probs.shape
    f = one_hot(expert_index, n_experts, probs.dtype).sum(axis=(1, 2)) * (n_experts / (k * t))  # (B, E)
    p_mean = probs.mean(axis=1)  # (B, E)
    return (p_mean * f).sum() * (1.0 / b)


def aux_free_bias_update(bias, load, rate: float):
    """b_i <- b_i + rate * sign(mean(load) - load_i) (DeepSeek-V3, §2.1.2; gamma = 0.001 in §4.2).

    Applied outside the gradient, after each step: an overloaded expert's bias falls, so it is
    chosen a little less next time; an underloaded one's rises. `load` is the tokens per expert."""
    xp = xp_of(bias)
    load = xp.asarray(load, dtype=bias.dtype)  # the counts may be host ints beside a device bias
    return bias + rate * xp.sign(load.mean() - load)

