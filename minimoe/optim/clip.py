"""Gradient-norm clipping (Pascanu et al. 2013): rescale all gradients together when their global
L2 norm exceeds `max_norm`, so one bad batch cannot throw the weights far."""


def clip_grad_norm(params, max_norm: float) -> float:
    """Clips in place and returns the norm before clipping (worth logging: spikes show instability)."""
    grads = [p.grad for p in params if p.grad is not None]
    if not grads:
        return 0.0
    total = float(sum((g * g).sum() for g in grads)) ** 0.5
    if total > max_norm:
        scale = max_norm / (total + 1e-6)
        for p in params:
            if p.grad is not None:
                p.grad = p.grad * scale  # a new array: gradients may share memory between parameters
    return total
