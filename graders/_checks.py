"""What every grader shares: where each lesson lives, the random inputs of a run, and checks whose
failure message tells the learner what was expected, what came back, and which lesson section
explains it.

The checks raise AssertionError themselves (not through `assert`), so the message a learner sees
is exactly the one written here; `minimoe.grade` shows its first line as the hint.
"""
import contextlib
import os
import secrets
import sys
import zlib
from pathlib import Path

import numpy as np

from minimoe import Tensor

# The notebook of each exercise module, by its "exNN" prefix. A notebook found in lessons/ with the
# same number wins, so a renamed lesson is still the one named in failure messages.
LESSONS = {
    "ex00": "lessons/00_autograd.ipynb",
    "ex01": "lessons/01_jacobs_1991.ipynb",
    "ex02": "lessons/02_sparse_gating.ipynb",
    "ex03": "lessons/03_switch_gshard.ipynb",
    "ex04": "lessons/04_tiny_transformer.ipynb",
    "ex05": "lessons/05_stability.ipynb",
    "ex06": "lessons/06_routing_zoo.ipynb",
    "ex07": "lessons/07_deepseek.ipynb",
    "ex08": "lessons/08_specialisation.ipynb",
    "ex09": "lessons/09_scale_and_systems.ipynb",
    "ex10": "lessons/10_scaling_upcycling.ipynb",
}
REPO_ROOT = Path(__file__).resolve().parent.parent

# Values are also checked on inputs drawn afresh on every run, so a table of the visible cases
# cannot pass. The seed is printed with every failure; set it to replay a run exactly.
SEED_VARIABLE = "MINIMOE_GRADER_SEED"
SEED = int(os.environ.get(SEED_VARIABLE) or secrets.randbelow(2**31))


def random_inputs(name):
    """The generator of one test (`name`): different on every run, the same for the same seed."""
    return np.random.default_rng([SEED, zlib.crc32(name.encode())])


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


def fail(what, expected, got, see, detail=None):
    detail = f"; {detail}" if detail else ""
    raise AssertionError(f"{what}: expected {expected}, got {got}{detail}; {see}")


def expect_shape(got, shape, what, see):
    got_shape = np.shape(got)
    if tuple(got_shape) != tuple(shape):
        fail(what, f"shape {tuple(shape)}", f"shape {tuple(got_shape)}", see)


def expect_dtype(got, kinds, what, see):
    """The result's dtype is of one of NumPy's `kinds`: "b" bool, "iu" integers, "f" floats, or an
    exact dtype such as np.float32."""
    dtype = as_array(got).dtype
    ok = dtype == np.dtype(kinds) if not isinstance(kinds, str) else dtype.kind in kinds
    if not ok:
        names = {"b": "bool", "iu": "an integer dtype", "i": "a signed integer dtype", "f": "a float dtype"}
        wanted = names.get(kinds, str(np.dtype(kinds)) if not isinstance(kinds, str) else kinds)
        fail(f"{what} (its dtype)", wanted, str(dtype), see)


def _where(index):
    return f"index {tuple(int(i) for i in index)}" if len(index) else "the value"


def expect_close(got, expected, what, see, rtol=1e-6, atol=1e-9, dtype=None):
    """Same shape, finite where expected is finite, and equal within tolerance; the message names the
    largest difference and the tolerance there. `dtype` (optional) is also asserted."""
    expected = np.asarray(expected, dtype=float)
    if got is None:
        fail(what, show(expected), "None (did you forget to return?)", see)
    if dtype is not None:
        expect_dtype(got, dtype, what, see)
    got = as_array(got).astype(float)
    expect_shape(got, expected.shape, what, see)
    if not np.all(np.isfinite(got) | ~np.isfinite(expected)):
        fail(what, f"finite values {show(expected)}", f"{show(got)} (NaN or inf: overflow or log(0)?)", see)
    same_inf = (got == expected) & ~np.isfinite(expected)
    with np.errstate(invalid="ignore"):  # inf - inf where both are the same infinity
        difference = np.where(same_inf, 0.0, np.abs(got - expected))
    difference = np.where(np.isnan(difference), np.inf, difference)
    allowed = atol + rtol * np.where(np.isfinite(expected), np.abs(expected), 0.0)
    if np.any(difference > allowed):
        index = np.unravel_index(np.argmax(difference - allowed), difference.shape) if difference.ndim else ()
        fail(what, show(expected), show(got),
             see, f"largest difference {float(difference[index]):.3g} at {_where(index)}, tolerance there "
                  f"{float(allowed[index]):.3g} (atol {atol:g} + rtol {rtol:g} x |expected|)")


def expect_equal(got, expected, what, see, dtype=None):
    """Exactly equal (integers, booleans, indices); `dtype` (optional: "b", "iu", ...) is asserted too."""
    expected = np.asarray(expected)
    if got is None:
        fail(what, show(expected), "None (did you forget to return?)", see)
    if dtype is not None:
        expect_dtype(got, dtype, what, see)
    got = as_array(got)
    expect_shape(got, expected.shape, what, see)
    if not np.array_equal(got, expected):
        wrong = np.argwhere(got != expected) if got.ndim else np.zeros((1, 0), dtype=int)
        index = tuple(wrong[0])
        fail(what, show(expected), show(got), see,
             f"{len(wrong)} of {max(got.size, 1)} entries differ (exact match required), the first at "
             f"{_where(index)}: expected {expected[index]!r}, got {got[index]!r}")


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


def codes_of(twins):
    """The code objects of library functions, methods and classes (every method a class defines)."""
    codes = set()
    for twin in twins:
        twin = getattr(twin, "__func__", twin)
        if isinstance(twin, type):
            codes |= {method.__code__ for method in methods_of(twin)}
        else:
            codes.add(twin.__code__)
    return codes


@contextlib.contextmanager
def forbid_calls(functions, what, see):
    """Fails the check if any of `functions` (functions, methods or classes) runs inside the block,
    however it was imported: an exercise may not call the library's own version of itself."""
    codes = codes_of(functions)
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
        fail(what, "your own code", f"a call to the library's {called[0]} (the exercise is to write it: the "
             "rule is in exercises/README.md)", see)
