"""Lesson 00, autograd-lite: reference answers.

Try the exercise first (`exercises/ex00_autograd.py`); grade it with
`python -m minimoe.grade ex00`.
"""
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
    n_new = grad.ndim - len(shape)
    grad = grad.sum(axis=tuple(range(n_new)))  # the axes broadcasting put in front
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True)  # the size-1 axes it copied along


class Tanh(mm.Function):
    """y = tanh(x) as an engine op: `Tanh.apply(tensor)`.

    forward(x):  x is an ndarray; returns tanh(x), same shape (use `self.xp`, the array module).
    backward(grad_output): returns a tuple with one ndarray, dL/dx, the shape of x.
    Do not call the engine's own tanh (`minimoe.functional.tanh`, `Tensor.tanh`).

    Hint: d tanh(x)/dx = 1 - tanh(x)**2: keep tanh(x) on `self` in forward, reuse it in backward.
    """

    def forward(self, x):
        self.y = self.xp.tanh(x)  # saved: the derivative is written in terms of the output
        return self.y

    def backward(self, grad_output):
        return (grad_output * (1 - self.y * self.y),)


class Mul(mm.Function):
    """a * b with NumPy broadcasting, as an engine op: `Mul.apply(tensor_a, tensor_b)`.

    forward(a, b):  ndarrays of shapes that broadcast together; returns a * b.
    backward(grad_output): returns (dL/da, dL/db), each of its input's shape.
    Call `unbroadcast` from this module for the shapes (the grader substitutes the reference
    version, so a bug there does not fail this exercise too). Do not call the engine's Mul.

    Hint: d(ab)/da = b, d(ab)/db = a; times grad_output, then unbroadcast to each input's shape.
    """

    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad_output):
        return (unbroadcast(grad_output * self.b, self.a.shape),
                unbroadcast(grad_output * self.a, self.b.shape))


def numerical_gradient(f, x, eps=1e-6):
    """The gradient of a scalar function by central finite differences.

    f:   a function of one ndarray returning a Python float.
    x:   float64 ndarray, the point; you may change its entries while probing, but it must hold
         its original values again when you return.
    eps: the step.
    Returns a float64 ndarray of x's shape; entry i is (f(x + eps e_i) - f(x - eps e_i)) / (2 eps).

    Hint: loop over np.ndindex(x.shape); nudge one entry up and down, call f, put the entry back.
    """
    grad = np.zeros(x.shape)
    for index in np.ndindex(x.shape):  # one entry at a time: a checking tool, not training code
        original = x[index]
        x[index] = original + eps
        up = f(x)
        x[index] = original - eps
        down = f(x)
        x[index] = original
        grad[index] = (up - down) / (2 * eps)  # error O(eps^2), against O(eps) one-sided
    return grad
