"""Shared fixtures: the backend every engine test runs under, and a seeded generator.

`backend_name` runs a test once per backend: NumPy, the strict CuPy stand-in (a CPU array that
fails where CuPy would), and CuPy itself only where a GPU is usable (marked `gpu`).
"""
import numpy as np
import pytest

import minimoe as mm

BACKENDS = ["numpy", "strict"]
if mm.backend.cupy_status()[0]:
    BACKENDS.append(pytest.param("cupy", marks=pytest.mark.gpu))


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    """Makes `request.param` the current backend for one test, then goes back to NumPy."""
    mm.use(request.param)
    try:
        yield request.param
    finally:
        mm.use("numpy")


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed: test inputs are the same on every run."""
    return np.random.default_rng(1234)
