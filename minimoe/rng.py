"""Random numbers, seeded once with `manual_seed`.

Two kinds of generator, following CuPy's advice for reproducible code:
* `host_rng()` -- a NumPy generator for initial weights and data sampling. Drawn on the host and
  copied to the device, so a seeded run starts identically on NumPy and on CuPy.
* `device_rng(xp)` -- one generator per backend for randomness drawn *during* training (dropout
  masks, router noise), so no host-to-device copy happens in the inner loop.
"""
import numpy as np

from . import backend
from .tensor import Tensor

_seed = 0
_host = np.random.default_rng(_seed)
_device: dict[str, object] = {}


def manual_seed(seed: int) -> None:
    """Resets every generator, so the same seed gives the same run."""
    global _seed, _host
    _seed = int(seed)
    _host = np.random.default_rng(_seed)
    _device.clear()


def host_rng() -> np.random.Generator:
    return _host


def device_rng(xp):
    """The generator of backend `xp` (created from the seed on first use). It offers `random`,
    `standard_normal`, `uniform` and `integers`: the methods NumPy and CuPy generators share."""
    name = backend.name_of(xp.zeros(0))
    if name not in _device:
        _device[name] = xp.random.default_rng(_seed + 1)
    return _device[name]


def randn(*shape, dtype=np.float32, backend_name=None, requires_grad=False) -> Tensor:
    """A tensor of standard-normal samples drawn on its own backend."""
    xp = backend.module(backend_name)
    return Tensor(device_rng(xp).standard_normal(shape, dtype=dtype), requires_grad=requires_grad)


def randn_like(t: Tensor) -> Tensor:
    return Tensor(device_rng(t.xp).standard_normal(t.shape, dtype=t.dtype))
