"""Lesson 00, autograd-lite: exercises.

Replace each `raise NotImplementedError(...)` with your answer, then grade:
    python -m minimoe.grade ex00
Each docstring is the contract the grader checks; the reference answers are in
`solutions/ex00_autograd.py` (look there only when stuck).
"""
# ruff: noqa: F401  (the imports are there for your answers)
import numpy as np

import minimoe as mm


def unbroadcast(grad, shape):
    """Reduces the gradient of a broadcast result back to the shape of one input.

    Broadcasting copies an input along new leading axes and along its size-1 axes, so the input's
    gradient is the *sum* of the output's gradient over exactly those axes.

    grad:  ndarray, the gradient of the broadcast output.
    shape: tuple of ints, the input's shape; it broadcasts to `grad.shape`.
    Returns an ndarray (or NumPy scalar for shape ()) of exactly `shape`.
    Do not call minimoe's own `unbroadcast`: this exercise is to write it.

    Hint: sum over the leading axes broadcasting added, then (keepdims) where `shape` has a 1.
    """
    raise NotImplementedError(
        'ex00: sum over the leading axes broadcasting added, then (keepdims) where `shape` has a '
        '1.')


class Tanh(mm.Function):
    """y = tanh(x) as an engine op: `Tanh.apply(tensor)`.

    forward(x):  x is an ndarray; returns tanh(x), same shape (use `self.xp`, the array module).
    backward(grad_output): returns a tuple with one ndarray, dL/dx, the shape of x.
    Do not call the engine's own tanh (`minimoe.functional.tanh`, `Tensor.tanh`).

    Hint: d tanh(x)/dx = 1 - tanh(x)**2: keep tanh(x) on `self` in forward, reuse it in backward.
    """

    def forward(self, x):
        raise NotImplementedError(
            'ex00: d tanh(x)/dx = 1 - tanh(x)**2: keep tanh(x) on `self` in forward, reuse it in '
            'backward.')

    def backward(self, grad_output):
        raise NotImplementedError(
            'ex00: d tanh(x)/dx = 1 - tanh(x)**2: keep tanh(x) on `self` in forward, reuse it in '
            'backward.')


class Mul(mm.Function):
    """a * b with NumPy broadcasting, as an engine op: `Mul.apply(tensor_a, tensor_b)`.

    forward(a, b):  ndarrays of shapes that broadcast together; returns a * b.
    backward(grad_output): returns (dL/da, dL/db), each of its input's shape.
    Call `unbroadcast` from this module for the shapes (the grader substitutes the reference
    version, so a bug there does not fail this exercise too). Do not call the engine's Mul.

    Hint: d(ab)/da = b, d(ab)/db = a; times grad_output, then unbroadcast to each input's shape.
    """

    def forward(self, a, b):
        raise NotImplementedError(
            'ex00: d(ab)/da = b, d(ab)/db = a; times grad_output, then unbroadcast to each '
            "input's shape.")

    def backward(self, grad_output):
        raise NotImplementedError(
            'ex00: d(ab)/da = b, d(ab)/db = a; times grad_output, then unbroadcast to each '
            "input's shape.")


def numerical_gradient(f, x, eps=1e-6):
    """The gradient of a scalar function by central finite differences.

    f:   a function of one ndarray returning a Python float.
    x:   float64 ndarray, the point; you may change its entries while probing, but it must hold
         its original values again when you return.
    eps: the step.
    Returns a float64 ndarray of x's shape; entry i is (f(x + eps e_i) - f(x - eps e_i)) / (2 eps).

    Hint: loop over np.ndindex(x.shape); nudge one entry up and down, call f, put the entry back.
    """
    raise NotImplementedError(
        'ex00: loop over np.ndindex(x.shape); nudge one entry up and down, call f, put the entry '
        'back.')
