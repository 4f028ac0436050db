"""Capacity and the sorted dispatch: which token copy goes to which expert, in which order.

A token routed to k experts becomes k *assignments*. Sorting the assignments by expert puts each
expert's tokens in one contiguous block (the MegaBlocks idea, Gale et al. 2022), so each expert
runs one matmul. With a capacity C, an expert keeps only its first C assignments: first choices
(in token order) before second choices, as GShard's position-in-buffer rule (Lepikhin et al. 2020,
Alg. 1); the rest are dropped and pass through the residual connection untouched.

A capacity makes token-choice routing non-causal too: whether an earlier token's second choice
fits can depend on later tokens' first choices, which fill the queue before it (lesson 06 shows it).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from ..backend import to_numpy, xp_of


def expert_capacity(n_tokens: int, n_experts: int, k: int, capacity_factor: float) -> int:
    """C = ceil(k * T / E * cf), rounding *up* so that cf = 1 with perfectly even routing drops
    nothing. Exact: cf is read as the decimal it is written as (`str` of a float is its shortest
    round-tripping decimal, so 1.1 is 11/10) and the rest is rational arithmetic, so cf = 1.1 with
    T = 100, E = 2, k = 1 gives 55, where floating point gives 56 and a rounding step before the
    ceiling goes wrong for large T * cf or a factor a hair above an integer."""
    if not capacity_factor > 0 or not math.isfinite(capacity_factor):
        raise ValueError(f"capacity_factor must be a finite number > 0 (got {capacity_factor}); "
                         "use None for dropless routing")
    factor = Fraction(str(capacity_factor))  # str, not repr: repr(np.float64(1.1)) is not a number
    return math.ceil(k * n_tokens * factor / n_experts)


@dataclass
class DispatchPlan:
    """order: indices of the kept assignments, sorted by expert; an assignment a stands for token
    a % T and its (a // T)-th choice (k-major numbering, so first choices come first).
    group_sizes: kept assignments per expert (host ints). n_dropped: assignments over capacity."""

    order: object  # (M,) backend int array
    group_sizes: np.ndarray  # (E,)
    n_dropped: int
    capacity: int | None


def plan_dispatch(expert_index, n_experts: int, capacity: int | None = None, keep=None) -> DispatchPlan:
    """Sorts the assignments of `expert_index` (T, k) by expert and applies the capacity.

    `keep` (T, k) bool marks assignments the router chose not to dispatch at all (GShard's random
    second expert); they are neither computed nor counted as dropped.
    """
    xp = xp_of(expert_index)
    flat = expert_index.T.reshape(-1)  # (k*T,) k-major: all first choices, then all second...
    if keep is not None:
        flat = xp.where(keep.T.reshape(-1), flat, n_experts)  # not dispatched: a sentinel expert, sorted last
    order = xp.argsort(flat, kind="stable")  # (k*T,)
    sorted_experts = flat[order]
    counts = xp.bincount(sorted_experts, minlength=n_experts + 1)  # (E+1,) last = not dispatched
    kept = sorted_experts < n_experts
    group_sizes = to_numpy(counts[:n_experts]).astype(np.int64)
    n_dropped = 0
    if capacity is not None:
        if capacity < 1:
            raise ValueError(f"capacity must be at least 1 token per expert, got {capacity}")
        starts = xp.cumsum(counts) - counts  # first sorted position of each expert
        position = xp.arange(flat.shape[0]) - starts[sorted_experts]  # rank within the expert's queue
        kept &= position < capacity
        n_dropped = int((group_sizes - np.minimum(group_sizes, capacity)).sum())
        group_sizes = np.minimum(group_sizes, capacity)
    return DispatchPlan(order=order[kept], group_sizes=group_sizes, n_dropped=n_dropped, capacity=capacity)

