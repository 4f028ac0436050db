"""The all-to-all of expert parallelism, simulated in one process: how many token rows each rank
sends to each other rank, in which order, and how many bytes cross between them -- no MPI needed
(lesson 09 uses it where MPI is absent).

It runs the expert-parallel layer's own planning code (plan.py) on each shard of the batch, with
the two collectives the plan needs (an Allreduce and an Exscan of the per-rank counts) replaced by
sums over the shards, so its counts are the ones an MPI run measures (the tests check they are).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import to_numpy
from ..moe.dispatch import expert_capacity
from .plan import experts_per_rank, plan_shard_dispatch, queue_start, slot_counts


@dataclass
class AllToAllSimulation:
    """send_counts[s, q]: rows rank s sends to rank q in the dispatch (the diagonal never leaves
    its rank); sent_per_expert[s, e]: rows rank s sends to expert e; orders[s]: the permutation
    rank s applies before sending (its kept assignments sorted by expert, numbered as in
    `plan_dispatch`: local token a % T, choice a // T). The combine sends every row back, and a
    backward pass repeats both exchanges."""

    send_counts: np.ndarray  # (R, R)
    sent_per_expert: np.ndarray  # (R, E)
    orders: list  # R host int arrays
    capacity: int | None
    n_dropped: int
    row_bytes: int  # d_model * bytes per value

    @property
    def rows_out(self) -> np.ndarray:
        """(R,) rows each rank sends to other ranks."""
        return self.send_counts.sum(axis=1) - np.diag(self.send_counts)

    @property
    def rows_in(self) -> np.ndarray:
        """(R,) rows each rank receives from other ranks."""
        return self.send_counts.sum(axis=0) - np.diag(self.send_counts)

    @property
    def expert_load(self) -> np.ndarray:
        """(E,) rows each expert processes."""
        return self.sent_per_expert.sum(axis=0)

    @property
    def bytes_per_forward(self) -> int:
        """Bytes crossing between ranks in one forward: the dispatch and the combine."""
        return 2 * int(self.rows_out.sum()) * self.row_bytes

    @property
    def bytes_per_step(self) -> int:
        """Forward and backward: each all-to-all runs once more, in reverse, for the gradients."""
        return 2 * self.bytes_per_forward


def simulate_all_to_all(expert_index, n_ranks: int, n_experts: int, capacity_factor: float | None = None,
                        keep=None, d_model: int = 1, bytes_per_value: int = 4) -> AllToAllSimulation:
    """The dispatch of a batch whose routing is `expert_index` (N, k), its N tokens split evenly
    over `n_ranks` ranks in order and its experts in blocks of E/R. The capacity (with a
    `capacity_factor`) is that of the whole batch, C = ceil(k N / E * cf), as on one process."""
    expert_index = _on_host(expert_index)
    if expert_index.ndim != 2 or expert_index.dtype.kind not in "iu":
        raise ValueError(f"expert_index must be a (tokens, k) integer array, "
                         f"got {expert_index.dtype} of shape {expert_index.shape}")
    n, k = expert_index.shape
    if n_ranks < 1 or n % n_ranks:
        raise ValueError(f"the simulation splits the {n} tokens evenly over the ranks: use a number of ranks "
                         f"that divides {n} (got {n_ranks})")
    experts_per_rank(n_experts, n_ranks)
    shards = np.split(expert_index, n_ranks)  # rank r's tokens
    keeps = np.split(_on_host(keep), n_ranks) if keep is not None else [None] * n_ranks
    capacity = expert_capacity(n, n_experts, k, capacity_factor) if capacity_factor else None
    counts = np.stack([slot_counts(s, n_experts, kp) for s, kp in zip(shards, keeps)])  # (R, k, E)
    lower = np.cumsum(counts, axis=0) - counts  # (R, k, E): what Exscan gives each rank
    starts = [queue_start(counts.sum(axis=0), lower[r]) if capacity else None for r in range(n_ranks)]
    plans = [plan_shard_dispatch(s, n_experts, capacity, kp, start) for s, kp, start in zip(shards, keeps, starts)]
    per_expert = np.stack([p.sent_per_expert for p in plans])  # (R, E)
    return AllToAllSimulation(
        send_counts=np.stack([p.rows_per_rank(n_ranks) for p in plans]),
        sent_per_expert=per_expert,
        orders=[to_numpy(p.order) for p in plans],
        capacity=capacity,
        n_dropped=sum(p.n_dropped for p in plans),
        row_bytes=d_model * bytes_per_value,
    )


def _on_host(array) -> np.ndarray:
    return np.asarray(array) if isinstance(array, (list, tuple, np.ndarray)) else to_numpy(array)
