"""SGD with momentum, Adam and AdamW. Each update runs under the parameter's own array module and
writes in place (`out=`-style updates), so the optimiser allocates nothing per step after the first."""
from __future__ import annotations

import numpy as np

from .. import backend
from ..ops.row_blocks import is_plain, map_tasks
from .flat import FlatBuffers

FLAT_BLOCK = 1 << 18  # elements of a flat block: 1 MiB of float32 per array


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
    L2 penalty added to the gradient; AdamW decouples it (Loshchilov & Hutter 2019).

    On the fast path (NumPy, every parameter with a gradient) the parameters, gradients and
    moments live in flat arrays (flat.py) and one step is the same `_adam_update` over blocks of
    them on the thread pool; otherwise it runs parameter by parameter. Both give the same bits.
    """

    decoupled = False

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = betas
        self.eps, self.weight_decay = eps, weight_decay
        self.m = [None] * len(self.params)
        self.v = [None] * len(self.params)
        self._flat: FlatBuffers | None = None

    def step(self) -> None:
        if not self._flat_ready():
            return super().step()
        self.step_count += 1
        flat = self._flat
        grad, m, v = flat.gather_grads(), flat.moments["m"], flat.moments["v"]
        blocks = [slice(start, start + FLAT_BLOCK) for start in range(0, grad.size, FLAT_BLOCK)]
        map_tasks(lambda b: self._adam_update(flat.data[b], grad[b], m[b], v[b]), blocks, like=grad)

    def update(self, i, p):
        if self.m[i] is None:
            self.m[i], self.v[i] = p.xp.zeros_like(p.data), p.xp.zeros_like(p.data)
        self._adam_update(p.data, p.grad, self.m[i], self.v[i])

    def _adam_update(self, p, g, m, v):
        """One Adam step on arrays p, g, m, v of one shape, in place: the one formula of both paths."""
        xp = backend.xp_of(p)
        if self.weight_decay and not self.decoupled:
            g = g + self.weight_decay * p
        m *= self.beta1
        m += (1 - self.beta1) * g
        v *= self.beta2
        v += (1 - self.beta2) * (g * g)
        t = self.step_count
        step_size = self.lr / (1 - self.beta1**t)
        denom = xp.sqrt(v / (1 - self.beta2**t))
        denom += self.eps
        if self.weight_decay and self.decoupled:
            p *= 1 - self.lr * self.weight_decay
        p -= step_size * (m / denom)

    def _flat_ready(self) -> bool:
        """Whether this step runs on flat buffers; builds them, or takes back whatever replaced a
        parameter's or a moment's array since the last step (loading a checkpoint, say)."""
        if is_plain() or any(p.grad is None for p in self.params) or not FlatBuffers.suits(self.params):
            if self._flat is not None and not FlatBuffers.suits(self.params):
                self._flat = None  # a parameter moved to another backend or dtype: its own arrays from now on
                self.m = [None if a is None else backend.asarray(a, dtype=p.dtype, backend=p.backend) for a, p in zip(self.m, self.params)]
                self.v = [None if a is None else backend.asarray(a, dtype=p.dtype, backend=p.backend) for a, p in zip(self.v, self.params)]
            return False
        if self._flat is None:
            self._flat = FlatBuffers(self.params, ("m", "v"))
        self._flat.adopt()
        self._flat.adopt_moments("m", self.m)
        self._flat.adopt_moments("v", self.v)
        return True

    def _buffers(self):
        return {"m": self.m, "v": self.v}


class AdamW(Adam):
    """Adam with decoupled weight decay: p *= 1 - lr * wd, separately from the gradient step."""

    decoupled = True

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.01):
        super().__init__(params, lr, betas, eps, weight_decay)
