"""Which token copies one rank sends to which expert, with the capacity of the *global* batch.

On one process (`minimoe.moe.dispatch`) expert e keeps the first C assignments of its queue, and
the queue holds every token's first choice in token order, then every second choice, and so on
(GShard's position-in-buffer rule, Lepikhin et al. 2020, Alg. 1). Split the tokens over R ranks
in order -- rank 0 the first N/R, rank 1 the next N/R... -- and rank r's assignments of choice slot
j to expert e start in e's queue after

    queue_start[j, e] = (slots j' < j of every rank)  +  (slot j of ranks 0 .. r-1)

assignments: an Allreduce and an exclusive prefix sum across ranks (MPI's Exscan) of the per-rank
counts `slot_counts`. With it, every rank keeps exactly the assignments the single process keeps,
without seeing the other ranks' tokens. The simulation (simulate.py) runs this same code with the
two collectives replaced by sums over a Python list of shards.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..backend import asarray, name_of, to_numpy, xp_of
from ..moe.dispatch import plan_dispatch


def experts_per_rank(n_experts: int, n_ranks: int) -> int:
    """E / R, refusing a split that would leave ranks with unequal numbers of experts."""
    if n_experts % n_ranks:
        fits = [r for r in range(1, n_experts + 1) if n_experts % r == 0]
        raise ValueError(f"{n_experts} experts do not split evenly over {n_ranks} ranks: run on a number of "
                         f"ranks that divides {n_experts} ({', '.join(map(str, fits))}) or change n_experts")
    return n_experts // n_ranks


def slot_counts(expert_index, n_experts: int, keep=None) -> np.ndarray:
    """(k, E) host ints: how many of this shard's tokens send their choice j to expert e
    (assignments with keep=False are not dispatched and not counted)."""
    xp = xp_of(expert_index)
    k = expert_index.shape[1]
    target = expert_index.T  # (k, T)
    if keep is not None:
        target = xp.where(keep.T, target, n_experts)  # not dispatched: a sentinel column, cut below
    cell = xp.arange(k)[:, None] * (n_experts + 1) + target  # (k, T) one number per (slot, expert)
    counts = xp.bincount(cell.reshape(-1), minlength=k * (n_experts + 1))
    return to_numpy(counts).reshape(k, n_experts + 1)[:, :n_experts].astype(np.int64)


def queue_start(total: np.ndarray, lower: np.ndarray) -> np.ndarray:
    """(k, E): where this shard's slot-j assignments begin in each expert's global queue.

    total = the sum over ranks of `slot_counts` (Allreduce); lower = the sum over lower ranks only
    (Exscan). Earlier slots of every rank come first, then the same slot of lower ranks."""
    return np.cumsum(total, axis=0) - total + lower


@dataclass
class ShardPlan:
    """order: this shard's kept assignments sorted by expert (k-major numbering as in
    `plan_dispatch`: assignment a is local token a % T, choice a // T). Experts are owned in
    blocks of E/R, so sorting by expert also sorts by destination rank.
    sent_per_expert: (E,) host ints, the kept rows for each expert. n_dropped: over capacity."""

    order: object  # (M,) backend int array
    sent_per_expert: np.ndarray  # (E,)
    n_dropped: int

    def rows_per_rank(self, n_ranks: int) -> np.ndarray:
        """(R,) rows for each rank: the send counts of the Alltoallv."""
        return self.sent_per_expert.reshape(n_ranks, -1).sum(axis=1)


def plan_shard_dispatch(expert_index, n_experts: int, capacity: int | None = None, keep=None,
                        start: np.ndarray | None = None) -> ShardPlan:
    """The sorted dispatch of one shard's routing (expert_index (T, k)); with a `capacity`, `start`
    is this shard's `queue_start` and an assignment is kept if its global queue position < C."""
    plan = plan_dispatch(expert_index, n_experts, None, keep)  # every dispatched assignment, by expert
    if capacity is None:
        return ShardPlan(plan.order, plan.group_sizes, 0)
    if capacity < 1:
        raise ValueError(f"capacity must be at least 1 token per expert, got {capacity}")
    if start is None or np.shape(start) != (expert_index.shape[1], n_experts):
        raise ValueError(f"with a capacity, plan_shard_dispatch needs start: the ({expert_index.shape[1]}, "
                         f"{n_experts}) queue_start of this shard, got {None if start is None else np.shape(start)}")
    xp, device = xp_of(expert_index), name_of(expert_index)
    local = slot_counts(expert_index, n_experts, keep)  # (k, E)
    first_row = np.cumsum(plan.group_sizes) - plan.group_sizes  # (E,) where each expert's rows begin here
    earlier_slots_here = np.cumsum(local, axis=0) - local  # (k, E) this shard's rows of earlier slots
    shift = asarray(start - earlier_slots_here, backend=device)  # (k, E) local position -> queue position
    expert = expert_index.T.reshape(-1)[plan.order]  # (M,) expert of each sorted row
    slot = plan.order // expert_index.shape[0]  # (M,) its choice slot
    rank_in_block = xp.arange(expert.shape[0]) - asarray(first_row, backend=device)[expert]  # (M,)
    kept = rank_in_block + shift[slot, expert] < capacity  # (M,) global queue position < C
    sent = np.bincount(to_numpy(expert[kept]), minlength=n_experts).astype(np.int64)
    return ShardPlan(plan.order[kept], sent, int(plan.group_sizes.sum() - sent.sum()))
