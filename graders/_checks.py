"""What every grader shares: where each lesson lives, and checks whose failure message tells the
learner what was expected, what came back, and which lesson section explains it.

The checks raise AssertionError themselves (not through `assert`), so the message a learner sees
is exactly the one written here; `minimoe.grade` shows its first line as the hint.
"""
import contextlib
import sys
from pathlib import Path

import numpy as np

from minimoe import Tensor

# The notebook of each exercise module, by its "exNN" prefix. A notebook found in lessons/ with the
# same number wins, so a renamed lesson is still the one named in failure messages.
LESSONS = {
    "ex00": "lessons/00_autograd_lite.ipynb",
    "ex01": "lessons/01_adaptive_mixtures.ipynb",
    "ex02": "lessons/02_sparse_gating.ipynb",
    "ex03": "lessons/03_switch_gshard.ipynb",
    "ex04": "lessons/04_tiny_moe_transformer.ipynb",
    "ex05": "lessons/05_stability.ipynb",
    "ex06": "lessons/06_routing_zoo.ipynb",
    "ex07": "lessons/07_deepseek.ipynb",
    "ex08": "lessons/08_specialisation.ipynb",
    "ex09": "lessons/09_scale_and_systems.ipynb",
}
REPO_ROOT = Path(__file__).resolve().parent.parent


def notebook_for(module):
    """The lesson notebook of an exercise module, e.g. "ex02_sparse_gating" -> "lessons/02_....ipynb"."""
    found = sorted((REPO_ROOT / "lessons").glob(f"{module[2:4]}_*.ipynb"))
    return f"lessons/{found[0].name}" if found else LESSONS[module[:4]]


def lesson(module):
    """`see = lesson("ex02_sparse_gating")`; `see("Top-k gating")` names that section of lesson 02."""
    notebook = notebook_for(module)

    def see(section):
        return f"see {notebook}, section '{section}'"

    return see


def as_array(value):
    """A NumPy array of a result, whether the learner returned an array, a number or a Tensor."""
    return value.numpy() if isinstance(value, Tensor) else np.asarray(value)


def show(value, max_items=12):
    """A short, readable rendering of an array for a failure message."""
    array = np.asarray(value)
    if array.size > max_items:
        return f"array of shape {array.shape} (first values {np.round(array.reshape(-1)[:4], 4).tolist()} ...)"
    if array.dtype.kind == "f":
        text = np.array2string(array, precision=5, suppress_small=True, separator=", ")
    else:
        text = np.array2string(array, separator=", ")
    return " ".join(text.split())  # one line: the grade table shows a message's first line


def fail(what, expected, got, see):
    raise AssertionError(f"{what}: expected {expected}, got {got}; {see}")


def expect_shape(got, shape, what, see):
    got_shape = np.shape(got)
    if tuple(got_shape) != tuple(shape):
        fail(what, f"shape {tuple(shape)}", f"shape {tuple(got_shape)}", see)


def expect_close(got, expected, what, see, rtol=1e-6, atol=1e-9):
    """Same shape, finite where expected is finite, and equal within tolerance."""
    expected = np.asarray(expected, dtype=float)
    if got is None:
        fail(what, show(expected), "None (did you forget to return?)", see)
    got = as_array(got).astype(float)
    expect_shape(got, expected.shape, what, see)
    if not np.all(np.isfinite(got) | ~np.isfinite(expected)):
        fail(what, f"finite values {show(expected)}", f"{show(got)} (NaN or inf: overflow or log(0)?)", see)
    if not np.allclose(got, expected, rtol=rtol, atol=atol):
        fail(what, show(expected), show(got), see)


def expect_equal(got, expected, what, see):
    """Exactly equal (integers, booleans, indices)."""
    expected = np.asarray(expected)
    if got is None:
        fail(what, show(expected), "None (did you forget to return?)", see)
    got = as_array(got)
    expect_shape(got, expected.shape, what, see)
    if not np.array_equal(got, expected):
        fail(what, show(expected), show(got), see)


def expect(condition, what, expected, got, see):
    """A property that must hold; `expected` and `got` describe it in words."""
    if not condition:
        fail(what, expected, got, see)


def expect_raises(error, call, what, see):
    """`call()` must raise `error` (a clear error for bad input)."""
    try:
        call()
    except error:
        return
    except NotImplementedError:  # an untouched stub: say so, not "wrong error"
        raise
    except Exception as other:  # noqa: BLE001  (reported to the learner)
        fail(what, f"a {error.__name__}", f"{type(other).__name__}: {other}", see)
    fail(what, f"a {error.__name__}", "no error", see)


def expect_gradients(fn, inputs, what, see):
    """`minimoe.gradcheck(fn, inputs)` must pass: analytic and finite-difference gradients agree.
    An error inside a backward pass (a gradient of the wrong shape, a cut graph) fails the check
    with the engine's own message; NotImplementedError (an untouched stub) passes through."""
    from minimoe import gradcheck

    try:
        result = gradcheck(fn, inputs)
    except NotImplementedError:
        raise
    except (AssertionError, RuntimeError, ValueError, TypeError) as error:
        fail(what, "gradients that match finite differences", f"{type(error).__name__}: {error}", see)
    if not result.ok:
        fail(what, "gradients that match finite differences (relative error < 1e-6)", str(result), see)


def methods_of(cls):
    """The functions a class defines itself (an engine op's forward, backward, ...)."""
    return [value for value in vars(cls).values() if callable(value) and hasattr(value, "__code__")]


@contextlib.contextmanager
def forbid_calls(functions, what, see):
    """Fails the check if any of `functions` runs inside the block, however it was imported
    (exercises on the engine's internals may not call the engine's own version)."""
    codes = {f.__code__ for f in functions}
    called = []

    def profiler(frame, event, arg):
        if event == "call" and frame.f_code in codes:
            called.append(getattr(frame.f_code, "co_qualname", frame.f_code.co_name))

    previous = sys.getprofile()
    sys.setprofile(profiler)
    try:
        yield
    finally:
        sys.setprofile(previous)
    if called:
        fail(what, "your own code", f"a call to the engine's {called[0]}", see)
