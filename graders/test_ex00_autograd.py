"""Grades exercises/ex00_autograd.py: broadcasting gradients, two ops, finite differences."""
import numpy as np
import pytest

import minimoe as mm
import minimoe.functional as F
from graders._checks import expect, expect_close, expect_dtype, expect_gradients, forbid_calls, lesson
from minimoe.gradcheck import gradcheck
from minimoe.ops import arithmetic, pointwise

MODULE = "ex00_autograd"
see = lesson(MODULE)
# The library's own versions of each exercise: calling one earns nothing (exercises/README.md).
TWINS = {
    "unbroadcast": [arithmetic.unbroadcast],
    "numerical_gradient": [gradcheck],
}
TANH_TWINS = [pointwise.Tanh, F.tanh, mm.Tensor.tanh]
MUL_TWINS = [arithmetic.Mul]

# (shape of the broadcast gradient, the input's shape, the axes summed by hand, keepdims)
UNBROADCAST_CASES = [
    ((2, 3), (3,), (0,), False),  # a new leading axis
    ((2, 3), (2, 1), (1,), True),  # a stretched size-1 axis
    ((2, 3), (1, 3), (0,), True),
    ((2, 3), (), (0, 1), False),  # a scalar
    ((2, 3), (2, 3), (), False),  # nothing broadcast
    ((2, 4, 5, 3), (4, 1, 3), (0, 2), None),  # both kinds at once
    ((3, 3), (3,), (0,), False),  # a new axis of the same size as a kept one
    ((4, 1, 4), (1, 4), (0,), False),  # size 1 in both: nothing to sum there
]


def _by_hand(grad, axes, keepdims):
    if keepdims is None:  # drop the new axis 0, keep the stretched axis 2
        return grad.sum(axis=0).sum(axis=1, keepdims=True)
    return grad.sum(axis=axes, keepdims=keepdims)


def _random_broadcast(rng):
    """An input shape and a gradient shape it broadcasts to: new leading axes, stretched 1s."""
    shape = tuple(int(n) for n in rng.integers(1, 6, rng.integers(1, 4)))
    stretched = tuple(int(rng.integers(2, 6)) if n == 1 else n for n in shape)
    leading = tuple(int(n) for n in rng.integers(1, 5, rng.integers(0, 3)))
    return leading + stretched, shape


def _reference_unbroadcast(grad, shape):
    """Sums each gradient entry into the input entry it was copied from, with np.add.at."""
    out = np.zeros(shape, dtype=grad.dtype)
    padded = (1,) * (grad.ndim - len(shape)) + tuple(shape)
    for index in np.ndindex(grad.shape):
        source = tuple(0 if n == 1 else i for i, n in zip(index, padded))[grad.ndim - len(shape):]
        out[source] += grad[index]
    return out


@pytest.mark.exercise("unbroadcast", points=1)
@pytest.mark.parametrize("grad_shape, shape, axes, keepdims", UNBROADCAST_CASES)
def test_unbroadcast_sums_over_broadcast_axes(fn, rng, grad_shape, shape, axes, keepdims):
    grad = rng.standard_normal(grad_shape)
    what = f"unbroadcast(grad of shape {grad_shape}, shape={shape})"
    expect_close(fn(grad.copy(), shape), _by_hand(grad, axes, keepdims), what, see("Broadcasting gradients"))


@pytest.mark.exercise("unbroadcast", points=1)
def test_unbroadcast_random_shapes_and_dtypes(fn, rng):
    section = see("Broadcasting gradients")
    for _ in range(6):
        grad_shape, shape = _random_broadcast(rng)
        grad = rng.standard_normal(grad_shape).astype(rng.choice([np.float32, np.float64]))
        what = f"unbroadcast(grad of shape {grad_shape}, dtype {grad.dtype}, shape={shape})"
        got = fn(grad.copy(), shape)
        expect_close(got, _reference_unbroadcast(grad, shape), what, section, rtol=1e-5, atol=1e-5)
        expect_dtype(got, grad.dtype, what, section)


