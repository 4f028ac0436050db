"""Grades exercises/ex00_autograd.py: broadcasting gradients, two ops, finite differences."""
import numpy as np
import pytest

import minimoe as mm
from graders._checks import expect, expect_close, expect_gradients, forbid_calls, lesson, methods_of
from minimoe.ops import arithmetic, pointwise

MODULE = "ex00_autograd"
see = lesson(MODULE)

# (shape of the broadcast gradient, the input's shape, the axes summed by hand, keepdims)
UNBROADCAST_CASES = [
    ((2, 3), (3,), (0,), False),  # a new leading axis
    ((2, 3), (2, 1), (1,), True),  # a stretched size-1 axis
    ((2, 3), (1, 3), (0,), True),
    ((2, 3), (), (0, 1), False),  # a scalar
    ((2, 3), (2, 3), (), False),  # nothing broadcast
    ((2, 4, 5, 3), (4, 1, 3), (0, 2), None),  # both kinds at once
]


def _by_hand(grad, axes, keepdims):
    if keepdims is None:  # drop the new axis 0, keep the stretched axis 2
        return grad.sum(axis=0).sum(axis=1, keepdims=True)
    return grad.sum(axis=axes, keepdims=keepdims)


@pytest.mark.exercise("unbroadcast", points=2)
@pytest.mark.parametrize("grad_shape, shape, axes, keepdims", UNBROADCAST_CASES)
def test_unbroadcast_sums_over_broadcast_axes(fn, grad_shape, shape, axes, keepdims):
    grad = np.random.default_rng(0).standard_normal(grad_shape)
    what = f"unbroadcast(grad of shape {grad_shape}, shape={shape})"
    with forbid_calls([arithmetic.unbroadcast], what, see("Broadcasting gradients")):
        got = fn(grad.copy(), shape)
    expect_close(got, _by_hand(grad, axes, keepdims), what, see("Broadcasting gradients"))


@pytest.mark.exercise("Tanh", points=1)
def test_tanh_forward_and_backward(fn):
    x = np.array([[-3.0, -0.5, 0.0], [0.25, 1.0, 20.0]])
    what = "Tanh.apply(x)"
    t = mm.tensor(x, dtype=np.float64, requires_grad=True)
    with forbid_calls(methods_of(pointwise.Tanh), what, see("Writing an op")):
        y = fn.apply(t)
        y.backward(np.ones(x.shape))
    expect_close(y, np.tanh(x), what, see("Writing an op"))
    expect_close(t.grad, 1 - np.tanh(x) ** 2, "Tanh backward: d(sum(tanh(x)))/dx", see("Writing an op"))
    expect_gradients(lambda v: fn.apply(v), [x], "Tanh backward", see("Writing an op"))


@pytest.mark.exercise("Mul", points=1, uses=("unbroadcast",))
def test_mul_same_shapes(fn):
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((3, 4)), rng.standard_normal((3, 4))
    ta, tb = (mm.tensor(v, dtype=np.float64, requires_grad=True) for v in (a, b))
    with forbid_calls(methods_of(arithmetic.Mul), "Mul", see("Writing an op")):
        out = fn.apply(ta, tb)
        out.backward(np.ones((3, 4)))
    expect_close(out, a * b, "Mul.apply(a, b) forward", see("Writing an op"))
    expect_close(ta.grad, b, "Mul backward: d(sum(a*b))/da", see("Writing an op"))
    expect_gradients(lambda x, y: fn.apply(x, y), [a, b], "Mul backward (a and b of shape (3, 4))",
                     see("Writing an op"))


@pytest.mark.exercise("Mul", points=1, uses=("unbroadcast",))
@pytest.mark.parametrize("shape_a, shape_b", [((2, 3), (3,)), ((4, 1), (1, 5)), ((2, 3), ())])
def test_mul_broadcasting(fn, shape_a, shape_b):
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal(shape_a), rng.standard_normal(shape_b)
    expect_gradients(lambda x, y: fn.apply(x, y), [a, b], f"Mul backward (a {shape_a}, b {shape_b})",
                     see("Broadcasting gradients"))


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
