"""The expert-parallel MoE layer: E experts spread over R processes, tokens sent to them and back
with an all-to-all (GShard, Lepikhin et al. 2020, §3.2; DeepSpeed-MoE, Rajbhandari et al. 2022).

Every rank holds
* its own shard of the tokens (rank r the r-th slice of the batch, as in data parallelism);
* a replica of the router and of the shared experts;
* E/R of the routed experts: rank r owns experts r*E/R ... (r+1)*E/R - 1.

One forward, on every rank at once:
1. route the local tokens (the router is replicated, so routing needs no communication);
2. sort the local token copies by expert, hence by owning rank (plan.py: the single-process
   dispatch, with the capacity of the global batch);
3. Alltoall: tell every rank how many rows of each of its experts are coming;
4. Alltoallv: send the rows; each rank runs its experts on what arrived (one grouped matmul);
5. Alltoallv back; weight by the gates and sum each token's k copies, as on one process.
The backward runs the two Alltoallv's in reverse. The balancing losses and the routing report
use counts and probability sums of the global batch (Allreduce), so the R ranks together compute
what `MoE` computes on the whole batch.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from .. import functional as F
from ..moe import MoE, MoEConfig, losses
from ..moe.dispatch import expert_capacity
from ..moe.routers import NoisyTopKRouter
from ..tensor import Tensor
from .collectives import (
    all_reduce_sum,
    all_to_all,
    broadcast_parameters,
    exchange_counts,
    like,
    sum_over_lower_ranks,
    sum_over_ranks,
    to_host,
)
from .plan import experts_per_rank, plan_shard_dispatch, queue_start, slot_counts

# Token-choice routers decide for each token on its own, so each rank can route its own tokens.
# Expert choice (top tokens of each expert) and Soft MoE (softmax over all tokens) would need a
# global top-k or a global softmax over the batch.
PARALLEL_ROUTERS = ("dense", "topk", "topk_then_softmax", "noisy_topk", "switch", "gshard", "hash", "deepseek")


@dataclass
class Traffic:
    """Rows one rank exchanged in the dispatch of its last forward. The combine sends the same
    rows back, and the backward pass repeats both exchanges (see `bytes_per_step`)."""

    rank: int
    sent: np.ndarray  # (R,) rows this rank sent to each rank (its own entry never leaves it)
    received: np.ndarray  # (R,) rows it received from each rank
    row_bytes: int  # d_model * bytes per value

    @property
    def rows_out(self) -> int:
        return int(self.sent.sum() - self.sent[self.rank])

    @property
    def rows_in(self) -> int:
        return int(self.received.sum() - self.received[self.rank])

    @property
    def bytes_sent(self) -> int:
        return self.rows_out * self.row_bytes

    @property
    def bytes_received(self) -> int:
        return self.rows_in * self.row_bytes

    @property
    def bytes_per_step(self) -> int:
        """What this rank sends in a forward and backward: its dispatch rows out and the rows it
        received back out in the combine, each once more for the gradients."""
        return 2 * (self.bytes_sent + self.bytes_received)


class ExpertParallelMoE(MoE):
    """`MoE` with its experts spread over the ranks of `comm` (an mpi4py communicator).

        layer = ExpertParallelMoE(MoEConfig(...), comm)  # or ExpertParallelMoE(existing_moe, comm)
        y = layer(x_local); (task_loss + layer.aux_loss).backward()
        average_gradients(layer, comm)  # then the optimiser step, on every rank

    From a config, every rank draws the whole layer from the current seed and keeps its slice,
    so the same seed gives the same model on 1 or R processes (a large model would initialise each
    shard in place instead). From an existing `MoE`, it takes over that layer's router and shared
    experts (the same objects) and copies its slice of the experts. Either way the replicated
    weights are then set to rank 0's, so they agree even if the seeds did not.
    """

    def __init__(self, source: MoEConfig | MoE, comm):
        full = MoE(source) if isinstance(source, MoEConfig) else source
        if not isinstance(full, MoE) or isinstance(full, ExpertParallelMoE):
            raise TypeError(f"ExpertParallelMoE needs a MoEConfig or a single-process MoE, got {type(source).__name__}")
        cfg = full.cfg
        if cfg.router not in PARALLEL_ROUTERS:
            raise ValueError(f"router {cfg.router!r} decides over the whole batch at once, so it cannot route "
                             f"each rank's tokens on their own; expert parallelism here supports "
                             f"{', '.join(PARALLEL_ROUTERS)}")
        self.comm, self.rank, self.n_ranks = comm, comm.Get_rank(), comm.Get_size()
        self.experts_per_rank = experts_per_rank(cfg.n_experts, self.n_ranks)
        self.first_expert = self.rank * self.experts_per_rank
        # What MoE.__init__ sets, taken from `full` instead of drawn again:
        self.cfg, self.router = cfg, full.router
        self.experts = full.experts.select(self.first_expert, self.experts_per_rank)
        if cfg.n_shared_experts:
            self.shared = full.shared
            if cfg.shared_expert_gate:
                self.shared_gate = full.shared_gate
        self.aux_loss, self.report, self._last_counts = None, None, None
        self.traffic: Traffic | None = None
        broadcast_parameters(comm, replicated_parameters(self))

    # ---- the token-choice path, with the experts elsewhere ------------------------------------------
    def _token_choice(self, flat, routing, seq_shape):
        y = super()._token_choice(flat, routing, seq_shape)
        self._report_global_batch(flat.shape[0])
        return y

    def _plan(self, routing, n_tokens):
        cfg, comm = self.cfg, self.comm
        k = routing.expert_index.shape[1]
        self._n_global = int(sum_over_ranks(comm, np.int64(n_tokens)))
        capacity, start = None, None
        if cfg.capacity_factor:  # C of the global batch, and where this rank's copies queue for it
            capacity = expert_capacity(self._n_global, cfg.n_experts, k, cfg.capacity_factor)
            counts = slot_counts(routing.expert_index, cfg.n_experts, routing.keep)  # (k, E) this rank's
            start = queue_start(sum_over_ranks(comm, counts), sum_over_lower_ranks(comm, counts))
        return plan_shard_dispatch(routing.expert_index, cfg.n_experts, capacity, routing.keep, start)

    def _run_experts(self, x_sorted, plan):
        return self._run_on_owners(x_sorted, plan.sent_per_expert)  # (M, d), rows sorted by expert, hence by owner

    def _batch_counts(self, plan, n_tokens):
        counts = sum_over_ranks(self.comm, plan.sent_per_expert)  # (E,) global: report, bias update
        return counts, int(sum_over_ranks(self.comm, np.int64(plan.n_dropped))), self._n_global

    def _run_on_owners(self, x_sorted, sent_per_expert):
        """Steps 3-5: rows to the ranks owning their experts, through those experts, and back."""
        comm, n_local = self.comm, self.experts_per_rank
        to_owner = sent_per_expert.reshape(self.n_ranks, n_local)  # (R, E/R) rows for each rank's experts
        from_source = exchange_counts(comm, to_owner)  # (R, E/R) rows each rank sends my experts
        send, recv = to_owner.sum(axis=1), from_source.sum(axis=1)  # (R,) each
        arrived = all_to_all(x_sorted, comm, send, recv)  # (rows, d): by source rank, then by expert
        expert_of_row = np.repeat(np.tile(np.arange(n_local), self.n_ranks), from_source.reshape(-1))
        by_expert = like(np.argsort(expert_of_row, kind="stable"), x_sorted.data)  # (rows,)
        grouped = F.permute_rows(arrived, by_expert)  # (rows, d) my expert 0's rows first, ...
        mask = self._dropout_mask(grouped.shape[0], self.cfg.expert_hidden, x_sorted)
        out = self.experts(grouped, from_source.sum(axis=0), mask)
        back = F.unpermute_rows(out, by_expert, grouped.shape[0])  # (rows, d) in arrival order
        self.traffic = Traffic(self.rank, send, recv, self.cfg.d_model * x_sorted.dtype.itemsize)
        return all_to_all(back, comm, recv, send)  # (M, d) in x_sorted's order

    # ---- losses and the report over the global batch ------------------------------------------------
    # A loss that is a mean over tokens or sequences (the z-loss, DeepSeek's sequence-wise loss) is
    # the single-process loss of each rank's shard, averaged over ranks with weights. The Switch
    # and importance/load losses are nonlinear in batch-wide sums, so they are rebuilt from sums
    # over all ranks (Allreduce), whose backward brings every rank its share of the gradient.
    def _losses(self, routing, seq_shape) -> dict:
        cfg = self.cfg
        if cfg.balance_loss not in ("switch", "importance_load"):
            found = super()._losses(routing, seq_shape)  # the sequence-wise loss (or none), and the z-loss
            if "balance" in found:
                coef, value = found["balance"]
                found["balance"] = (coef, self._mean_over_ranks(value, seq_shape[0]))
            return found
        found = {}
        if cfg.balance_loss == "switch":
            found["balance"] = (cfg.balance_coef, self._switch_loss(routing))
        else:
            found["importance"] = (cfg.balance_coef, losses.cv_squared(self._global_importance(routing)))
            if isinstance(self.router, NoisyTopKRouter) and self.router.smooth_load is not None:
                load = all_reduce_sum(self.router.smooth_load.sum(axis=0), self.comm)  # (E,) Load of eq. 10
                found["load"] = (cfg.balance_coef, losses.cv_squared(load))
        found.update(self._losses_common(routing.logits))
        return found

    def _losses_common(self, logits) -> dict:
        found = super()._losses_common(logits)  # the z-loss: a mean over this rank's tokens
        if "z" in found:
            coef, value = found["z"]
            found["z"] = (coef, self._mean_over_ranks(value, logits.shape[0]))
        return found

    def _mean_over_ranks(self, local_mean: Tensor, count: int) -> Tensor:
        """The mean over all ranks' items from each rank's mean over its `count` items."""
        total = int(sum_over_ranks(self.comm, np.int64(count)))
        return all_reduce_sum(local_mean * float(count), self.comm) * (1.0 / total)

    def _switch_loss(self, routing) -> Tensor:
        """E * sum_i f_i P_i (losses.switch_balance_loss) with f and P of the global batch."""
        e, n, k = self.cfg.n_experts, self._n_global, routing.expert_index.shape[1]
        chosen = to_host(routing.gates.xp.bincount(routing.expert_index.reshape(-1), minlength=e))
        f = sum_over_ranks(self.comm, chosen.astype(np.int64)) / (n * k)  # (E,) host
        p_mean = all_reduce_sum(routing.probs.sum(axis=0), self.comm) * (1.0 / n)  # (E,)
        return (p_mean * like(f.astype(p_mean.dtype), p_mean.data)).sum() * e

    def _global_importance(self, routing) -> Tensor:
        """(E,) Importance of Shazeer et al. (eq. 6), summed over every rank's tokens."""
        return all_reduce_sum(losses.importance(routing.gates, routing.expert_index, self.cfg.n_experts), self.comm)

    def _report_global_batch(self, n_local: int) -> None:
        """MoE._record measured the router's entropy, log-sum-exp and largest logit on this rank's
        tokens; make them the global batch's, like the load and the drops."""
        def global_mean(value):
            return float(sum_over_ranks(self.comm, np.float64(value * n_local))) / self._n_global

        max_logit = max(self.comm.allgather(self.report.max_logit))
        self.report = dataclasses.replace(self.report, router_entropy=global_mean(self.report.router_entropy),
                                          mean_logsumexp=global_mean(self.report.mean_logsumexp), max_logit=max_logit)


def replicated_parameters(model) -> list:
    """Every parameter of `model` that each rank holds a full copy of: all but the experts of its
    expert-parallel layers (routers, shared experts, and in a whole model everything else)."""
    experts = {id(p) for m in model.modules() if isinstance(m, ExpertParallelMoE) for p in m.experts.parameters()}
    return [p for p in model.parameters() if id(p) not in experts]

