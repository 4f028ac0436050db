"""SGD with momentum, Adam and AdamW. Each update runs under the parameter's own array module and
writes in place (`out=`-style updates), so the optimiser allocates nothing per step after the first."""
from __future__ import annotations

import numpy as np

from .. import backend


class Optimizer:
    def __init__(self, params, lr: float):
        self.params = [p for p in params]
        if not self.params:
            raise ValueError("the optimiser got no parameters (did the model register any?)")
        if lr <= 0:
            raise ValueError(f"learning rate must be positive, got {lr}")
        self.lr = lr
        self.step_count = 0

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        self.step_count += 1
        for i, p in enumerate(self.params):
            if p.grad is not None:
                self.update(i, p)

    def update(self, i, p) -> None:
        raise NotImplementedError

    # Checkpoints: the optimiser's buffers as named host arrays (no pickle).
    def state_dict(self) -> dict[str, np.ndarray]:
        state = {"step_count": np.asarray(self.step_count)}
        for name, buffers in self._buffers().items():
            for i, b in enumerate(buffers):
                if b is not None:
                    state[f"{name}.{i}"] = backend.to_numpy(b)
        return state

    def load_state_dict(self, state: dict) -> None:
        self.step_count = int(state["step_count"])
        for name, buffers in self._buffers().items():
            for i, p in enumerate(self.params):
                key = f"{name}.{i}"
                if key in state:
                    if tuple(state[key].shape) != p.shape:
                        raise ValueError(f"optimiser state {key} has shape {state[key].shape}, parameter {i} has {p.shape}")
                    buffers[i] = backend.asarray(state[key], dtype=p.dtype, backend=p.backend)

    def _buffers(self) -> dict[str, list]:
        return {}


class SGD(Optimizer):
    """p -= lr * v, v = momentum * v + grad (PyTorch's form; plain SGD when momentum = 0)."""

    def __init__(self, params, lr: float, momentum: float = 0.0):
        super().__init__(params, lr)
        self.momentum = momentum
        self.velocity = [None] * len(self.params)

    def update(self, i, p):
        g = p.grad
        if self.momentum:
            v = self.velocity[i]
            self.velocity[i] = g.copy() if v is None else v * self.momentum + g
            g = self.velocity[i]
        p.data -= self.lr * g

    def _buffers(self):
        return {"velocity": self.velocity}


class Adam(Optimizer):
    """Adam (Kingma & Ba 2015, Algorithm 1) with bias correction. `weight_decay` here is the
    L2 penalty added to the gradient; AdamW decouples it (Loshchilov & Hutter 2019)."""

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = [None] * len(self.params)
        self.v = [None] * len(self.params)

    def update(self, i, p):
        xp, g = p.xp, p.grad
        if self.weight_decay and not self.decoupled:
            g = g + self.weight_decay * p.data
        if self.m[i] is None:
            self.m[i], self.v[i] = xp.zeros_like(p.data), xp.zeros_like(p.data)
        m, v = self.m[i], self.v[i]
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * (g * g)
        t = self.step_count
        step_size = self.lr / (1 - self.beta1**t)
        denom = xp.sqrt(v / (1 - self.beta2**t))
        denom += self.eps
        if self.weight_decay and self.decoupled:
            p.data *= 1 - self.lr * self.weight_decay
        p.data -= step_size * (m / denom)

    def _buffers(self):
        return {"m": self.m, "v": self.v}


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * wd, separately from the gradient step."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps, weight_decay)
