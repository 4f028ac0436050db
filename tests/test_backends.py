"""The backend switch: NumPy, the strict CuPy stand-in, and CuPy itself where a GPU is usable.

The strict stand-in is how the GPU path is tested on a machine without one, so the first tests
check that it really is strict; then the same training gives the same numbers on every backend.
"""
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

import minimoe as mm
import minimoe.functional as F
from minimoe import backend, env, nn, optim

CUPY_USABLE, CUPY_REASON = backend.cupy_status()
gpu = pytest.mark.skipif(not CUPY_USABLE, reason=f"no usable GPU: {CUPY_REASON}")
PACKAGE = pathlib.Path(mm.__file__).parent


def test_the_strict_stand_in_refuses_implicit_host_copies():
    x = mm.tensor([1.0, 2.0], backend_name="strict")
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x.data)
    with pytest.raises(TypeError, match=r"numpy\.exp\(\) was given a strict device array"):
        np.exp(x.data)
    with pytest.raises(TypeError, match="Unsupported type"):
        x.data + np.ones(2)  # a host array inside a device op
    np.testing.assert_array_equal(x.numpy(), [1.0, 2.0])  # the explicit way out works


def test_use_picks_the_backend_of_new_tensors_and_parameters(backend_name):
    assert backend.current() == backend_name
    assert mm.tensor([1.0]).backend == backend_name
    assert nn.Linear(2, 3).weight.backend == backend_name
    assert mm.randn(2, 2).backend == backend_name
    assert backend.name_of(backend.module().zeros(1)) == backend_name


def test_name_of_and_xp_of_follow_the_array():
    strict_array = backend.asarray([1.0], backend="strict")
    assert backend.name_of(np.zeros(1)) == "numpy" and backend.xp_of(np.zeros(1)) is np
    assert backend.name_of(strict_array) == "strict"
    assert backend.xp_of(strict_array) is backend.module("strict")
    with pytest.raises(TypeError, match="got list"):
        backend.name_of([1.0])


def test_moving_between_backends_keeps_values_and_dtype():
    x = mm.tensor(np.arange(6.0).reshape(2, 3), dtype=np.float64)
    there = x.to("strict")
    back = there.to("numpy")
    assert there.backend == "strict" and back.backend == "numpy" and back.dtype == np.float64
    np.testing.assert_array_equal(back.numpy(), x.numpy())


def test_randn_is_seeded_and_drawn_on_its_backend(backend_name):
    mm.manual_seed(11)
    first = mm.randn(3, 4)
    mm.manual_seed(11)
    second = mm.randn(3, 4)
    assert first.backend == backend_name and first.dtype == np.float32
    np.testing.assert_array_equal(first.numpy(), second.numpy())
    assert mm.randn(2, dtype=np.float64).dtype == np.float64
    assert abs(float(mm.randn(4000).numpy().std()) - 1) < 0.05


def training_losses(name, steps=3):
    """A few AdamW steps of a small MLP on backend `name`, from the same host-drawn start."""
    mm.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((64, 4)), rng.integers(0, 3, size=64)
    model = nn.MLP(4, 16, 3).to(name)  # weights drawn on the host: identical on every backend
    opt = optim.AdamW(model.parameters(), lr=0.01)
    inputs, targets = mm.tensor(x, backend_name=name), mm.tensor(y, backend_name=name)
    losses = []
    for _ in range(steps):
        loss = F.cross_entropy(F.layer_norm(model(inputs), mm.tensor(np.ones(3), backend_name=name),
                                            mm.tensor(np.zeros(3), backend_name=name)), targets)
        opt.zero_grad()
        loss.backward()
        optim.clip_grad_norm(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
    return losses, model.state_dict()


def test_the_same_training_gives_the_same_numbers_on_numpy_and_strict():
    numpy_losses, numpy_state = training_losses("numpy")
    strict_losses, strict_state = training_losses("strict")
    np.testing.assert_allclose(strict_losses, numpy_losses, rtol=1e-6)
    for name in numpy_state:
        np.testing.assert_allclose(strict_state[name], numpy_state[name], rtol=1e-5, atol=1e-7,
                                   err_msg=name)


def test_only_backend_py_imports_cupy():
    """The device switch lives in one place: every other module takes `xp` from its arrays."""
    imports_cupy = re.compile(r"^\s*(import cupy|from cupy)", re.M)
    importing = [path.relative_to(PACKAGE).as_posix() for path in PACKAGE.rglob("*.py")
                 if imports_cupy.search(path.read_text(encoding="utf-8"))]
    assert importing == ["backend.py"]


def test_env_reports_versions_and_backends():
    result = subprocess.run([sys.executable, "-m", "minimoe.env"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert re.search(r"^numpy\s+\d+\.\d+", out, re.M)
    assert re.search(r"^minimoe\s+" + re.escape(mm.__version__), out, re.M)
    assert re.search(r"^\s+numpy\s+usable", out, re.M)
    assert re.search(r"^\s+strict\s+usable", out, re.M)
    assert re.search(r"^\s+cupy\s+" + ("usable" if CUPY_USABLE else "not usable"), out, re.M)
    assert "torch" in out and "benchmark peer" in out
    if not CUPY_USABLE:
        assert "pip install cupy-cuda12x" in out


def test_env_answers_help(capsys):
    with pytest.raises(SystemExit) as done:
        env.main(["--help"])
    assert done.value.code == 0 and "usage: python -m minimoe.env" in capsys.readouterr().out


# ---- a real GPU, where there is one -----------------------------------------------------------

@pytest.mark.gpu
@gpu
def test_cupy_training_matches_numpy():
    numpy_losses, numpy_state = training_losses("numpy")
    cupy_losses, cupy_state = training_losses("cupy")
    np.testing.assert_allclose(cupy_losses, numpy_losses, rtol=1e-5)
    for name in numpy_state:
        np.testing.assert_allclose(cupy_state[name], numpy_state[name], rtol=1e-4, atol=1e-6,
                                   err_msg=name)


@pytest.mark.gpu
@gpu
def test_cupy_refuses_implicit_host_copies_as_the_stand_in_does():
    x = mm.tensor([1.0, 2.0], backend_name="cupy")
    with pytest.raises(TypeError, match="Implicit conversion to a NumPy array is not allowed"):
        np.asarray(x.data)
    assert x.to("numpy").backend == "numpy"
