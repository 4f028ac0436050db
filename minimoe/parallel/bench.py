"""`python -m minimoe.parallel --bench`: the time of one forward + backward of a larger layer.

Run it with 1, 2 and 4 ranks (`mpiexec -n R`) and compare. The batch is the same in every run
(split over the ranks), so with R cores each rank does 1/R of the expert work plus the
all-to-all; on fewer cores than ranks there is no speed-up to expect, only the cost of the traffic.
"""
from __future__ import annotations

import time

import numpy as np

import minimoe as mm

from ..moe import MoE, MoEConfig
from .demos import N_EXPERTS, table
from .layer import ExpertParallelMoE
from .model import average_gradients

CONFIG = MoEConfig(d_model=128, n_experts=N_EXPERTS, top_k=2, expert_hidden=512)
TOKENS = 4096  # the global batch
REPEATS = 5


def _time(step, comm) -> float:
    """Median seconds of `step` over REPEATS runs after one warm-up; the slowest rank's."""
    step()
    times = []
    for _ in range(REPEATS):
        comm.Barrier()
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return max(comm.allgather(float(np.median(times))))


def _forward_backward(layer, x, comm=None):
    def step():
        inputs = mm.tensor(x, requires_grad=True)
        (layer(inputs).sum() * (1.0 / x.shape[0]) + layer.aux_loss).backward()
        if comm is not None:
            average_gradients(layer, comm)
        layer.zero_grad()
    return step


def bench(comm, seed: int = 0) -> dict:
    n_ranks, rank = comm.Get_size(), comm.Get_rank()
    x = np.random.default_rng(seed).standard_normal((TOKENS, CONFIG.d_model)).astype(np.float32)
    mine = x[rank * TOKENS // n_ranks:(rank + 1) * TOKENS // n_ranks]
    mm.manual_seed(seed)
    layer = ExpertParallelMoE(CONFIG, comm)
    seconds = _time(_forward_backward(layer, mine, comm), comm)
    single = _time(_forward_backward(MoE(CONFIG), x), comm) if n_ranks == 1 else None
    return {"n_ranks": n_ranks, "tokens": TOKENS, "config": CONFIG.to_dict(), "seconds": seconds,
            "single_process_seconds": single, "bytes_per_rank": comm.allgather(layer.traffic.bytes_per_step)}


def format_bench(result: dict) -> str:
    c, ms = result["config"], 1000 * result["seconds"]
    rows = [["expert-parallel", result["n_ranks"], result["tokens"] // result["n_ranks"], f"{ms:.1f}",
             f"{max(result['bytes_per_rank']) / 2**20:.2f}"]]
    if result["single_process_seconds"] is not None:
        rows.append(["MoE (one process)", 1, result["tokens"], f"{1000 * result['single_process_seconds']:.1f}", "0"])
    header = (f"One forward + backward: d_model {c['d_model']}, {c['n_experts']} experts of width "
              f"{c['expert_hidden']}, top-{c['top_k']} dropless, {result['tokens']} tokens in all "
              f"(median of {REPEATS}, slowest rank):")
    columns = ["layer", "ranks", "tokens per rank", "ms", "MB sent by the busiest rank"]
    return "\n".join([header, "", table(columns, rows)])
