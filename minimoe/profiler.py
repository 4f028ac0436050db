"""Where a training step's time goes: every op's forward and backward timed, matmul apart.

    from minimoe.profiler import profile
    with profile() as prof:
        loss = model(ids) ...; loss.backward()
    print(prof.table(steps=1))

While the block runs, `Function.apply` and the backward pass time each op by its class name
(`Attention.forward`, `GroupedFFN.backward`, ...), and `xp.matmul` is timed too, so each op's time
shows how much of it went on matrix products, which run at the BLAS library's speed; the rest (the
element-wise passes, the copies, the reductions) is what an engine can still cut. Matmul time is
summed over the threads that ran products (on the fast path the pool runs several side by side),
so it can exceed an op's wall time. Only what the engine calls as `xp.matmul` is seen as matmul;
outside the block nothing is timed or slowed.
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import numpy as np

from .tensor import set_profiler


class OpProfile:
    """Seconds and calls per (op, phase), and the matmul seconds inside each."""

    def __init__(self):
        self.seconds = defaultdict(float)
        self.matmul_seconds = defaultdict(float)
        self.calls = defaultdict(int)
        self._current: list[tuple[str, str]] = []

    def timed(self, op: str, phase: str, fn):
        """fn, wrapped to add its wall time to (op, phase)."""
        def run(*args, **kwargs):
            key = (op, phase)
            self._current.append(key)
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.seconds[key] += time.perf_counter() - start
                self.calls[key] += 1
                self._current.pop()
        return run

    def add(self, op: str, phase: str, seconds: float) -> None:
        """Time measured outside an op (the optimiser step, the graph walk)."""
        self.seconds[(op, phase)] += seconds
        self.calls[(op, phase)] += 1

    def _matmul(self, real):
        def matmul(*args, **kwargs):
            start = time.perf_counter()
            try:
                return real(*args, **kwargs)
            finally:
                key = self._current[-1] if self._current else ("(outside ops)", "")
                self.matmul_seconds[key] += time.perf_counter() - start
        return matmul

    def rows(self, steps: int = 1) -> list[dict]:
        """One dict per (op, phase), slowest first; times in ms per step."""
        out = [{"op": op, "phase": phase, "calls": self.calls[(op, phase)] / steps,
                "ms": 1e3 * s / steps, "matmul_ms": 1e3 * self.matmul_seconds[(op, phase)] / steps}
               for (op, phase), s in self.seconds.items()]
        return sorted(out, key=lambda r: -r["ms"])

    def table(self, steps: int = 1, total_ms: float | None = None) -> str:
        rows = self.rows(steps)
        timed = sum(r["ms"] for r in rows)
        total_ms = timed if total_ms is None else total_ms
        lines = [f"{'op':<28} {'phase':<9} {'calls':>6} {'wall ms':>8} {'share':>6} {'matmul thread-ms':>17}"]
        for r in rows:
            lines.append(f"{r['op']:<28} {r['phase']:<9} {r['calls']:>6.0f} {r['ms']:>8.2f} {r['ms'] / total_ms:>6.1%} "
                         f"{r['matmul_ms']:>17.2f}")
        matmul = sum(r["matmul_ms"] for r in rows)
        lines.append(f"{'all ops and the optimiser':<45} {timed:>8.2f} {timed / total_ms:>6.1%} {matmul:>17.2f}")
        if total_ms > timed:
            lines.append(f"{'untimed (Python, graph walk)':<45} {total_ms - timed:>8.2f} {(total_ms - timed) / total_ms:>6.1%}")
        lines.append(f"{'step':<45} {total_ms:>8.2f}")
        return "\n".join(lines)


@contextlib.contextmanager
def profile():
    """Times every op run inside the block; yields the `OpProfile` that collects the times."""
    prof = OpProfile()
    real_matmul = np.matmul
    set_profiler(prof)
    np.matmul = prof._matmul(real_matmul)
    try:
        yield prof
    finally:
        set_profiler(None)
        np.matmul = real_matmul
