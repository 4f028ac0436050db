"""`Module`: a container of named parameters and sub-modules, as in PyTorch.

Attributes that are `Parameter`s or `Module`s are registered when assigned, so
`named_parameters()` can walk the tree and name every weight by its path ("blocks.0.moe.router.weight").
"""
from __future__ import annotations

import numpy as np

from .. import backend
from ..rng import host_rng
from ..tensor import Tensor


class Parameter(Tensor):
    """A tensor that a module owns and an optimiser updates (requires_grad is always on)."""

    def __init__(self, data):
        super().__init__(data, requires_grad=True)

    @classmethod
    def from_host(cls, array: np.ndarray, dtype=np.float32) -> Parameter:
        """A parameter on the current backend from a host array (how every initial weight is made)."""
        return cls(backend.asarray(np.asarray(array, dtype=dtype)))

    @classmethod
    def normal(cls, shape, std: float, dtype=np.float32) -> Parameter:
        return cls.from_host(host_rng().normal(0.0, std, size=shape), dtype)

    @classmethod
    def uniform(cls, shape, bound: float, dtype=np.float32) -> Parameter:
        return cls.from_host(host_rng().uniform(-bound, bound, size=shape), dtype)

    @classmethod
    def constant(cls, shape, value: float, dtype=np.float32) -> Parameter:
        return cls.from_host(np.full(shape, value), dtype)


class Module:
    training = True

    def __setattr__(self, name, value):
        if isinstance(value, (Parameter, Module)):
            self.__dict__.setdefault("_children", {})[name] = value
        elif name in self.__dict__.get("_children", {}):
            del self._children[name]
        object.__setattr__(self, name, value)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError

    # ---- the tree ------------------------------------------------------------------------------
    def named_children(self):
        return [(n, c) for n, c in self.__dict__.get("_children", {}).items() if isinstance(c, Module)]

    def modules(self):
        yield self
        for _, child in self.named_children():
            yield from child.modules()

    def named_parameters(self, prefix: str = ""):
        for name, child in self.__dict__.get("_children", {}).items():
            if isinstance(child, Parameter):
                yield prefix + name, child
            else:
                yield from child.named_parameters(prefix + name + ".")

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        return sum(p.size for p in self.parameters())

    def zero_grad(self) -> None:
        for p in self.parameters():
            p.grad = None

    def train(self, mode: bool = True):
        for m in self.modules():
            object.__setattr__(m, "training", mode)
        return self

    def eval(self):
        return self.train(False)

    # ---- devices and checkpoints -----------------------------------------------------------------
    def to(self, name: str):
        """Moves every parameter to backend `name` in place ('numpy', 'cupy' or 'strict')."""
        if not isinstance(name, str):
            raise TypeError(f"to() takes a backend name ({', '.join(backend.KNOWN_BACKENDS)}), got {name!r}")
        backend.module(name)
        for p in self.parameters():
            if p.backend != name:
                p.data, p.grad = backend.asarray(p.data, backend=name), None
        return self

    def state_dict(self) -> dict[str, np.ndarray]:
        """Host copies of every parameter, by name: what a `.npz` checkpoint stores."""
        return {name: p.numpy() for name, p in self.named_parameters()}

    def load_state_dict(self, state: dict) -> None:
        """Copies values in by name. Missing or unexpected names and wrong shapes are errors,
        checked for all names before anything is written, so a bad checkpoint changes nothing."""
        params = dict(self.named_parameters())
        missing, unexpected = sorted(set(params) - set(state)), sorted(set(state) - set(params))
        if missing or unexpected:
            raise ValueError(f"state dict does not match the model: missing {missing}, unexpected {unexpected}")
        for name, p in params.items():
            if tuple(np.shape(state[name])) != p.shape:
                raise ValueError(f"state dict entry {name!r} has shape {tuple(np.shape(state[name]))}, the model expects {p.shape}")
        for name, p in params.items():
            p.data = backend.asarray(np.asarray(state[name]), dtype=p.dtype, backend=p.backend)


class ModuleList(Module):
    """A list of modules whose parameters are named by position ("0.weight", "1.weight", ...)."""

    def __init__(self, modules):
        for i, m in enumerate(modules):
            setattr(self, str(i), m)
        self._length = len(modules)

    def __len__(self):
        return self._length

    def __iter__(self):
        return (getattr(self, str(i)) for i in range(self._length))

    def __getitem__(self, i):
        return getattr(self, str(range(self._length)[i]))
