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


@pytest.fixture(params=["plain", "blocked"])
def engine_path(request, monkeypatch):
    """Runs a test on the plain path, then on the fast path with blocks so small that every op
    with a fast kernel really splits its work (tests use small arrays)."""
    from minimoe.ops import arithmetic, row_blocks
    from minimoe.optim import optimizers

    if request.param == "blocked":
        monkeypatch.setattr(row_blocks, "BLOCK_BYTES", 256)
        monkeypatch.setattr(arithmetic, "PRODUCT_BLOCK_ROWS", 2)
        monkeypatch.setattr(optimizers, "FLAT_BLOCK", 16)
    row_blocks.use_plain(request.param == "plain")
    try:
        yield request.param
    finally:
        row_blocks.use_plain(False)


@pytest.fixture
def rng():
    """A NumPy generator with a fixed seed: test inputs are the same on every run."""
    return np.random.default_rng(1234)
