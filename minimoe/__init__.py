"""minimoe: Mixture-of-Experts from scratch on a small NumPy/CuPy autograd engine.

    import minimoe as mm
    x = mm.tensor([[1.0, 2.0]], requires_grad=True)
    loss = mm.functional.softmax(x).max()
    loss.backward(); x.grad
"""
from . import backend, functional, nn, optim
from .allocator import keep_freed_memory
from .backend import use
from .gradcheck import GradcheckResult, assert_gradcheck, gradcheck
from .rng import manual_seed, randn
from .tensor import Function, Tensor, is_grad_enabled, no_grad, tensor

__version__ = "0.1.0"

keep_freed_memory()  # a step's arrays are reused, not faulted in anew (allocator.py)

__all__ = [
    "Function", "GradcheckResult", "Tensor", "assert_gradcheck", "backend", "functional",
    "gradcheck", "is_grad_enabled", "manual_seed", "nn", "no_grad", "optim", "randn", "tensor", "use",
]
