"""Which array library the engine computes with: NumPy (CPU), CuPy (GPU) or the strict stand-in.

Every op in minimoe takes its array module from its *inputs* (`xp_of(array)`, the idea of
`cupy.get_array_module`), never from a global, so NumPy and CuPy arrays cannot mix silently.
The one global here is the backend that *new* arrays are made on (`use("cupy")`).

This is the only file of the project that imports CuPy.

* "numpy"  -- the CPU; always there.
* "cupy"   -- a CUDA GPU; needs `pip install cupy-cuda12x` (or the build for your CUDA) and a GPU.
* "strict" -- a CPU stand-in that fails where CuPy would fail (implicit copies to the host,
              NumPy functions applied to device arrays); see `minimoe.strict_device`.
"""
from __future__ import annotations

import numpy as np

from . import strict_device

KNOWN_BACKENDS = ("numpy", "cupy", "strict")
CUPY_INSTALL_HINT = (
    "install the CuPy build for your CUDA version, e.g. `pip install cupy-cuda12x` "
    "(CUDA 12) or `pip install cupy-cuda11x` (CUDA 11), on a machine with an NVIDIA GPU and driver"
)

_current = "numpy"


def _import_cupy():
    try:
        import cupy
    except ImportError as err:
        raise RuntimeError(f"the 'cupy' backend needs CuPy, which is not installed: {CUPY_INSTALL_HINT}") from err
    return cupy


def cupy_status() -> tuple[bool, str]:
    """(usable, reason): whether CuPy imports *and* sees a GPU. Never raises.

    `cupy.cuda.is_available()` returns False without a driver on some versions and raises on
    others, so both are caught here.
    """
    try:
        import cupy
    except ImportError:
        return False, f"CuPy is not installed: {CUPY_INSTALL_HINT}"
    try:
        count = cupy.cuda.runtime.getDeviceCount() if cupy.cuda.is_available() else 0
    except Exception as err:  # CUDARuntimeError and friends: no driver, no device
        return False, f"CuPy {cupy.__version__} is installed but no GPU is usable ({err})"
    if count == 0:
        return False, f"CuPy {cupy.__version__} is installed but found no GPU (a CUDA driver and device are needed)"
    return True, f"CuPy {cupy.__version__} with {count} GPU(s)"


def _check_name(name: str) -> None:
    if not isinstance(name, str) or name not in KNOWN_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; the known backends are {', '.join(KNOWN_BACKENDS)}")


def module(name: str | None = None):
    """The array module (`xp`) of backend `name` (default: the current one)."""
    name = _current if name is None else name
    _check_name(name)
    if name == "numpy":
        return np
    if name == "strict":
        return strict_device.xp
    ok, reason = cupy_status()
    if not ok:
        raise RuntimeError(f"the 'cupy' backend is not usable here: {reason}")
    return _import_cupy()


def use(name: str) -> None:
    """Make `name` the backend new tensors and modules are created on."""
    global _current
    _check_name(name)  # before module(), which reads None as "the current one"
    module(name)  # for CuPy, checks that a GPU is there
    _current = name


def current() -> str:
    """The name of the backend new arrays are created on."""
    return _current


def name_of(array) -> str:
    """The backend an array lives on: 'numpy', 'cupy' or 'strict'."""
    if isinstance(array, (np.ndarray, np.generic)):
        return "numpy"
    kind = type(array)
    if kind.__module__.startswith("cupy"):
        return "cupy"
    if isinstance(array, strict_device.StrictDeviceArray):
        return "strict"
    raise TypeError(f"expected a NumPy, CuPy or strict-device array, got {kind.__name__}")


def xp_of(array):
    """The array module that computes on `array` (NumPy for NumPy arrays, CuPy for CuPy ones...)."""
    return module(name_of(array))


def to_numpy(array) -> np.ndarray:
    """An explicit copy to the host: the only way arrays leave a device.

    A copy on NumPy too, so what the caller keeps (a checkpoint, a plot) behaves the same on every
    backend: it does not change when the optimiser later updates the tensor in place."""
    if isinstance(array, (np.ndarray, np.generic)):
        return np.array(array)
    return array.get()  # CuPy and the strict stand-in both spell the device-to-host copy `.get()`


def asarray(data, dtype=None, backend: str | None = None):
    """`data` (a list, scalar or array of any backend) as a new array on `backend` (default: current).

    Always a copy, as CuPy's `asarray` of host data is: a tensor never shares memory with the
    caller's array (a loaded checkpoint, another model's weights)."""
    xp = module(backend)
    if not isinstance(data, (list, tuple, int, float, bool, np.ndarray, np.generic)):
        data = to_numpy(data)  # from another device: through the host, explicitly
    return np.array(data, dtype=dtype) if xp is np else xp.asarray(data, dtype=dtype)


def synchronize(name: str) -> None:
    """Waits until the device has finished the work queued on it (CuPy runs kernels asynchronously,
    so a timer read without this measures only the queueing); a no-op on the CPU backends."""
    _check_name(name)
    if name == "cupy":
        module("cupy").cuda.Device().synchronize()
