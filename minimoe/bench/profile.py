"""`python -m minimoe.bench --profile`: one reference-workload training step, op by op.

Times every op's forward and backward (minimoe.profiler), the matrix products apart from the rest,
and the optimiser step, over a few steps after a warm-up, so the table shows where a step goes and
what is left to cut: matmul time runs at the BLAS library's speed, the rest is the engine's own.
"""
from __future__ import annotations

import time

import numpy as np

from .. import functional as F
from ..models import Transformer
from ..optim import AdamW
from ..profiler import profile
from . import workloads as W


def profile_reference_step(steps: int = 5, warmup: int = 2, dense: bool = False) -> str:
    """The op table of `steps` reference-workload steps (MoE, or its dense twin)."""
    config = W.reference_model_config(dense=dense)
    model = Transformer(config)
    opt = AdamW(model.parameters(), lr=3e-4)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (16, config.context))
    targets = rng.integers(0, config.vocab_size, (16, config.context))

    def step(prof=None):
        opt.zero_grad()
        (F.cross_entropy(model(ids), targets) + model.aux_loss()).backward()
        start = time.perf_counter()
        opt.step()
        if prof is not None:
            prof.add(type(opt).__name__, "step", time.perf_counter() - start)

    for _ in range(warmup):
        step()
    with profile() as prof:
        start = time.perf_counter()
        for _ in range(steps):
            step(prof)
        total_ms = 1e3 * (time.perf_counter() - start) / steps
    title = f"reference workload, {'dense twin' if dense else 'MoE'} train step: ms per step, mean of {steps}"
    return title + "\n" + prof.table(steps, total_ms)
