"""Gradient checking: analytic gradients against central finite differences, in float64.

The test every op in minimoe passes, and the tool the graders use on learners' backward passes.
For a scalar probe L = sum(w * f(inputs)) with fixed random weights w (so every output entry
matters), each input entry x is nudged by +-eps and
dL/dx ~ sum(w * (f(x+eps) - f(x-eps))) / (2 eps), whose error is O(eps^2). The relative error
|a - n| / max(|a|, |n|, floor) is reported with where it is worst.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .backend import to_numpy
from .tensor import Tensor, no_grad, tensor


@dataclass
class GradcheckResult:
    ok: bool
    max_rel_error: float
    worst_input: int  # which input (position in `inputs`)
    worst_index: tuple  # where in that input
    analytic: float
    numeric: float

    def __bool__(self) -> bool:
        return self.ok

    def __str__(self) -> str:
        verdict = "passed" if self.ok else "FAILED"
        return (f"gradcheck {verdict}: worst relative error {self.max_rel_error:.2e} at input "
                f"{self.worst_input}, index {self.worst_index} (analytic {self.analytic:.6g}, "
                f"numeric {self.numeric:.6g})")


def gradcheck(fn, inputs, eps: float = 1e-6, tol: float = 1e-6, floor: float = 1e-2, seed: int = 0) -> GradcheckResult:
    """Checks d fn(*inputs) / d inputs. `inputs` are arrays or tensors (made float64 here);
    `fn` maps tensors to a tensor. Only float inputs are differentiated."""
    xs = [tensor(np.asarray(x.numpy() if isinstance(x, Tensor) else x), dtype=np.float64, requires_grad=True)
          if _is_float(x) else x for x in inputs]
    out = fn(*xs)
    weights = tensor(np.random.default_rng(seed).standard_normal(out.shape), dtype=np.float64, backend_name=out.backend)
    (out * weights).sum().backward()

    def probe():
        with no_grad():
            return fn(*xs).data.copy()  # a copy: the output may be a view of the nudged input

    worst = GradcheckResult(True, 0.0, -1, (), 0.0, 0.0)
    for i, x in enumerate(xs):
        if not isinstance(x, Tensor) or not x.requires_grad:
            continue
        analytic = np.zeros(x.shape) if x.grad is None else to_numpy(x.grad)
        values = x.data
        for index in np.ndindex(*x.shape):
            original = float(values[index])
            values[index] = original + eps
            up = probe()
            values[index] = original - eps
            down = probe()
            values[index] = original
            # Outputs are subtracted before weighting, so large constant entries (a -1e9 mask
            # fill) cancel exactly instead of swamping the difference in float64 round-off.
            numeric = float((weights.data * (up - down)).sum()) / (2 * eps)
            a = float(analytic[index])
            err = abs(a - numeric) / max(abs(a), abs(numeric), floor)
            if err >= worst.max_rel_error:
                worst = GradcheckResult(True, err, i, index, a, numeric)
    worst.ok = worst.max_rel_error < tol
    return worst


def assert_gradcheck(fn, inputs, **options) -> GradcheckResult:
    result = gradcheck(fn, inputs, **options)
    assert result.ok, str(result)
    return result


def _is_float(x) -> bool:
    dtype = x.dtype if hasattr(x, "dtype") else np.asarray(x).dtype
    return np.dtype(dtype).kind == "f"

