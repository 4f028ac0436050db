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


def sequence_balance_loss(scores, topk_idx, n_experts, k, alpha):
    """DeepSeek-V3's complementary sequence-wise balance loss (arXiv 2412.19437, eqs. 17-20).

    scores: ndarray (B, T, E), the affinities s_{i,t} > 0 of B sequences of T tokens (sigmoids in
    V3, not normalised). topk_idx: int ndarray (B, T, k), each token's k experts of largest s (eq. 18
    counts the top-k of the *unbiased* s, whatever the bias chose). n_experts: E; k: 1 <= k <= E;
    alpha: the balance factor (0.0001 in V3, section 4.2).
    Within each sequence: f_i = E / (k T) * (the number of its tokens whose top-k holds expert i),
    s'_{i,t} = s_{i,t} / sum_j s_{j,t}, P_i = (1/T) sum_t s'_{i,t}, and L = alpha * sum_i f_i P_i.
    Returns the mean of L over the B sequences, a float (alpha exactly when every sequence is
    balanced and every s'_t uniform).
    ValueError when scores is not (B, T, E) with E = n_experts, k is not in 1..E, topk_idx is not
    (B, T, k), or an index lies outside 0..E-1.

    Hint: counts per sequence (B, E) = (topk_idx[..., None] == np.arange(E)).sum(axis=(1, 2)).
    """
    scores, topk_idx = np.asarray(scores, dtype=float), np.asarray(topk_idx)
    if scores.ndim != 3 or scores.shape[-1] != n_experts:
        raise ValueError(f"scores must have shape (B, T, n_experts={n_experts}), got {scores.shape}")
    n_seq, length, _ = scores.shape
    if not 1 <= k <= n_experts:
        raise ValueError(f"k must be between 1 and n_experts={n_experts}, got {k}")
    if topk_idx.shape != (n_seq, length, k):
        raise ValueError(f"topk_idx must have shape (B, T, k) = {(n_seq, length, k)}, got {topk_idx.shape}")
    if topk_idx.size and (topk_idx.min() < 0 or topk_idx.max() >= n_experts):
        raise ValueError(f"expert indices must lie in 0..{n_experts - 1}, got {topk_idx.min()}..{topk_idx.max()}")
    counts = (topk_idx[..., None] == np.arange(n_experts)).sum(axis=(1, 2))  # (B, E) choices per expert
    f = counts * (n_experts / (k * length))  # (B, E), 1 for every expert when balanced
    p = (scores / scores.sum(axis=-1, keepdims=True)).mean(axis=1)  # (B, E) mean normalised affinity s'
    return float(alpha * (f * p).sum(axis=1).mean())


def group_limited_topk(scores, n_groups, topk_groups, k):
    """DeepSeek-V3's group-limited (node-limited) routing (arXiv 2412.19437, section 2.1.2).

    scores: finite ndarray (T, E), the scores the choice is made on (s + b in V3). The E experts form
    n_groups groups of E / n_groups consecutive experts (group g holds experts g*E/n_groups onward,
    the experts of one node). A group's score is the sum of its two largest scores (the released
    V3 code's rule; a group of one expert scores that expert). Each token keeps its topk_groups
    best groups (equal group scores: the lower group index first) and takes the k largest scores
    among their experts; the other groups' experts are never chosen, whatever their scores.
    Returns int ndarray (T, k), the chosen experts in decreasing score order (equal scores: the
    lower expert index first). topk_groups = n_groups is plain top-k.
    ValueError when n_groups does not divide E, topk_groups is not in 1..n_groups, or k is not in
    1..topk_groups * E / n_groups.

    Hint: reshape to (T, G, E/G); np.sort(...)[..., -2:].sum(-1); stable argsort of the negated
    group scores; -np.inf for the experts of the other groups; stable argsort of the negated scores.
    """
    scores = np.asarray(scores, dtype=float)
    n_tokens, n_experts = scores.shape
    if n_groups < 1 or n_experts % n_groups:
        raise ValueError(f"n_groups={n_groups} must divide the {n_experts} experts into equal groups")
    size = n_experts // n_groups
    if not 1 <= topk_groups <= n_groups:
        raise ValueError(f"topk_groups must be between 1 and n_groups={n_groups}, got {topk_groups}")
    if not 1 <= k <= topk_groups * size:
        raise ValueError(f"k={k} must be between 1 and the {topk_groups * size} experts of the "
                         f"{topk_groups} groups a token may use")
    group_score = np.sort(scores.reshape(n_tokens, n_groups, size), axis=-1)[..., -2:].sum(axis=-1)  # (T, G)
    best_groups = np.argsort(-group_score, axis=-1, kind="stable")[:, :topk_groups]  # (T, topk_groups)
    allowed = np.zeros((n_tokens, n_groups), dtype=bool)
    np.put_along_axis(allowed, best_groups, True, axis=1)
    masked = np.where(np.repeat(allowed, size, axis=1), scores, -np.inf)  # (T, E) other groups out
    return np.argsort(-masked, axis=-1, kind="stable")[:, :k]
