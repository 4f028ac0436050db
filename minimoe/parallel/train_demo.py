"""`python -m minimoe.parallel --train`: the tiny MoE Transformer of lesson 04 trained with its MoE
layers expert-parallel (and everything else data-parallel), beside the same training on one process.

Both runs start from one seed and see the same batches of the bundled corpus; each rank takes
its slice of every batch (whole sequences). The parallel run's loss is the mean of the ranks'
losses -- the single-process loss of the whole batch -- so the two columns agree to float32
rounding, which Adam's steps carry forward (the check allows 1e-4, relative).
"""
from __future__ import annotations

import dataclasses

import numpy as np

import minimoe as mm

from .. import functional as F
from ..data import BatchSampler, load_corpus, split
from ..models import ModelConfig, Transformer
from ..optim import AdamW
from .collectives import sum_over_ranks
from .demos import N_EXPERTS, table
from .model import average_gradients, shard_model

MODEL = ModelConfig(d_model=32, n_layers=2, n_heads=2, context=32, n_experts=N_EXPERTS, top_k=2,
                    expert_hidden=64)
BATCH_SIZE = 8  # sequences per step, split over the ranks
LEARNING_RATE = 3e-3
TOLERANCE = 1e-4


def _batches(steps: int, seed: int) -> list:
    train, _ = split(load_corpus())
    sampler = BatchSampler(train.ids, train.domains, BATCH_SIZE, MODEL.context, seed=seed)
    return [sampler.sample()[:2] for _ in range(steps)]


def _train(model, batches, rows: slice, comm=None) -> list:
    """Adam steps on rows `rows` of each batch; the loss of each step (this rank's, before the step)."""
    optimizer = AdamW(model.parameters(), lr=LEARNING_RATE)
    found = []
    for x, y in batches:
        loss = F.cross_entropy(model(x[rows]), mm.tensor(y[rows])) + model.aux_loss()  # targets on the device
        loss.backward()
        if comm is not None:
            average_gradients(model, comm)
        optimizer.step()
        optimizer.zero_grad()
        model.update_router_biases()
        found.append(loss.item())
    return found


def train_demo(comm, steps: int = 5, capacity_factor: float | None = None, seed: int = 0) -> dict:
    n_ranks, rank = comm.Get_size(), comm.Get_rank()
    if BATCH_SIZE % n_ranks:
        raise ValueError(f"--train splits {BATCH_SIZE} sequences over the ranks: run on 1, 2, 4 or 8 ranks")
    config = dataclasses.replace(MODEL, capacity_factor=capacity_factor)
    batches = _batches(steps, seed)
    mm.manual_seed(seed)
    model = shard_model(Transformer(config), comm)
    mine = slice(rank * BATCH_SIZE // n_ranks, (rank + 1) * BATCH_SIZE // n_ranks)
    parallel = [float(sum_over_ranks(comm, np.float64(loss))) / n_ranks for loss in _train(model, batches, mine, comm)]
    reference = None
    if rank == 0:  # the single-process run, on the whole batch
        mm.manual_seed(seed)
        reference = _train(Transformer(config), batches, slice(None))
    reference = comm.bcast(reference, root=0)
    differences = [abs(p - r) / abs(r) for p, r in zip(parallel, reference)]
    return {"ok": max(differences) <= TOLERANCE, "n_ranks": n_ranks, "model": "minimoe.models.Transformer",
            "config": config.to_dict(), "batch_size": BATCH_SIZE, "single_process": reference,
            "expert_parallel": parallel, "relative_differences": differences, "tolerance": TOLERANCE}


def format_training(result: dict) -> str:
    c = result["config"]
    header = (f"Tiny MoE Transformer ({c['n_layers']} blocks, d_model {c['d_model']}, {c['n_experts']} experts, "
              f"top-{c['top_k']}, capacity factor {c['capacity_factor'] or 'dropless'}), batch "
              f"{result['batch_size']} x {c['context']} characters, AdamW lr {LEARNING_RATE}, "
              f"on {result['n_ranks']} rank(s):")
    steps = zip(result["single_process"], result["expert_parallel"], result["relative_differences"])
    rows = [[i + 1, f"{r:.6f}", f"{p:.6f}", f"{d:.1e}"] for i, (r, p, d) in enumerate(steps)]
    verdict = "the losses match" if result["ok"] else "MISMATCH"
    return "\n".join([header, "", table(["step", "single process", "expert-parallel", "relative difference"], rows),
                      f"{verdict} (tolerance {result['tolerance']:.0e})"])
