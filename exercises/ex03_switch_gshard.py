"""Lesson 03, GShard and Switch (Lepikhin et al. 2020; Fedus et al. 2021), and dropless dispatch by
sorting (MegaBlocks, Gale et al. 2022): exercises.

Replace each `raise NotImplementedError(...)` with your answer, then grade:
    python -m minimoe.grade ex03
Each docstring is the contract the grader checks; the reference answers are in
`solutions/ex03_switch_gshard.py` (look there only when stuck).
"""
# ruff: noqa: F401  (the imports are there for your answers)
import math
from fractions import Fraction

import numpy as np


def expert_capacity(n_tokens, n_experts, k, capacity_factor):
    """The number of token slots per expert: C = ceil(k * T / E * capacity_factor), exactly.

    n_tokens (T), n_experts (E), k: positive ints. capacity_factor: a finite number > 0 (ValueError
    otherwise, naming the value), read as the decimal it is written as: 1.1 means 11/10, not the
    binary float nearest to it, so T = 100, E = 2, k = 1, cf = 1.1 gives exactly 55 (floating-point
    arithmetic gives 56). Returns an int. k * T / E is the average number of assignments per
    expert; the factor adds head-room; rounding *up* guarantees that cf = 1 fits a perfectly
    balanced batch.

    Hint: fractions.Fraction(str(capacity_factor)) is the decimal exactly; math.ceil of k*T*cf/E.
    """
    raise NotImplementedError(
        'ex03: fractions.Fraction(str(capacity_factor)) is the decimal exactly; math.ceil of '
        'k*T*cf/E.')


def dispatch_with_capacity(expert_index, n_experts, capacity):
    """Each assignment's slot in its expert's buffer, or -1 where the buffer is full (dropped).

    expert_index: int ndarray (T, k), the experts chosen for each token, first choice in column 0;
    any k from 1 to E. n_experts: int. capacity: int >= 0, slots per expert (0 drops everything).
    Slots are handed out in this order (GShard, Alg. 1): all first choices in token order, then
    all second choices in token order, and so on; an assignment takes the next free slot of its
    expert, and is dropped if that slot number is >= capacity.
    Returns an int ndarray (T, k): the slot (0 .. capacity-1) of each assignment, -1 if dropped.

    Hint: flatten expert_index.T, one-hot it, cumsum down the rows, minus 1, pick each own expert.
    """
    raise NotImplementedError(
        'ex03: flatten expert_index.T, one-hot it, cumsum down the rows, minus 1, pick each own '
        'expert.')


def switch_loss(router_probs, alpha=0.01):
    """The Switch balancing loss (Fedus et al. 2021, eqs. 4-6): alpha * N * sum_i f_i * P_i.

    router_probs: Tensor (T, N), each token's softmax over the N experts.
    f_i = fraction of tokens whose argmax is expert i (a count: no gradient);
    P_i = mean over tokens of router_probs[:, i] (differentiable).
    Returns a scalar Tensor of router_probs' dtype; equals alpha when routing is perfectly
    uniform. An expert that is no token's argmax has f_i = 0 (it still has a P_i).

    Hint: f = np.bincount(np.argmax(router_probs.data, -1), minlength=N) / T, as router_probs.dtype.
    """
    raise NotImplementedError(
        'ex03: f = np.bincount(np.argmax(router_probs.data, -1), minlength=N) / T, as '
        'router_probs.dtype.')


def sort_by_expert(expert_index, n_experts):
    """Groups the token-expert assignments by expert, for one matmul per expert (dropless dispatch).

    expert_index: int ndarray (T, k). Assignment a = t * k + j is token t's j-th choice,
    i.e. position a of expert_index.reshape(-1).
    Returns (order, group_sizes):
      order:       int ndarray (T*k,), the assignments sorted by expert; within one expert, in
                   increasing assignment number (a stable sort);
      group_sizes: int ndarray (E,), how many assignments each expert got (0 for an unused expert).

    Hint: np.argsort(expert_index.reshape(-1), kind="stable"); np.bincount(..., minlength=E).
    """
    raise NotImplementedError(
        'ex03: np.argsort(expert_index.reshape(-1), kind="stable"); np.bincount(..., '
        'minlength=E).')


def combine_sorted(sorted_outputs, order, gates):
    """Scatters expert outputs computed in sorted order back to their tokens, weighted by the gates.

    sorted_outputs: ndarray (T*k, d): row r is the output for assignment order[r].
    order: int ndarray (T*k,), from sort_by_expert. gates: ndarray (T, k), token t's weight for its
    j-th choice. Returns an ndarray (T, d): y_t = sum_j gates[t, j] * output of assignment t*k + j.

    Hint: invert the sort (outputs[order] = sorted_outputs), reshape (T, k, d), weight, sum over k.
    """
    raise NotImplementedError(
        'ex03: invert the sort (outputs[order] = sorted_outputs), reshape (T, k, d), weight, sum '
        'over k.')


def gshard_random_routing(probs, uniform):
    """GShard's top-2 gate with random routing of the second expert (Lepikhin et al. 2020, §2.2
    and Algorithm 1), with the random draws passed in so that the result is deterministic.

    probs: float ndarray (T, E), E >= 2: each token's router softmax (non-negative, rows sum to 1).
    uniform: float ndarray (T,): one draw u from U[0, 1) per token; any other shape is a
    ValueError that names both shapes.
    Returns (expert_index, gates, keep_second):
      expert_index: int ndarray (T, 2), each token's two most probable experts, best first; equal
                    probabilities go to the lower expert index (a stable sort);
      gates:        ndarray (T, 2) of probs' dtype, the two probabilities renormalised,
                    g1 = p1 / (p1 + p2) and g2 = p2 / (p1 + p2), whether or not the second is kept;
      keep_second:  bool ndarray (T,), True exactly where 2 * g2 > u (strictly): the second expert
                    is dispatched with probability min(1, 2 * g2). So never when g2 = 0 (not even
                    for u = 0), always when g2 >= 0.5 (as when p1 = p2), and not when u = 2 * g2.

    Hint: np.argsort(-probs, axis=-1, kind="stable")[:, :2]; np.take_along_axis; 2 * g2 > uniform.
    """
    raise NotImplementedError(
        'ex03: np.argsort(-probs, axis=-1, kind="stable")[:, :2]; np.take_along_axis; 2 * g2 > '
        'uniform.')


def gshard_aux_loss(router_probs):
    """GShard's auxiliary balancing loss as the paper writes it, group by group (Lepikhin et al.
    2020, §2.2 and Algorithm 1): the mean over groups of (1/E) * sum_e (c_e / S) * m_e.

    router_probs: Tensor (G, S, E): G groups of S tokens, each token's softmax over E experts.
    In each group, c_e = the number of its tokens whose first choice (the argmax; equal
    probabilities go to the lower index) is expert e: a count, no gradient; m_e = the mean of
    router_probs[g, :, e] over the group's tokens: differentiable. Second choices never count.
    Returns a scalar Tensor of router_probs' dtype, without a coefficient; 1/E^2 when routing is
    perfectly uniform (the paper's reference code multiplies by E^2; this exercise does not).

    Hint: f = one-hot of np.argmax(router_probs.data, -1), mean over axis 1, as router_probs.dtype;
    then (router_probs.mean(axis=1) * f).mean().
    """
    raise NotImplementedError(
        'ex03: f = one-hot of np.argmax(router_probs.data, -1), mean over axis 1, as '
        'router_probs.dtype; then (router_probs.mean(axis=1) * f).mean().')
