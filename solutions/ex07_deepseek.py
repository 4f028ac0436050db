"""Lesson 07, DeepSeek-style experts (DeepSeekMoE, Dai et al. 2024; DeepSeek-V3, 2024): reference
answers.

Try the exercise first (`exercises/ex07_deepseek.py`); grade it with
`python -m minimoe.grade ex07`.
"""
import numpy as np


def segment_experts(w_in, w_out, m):
    """Fine-grained expert segmentation (DeepSeekMoE, section 3.1): split each expert into m.

    w_in: ndarray (E, d, h), w_out: ndarray (E, h, d); expert e is act(x @ w_in[e]) @ w_out[e].
    m: int dividing h (ValueError otherwise).
    Returns (fine_in (E*m, d, h/m), fine_out (E*m, h/m, d)): fine expert e*m + j holds hidden units
    j*h/m .. (j+1)*h/m of expert e, so the m fine experts of e, summed, compute exactly expert e.

    Hint: reshape w_in to (E, d, m, h/m), move the m axis next to E, reshape to (E*m, d, h/m).
    """
    n_experts, d, hidden = w_in.shape
    if hidden % m:
        raise ValueError(f"m={m} must divide the expert hidden size {hidden}")
    part = hidden // m
    split = w_in.reshape(n_experts, d, m, part).transpose(0, 2, 1, 3)  # (E, m, d, h/m)
    fine_in = split.reshape(n_experts * m, d, part)
    fine_out = w_out.reshape(n_experts * m, part, d)  # hidden leads in w_out: a plain split
    return fine_in, fine_out


def moe_with_shared_experts(x, gates, routed_weights, shared_weights):
    """An MoE layer with always-on shared experts (DeepSeekMoE, section 3.2): routed + shared.

    x: ndarray (T, d). gates: ndarray (T, E), each token's gate for each routed expert (0 where not
    routed). routed_weights: ndarray (E, d, d), shared_weights: ndarray (S, d, d); every expert here
    is a linear map x -> x @ W (kept linear so the exercise is about the combination).
    Returns an ndarray (T, d), row t = sum_e gates[t, e] x_t @ routed_weights[e]
                                     + sum_s x_t @ shared_weights[s].
    The shared experts are neither gated nor averaged; the residual x is not added (the block
    adds it).

    Hint: np.einsum("te,td,edf->tf", ...) routed, np.einsum("td,sdf->tf", ...) shared.
    """
    routed = np.einsum("te,td,edf->tf", gates, x, routed_weights)  # (T, d), gate-weighted
    shared = np.einsum("td,sdf->tf", x, shared_weights)  # (T, d), every token, weight 1
    return routed + shared


def deepseek_v3_gate(logits, bias, k, scaling=1.0):
    """The DeepSeek-V3 gate (arXiv 2412.19437, eqs. 13-16, and the released routed_scaling_factor).

    logits: ndarray (T, E), u_t . e_i. bias: ndarray (E,), the balancing bias b. k: int, 1 <= k <= E.
    scaling: the routed scaling factor (1 by default, as minimoe's DeepSeekV3Router; 2.5 in the
    released V3 configuration).
    s = sigmoid(logits); the chosen experts are the k largest of s + b (the bias steers the choice
    only; among equal s + b the lower expert index first); their gates are the *unbiased* s,
    normalised to sum to 1, times `scaling`.
    Returns (expert_index int (T, k), gates (T, k)), in decreasing order of s + b; finite and
    summing to `scaling` for logits of +-1000, even when every chosen s underflows to 0.

    Hint: argsort -(s + b); normalise in logs, log s = -np.logaddexp(0, -logits), minus the row max.
    """
    scores = 0.5 * (1.0 + np.tanh(0.5 * logits))  # sigmoid affinity s (T, E)
    biased = scores + bias  # used for the choice only
    expert_index = np.argsort(-biased, axis=-1, kind="stable")[:, :k]  # (T, k)
    # s_i / sum_j s_j in logs: at logits near -1000 every s is 0 in floating point, their logs are not.
    log_scores = -np.logaddexp(0.0, -np.take_along_axis(logits, expert_index, axis=-1))  # (T, k)
    weights = np.exp(log_scores - log_scores.max(axis=-1, keepdims=True))
    return expert_index, weights / weights.sum(axis=-1, keepdims=True) * scaling


def update_expert_bias(bias, load, rate):
    """DeepSeek-V3's auxiliary-loss-free balancing (section 2.1.2): b += rate * sign(mean - load).

    bias: ndarray (E,). load: ndarray (E,), tokens routed to each expert in the last step.
    rate: float, the bias update speed (0.001 in the paper).
    Returns the new bias, ndarray (E,): overloaded experts go down by `rate`, underloaded go up,
    experts exactly at the mean stay.

    Hint: np.sign(load.mean() - load).
    """
    return bias + rate * np.sign(load.mean() - load)
