"""Gradient-norm clipping (Pascanu et al. 2013, Algorithm 1): rescale all gradients together when
their global L2 norm exceeds `max_norm`, so one bad batch cannot throw the weights far."""
import math


def clip_grad_norm(params, max_norm: float | None) -> float:
    """Clips in place and returns the norm before clipping (worth logging: spikes show instability).

    The norm is global: sqrt of the sum of every gradient's squared entries, as if all were one
    vector. Above `max_norm` every gradient is multiplied by max_norm / (norm + 1e-6) (PyTorch's
    `clip_grad_norm_` guard); at or below it nothing changes. `max_norm=None` only measures. A
    non-finite norm is returned with the gradients untouched: the caller stops (the trainer raises
    TrainingDiverged before the update)."""
    if max_norm is not None and not max_norm > 0:
        raise ValueError(f"max_norm must be positive (or None to measure without clipping), got {max_norm!r}")
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = float(sum((g * g).sum() for g in grads)) ** 0.5
    if max_norm is not None and math.isfinite(total) and total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad = p.grad * scale  # a new array: gradients may share memory between parameters
    return total