@pytest.mark.exercise("Tanh", points=1)
def test_tanh_forward_and_backward(fn, rng):
    section = see("Writing an op")
    for dtype, x in [(np.float64, np.array([[-3.0, -0.5, 0.0], [0.25, 1.0, 20.0]])),
                     (np.float64, 3 * rng.standard_normal((3, 4, 2))),
                     (np.float32, 3 * rng.standard_normal((5,)))]:
        what = f"Tanh.apply(x) for x of shape {x.shape}, {np.dtype(dtype)}"
        t = mm.tensor(x, dtype=dtype, requires_grad=True)
        upstream = rng.standard_normal(x.shape).astype(dtype)
        with forbid_calls(TANH_TWINS, what, section):
            y = fn.apply(t)
            y.backward(upstream)
        tight = dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else {}
        expect_close(y, np.tanh(x.astype(dtype)), what, section, dtype=dtype, **tight)
        expect_close(t.grad, upstream * (1 - np.tanh(x.astype(dtype)) ** 2),
                     f"Tanh backward (upstream gradient times 1 - tanh(x)^2), {np.dtype(dtype)}", section,
                     dtype=dtype, **tight)
    with forbid_calls(TANH_TWINS, "Tanh", section):
        expect_gradients(lambda v: fn.apply(v), [rng.standard_normal((2, 3))], "Tanh backward", section)


def _mul_case(fn, rng, shape_a, shape_b, section):
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    ta, tb = (mm.tensor(v, dtype=np.float64, requires_grad=True) for v in (a, b))
    upstream = rng.standard_normal(np.broadcast_shapes(shape_a, shape_b))
    what = f"Mul.apply(a of shape {shape_a}, b of shape {shape_b})"
    with forbid_calls(MUL_TWINS, what, section):
        out = fn.apply(ta, tb)
        out.backward(upstream)
    expect_close(out, a * b, f"{what} forward", section)
    expect_close(ta.grad, _reference_unbroadcast(upstream * b, shape_a), f"{what}: dL/da", section)
    expect_close(tb.grad, _reference_unbroadcast(upstream * a, shape_b), f"{what}: dL/db", section)


@pytest.mark.exercise("Mul", points=1, uses=("unbroadcast",))
def test_mul_same_shapes(fn, rng):
    _mul_case(fn, rng, (3, 4), (3, 4), see("Writing an op"))
    # (gradcheck itself multiplies with the engine's Mul: the twin check is _mul_case's)
    expect_gradients(lambda x, y: fn.apply(x, y), [rng.standard_normal((3, 4)), rng.standard_normal((3, 4))],
                     "Mul backward (a and b of shape (3, 4))", see("Writing an op"))


@pytest.mark.exercise("Mul", points=1, uses=("unbroadcast",))
@pytest.mark.parametrize("shape_a, shape_b", [((2, 3), (3,)), ((4, 1), (1, 5)), ((2, 3), ()), ((3,), (2, 4, 3))])
def test_mul_broadcasting(fn, rng, shape_a, shape_b):
    _mul_case(fn, rng, shape_a, shape_b, see("Broadcasting gradients"))


@pytest.mark.exercise("numerical_gradient", points=1)
def test_numerical_gradient_is_central_and_leaves_x_alone(fn):
    x = np.array([[0.5, -1.0], [2.0, 3.0]])
    before = x.copy()
    got = fn(lambda v: float((v**3).sum()), x, eps=1e-3)
    # Central differences are exact up to eps^2 for a cubic: 3x^2 + eps^2; one-sided ones are off by 3x*eps.
    expect_close(got, 3 * before**2 + 1e-6, "numerical_gradient(sum(x**3), eps=1e-3)",
                 see("Gradient checking"), rtol=0, atol=1e-9)
    expect(np.array_equal(x, before), "x after numerical_gradient", "its original values",
           f"{x.tolist()} (put each entry back after probing)", see("Gradient checking"))
    product = fn(lambda v: float(v[0, 0] * v[1, 1]), x, eps=1e-6)
    expect_close(product, [[3.0, 0.0], [0.0, 0.5]], "numerical_gradient(x[0,0] * x[1,1])",
                 see("Gradient checking"), atol=1e-6)


@pytest.mark.exercise("numerical_gradient", points=1)
def test_numerical_gradient_of_a_random_quadratic(fn, rng):
    """f(x) = sum(c * x^2) + sum(w * x): central differences are exact for a quadratic."""
    shape = (int(rng.integers(2, 4)), int(rng.integers(4, 6)), 1 + int(rng.integers(1, 3)))
    x, c, w = rng.standard_normal(shape), rng.standard_normal(shape), rng.standard_normal(shape)
    before = x.copy()
    got = fn(lambda v: float((c * v * v).sum() + (w * v).sum()), x, eps=1e-4)
    expect_close(got, 2 * c * before + w, f"numerical_gradient of sum(c x^2 + w x), x of shape {shape}",
                 see("Gradient checking"), rtol=1e-6, atol=1e-6)
    expect(np.array_equal(x, before), "x after numerical_gradient", "its original values", "changed values",
           see("Gradient checking"))
