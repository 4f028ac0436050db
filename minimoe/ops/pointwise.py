"""Elementwise functions. Each backward reuses what the forward computed (e.g. 1 - tanh^2 from
tanh) instead of recomputing it: fewer passes over memory, which is what NumPy's time goes on."""
import math

from ..tensor import Function
from .row_blocks import map_row_blocks


class Exp(Function):
    def forward(self, x):
        self.y = self.xp.exp(x)
        return self.y

    def backward(self, g):
        return (g * self.y,)


class Log(Function):
    def forward(self, x):
        self.x = x
        return self.xp.log(x)

    def backward(self, g):
        return (g / self.x,)


class Sqrt(Function):
    def forward(self, x):
        self.y = self.xp.sqrt(x)
        return self.y

    def backward(self, g):
        return (g * 0.5 / self.y,)


class Tanh(Function):
    def forward(self, x):
        self.y = self.xp.tanh(x)
        return self.y

    def backward(self, g):
        return (g * (1 - self.y * self.y),)


def stable_sigmoid(xp, x):
    """1 / (1 + e^-x) written through tanh, which never overflows: sigmoid(x) = (1 + tanh(x/2)) / 2."""
    return 0.5 * (1 + xp.tanh(0.5 * x))


class Sigmoid(Function):
    def forward(self, x):
        self.y = stable_sigmoid(self.xp, x)
        return self.y

    def backward(self, g):
        return (g * self.y * (1 - self.y),)


class Relu(Function):
    def forward(self, x):
        self.positive = x > 0
        return x * self.positive

    def backward(self, g):
        return (g * self.positive,)


GELU_C = math.sqrt(2 / math.pi)


def gelu_forward(xp, x):
    """GELU with the tanh approximation (Hendrycks & Gimpel 2016, §2; GPT-2 uses it):
    gelu(x) = x/2 (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2/pi). Returns (gelu(x), the tanh),
    the tanh being what the backward needs. In-place steps: two new arrays instead of eight."""
    t = x * x
    t *= GELU_C * 0.044715
    t += GELU_C
    t *= x  # c (x + 0.044715 x^3)
    xp.tanh(t, out=t)
    y = t + 1
    y *= x
    y *= 0.5
    return y, t


def gelu_grad(x, t):
    """d gelu / dx = (1 + t)/2 + x/2 (1 - t^2) c (1 + 3 0.044715 x^2), from x and the tanh saved by
    `gelu_forward`; written with in-place updates, since each pass over a big activation costs."""
    inner = x * x
    inner *= 3 * 0.044715 * GELU_C
    inner += GELU_C  # c (1 + 3 0.044715 x^2)
    out = t * t
    out -= 1
    out *= inner
    out *= x
    out *= -0.5  # x/2 (1 - t^2) c (...)
    out += 0.5
    inner = 0.5 * t
    out += inner
    return out


class Gelu(Function):
    def forward(self, x):
        xp = self.xp
        y, self.t = map_row_blocks(lambda rows: gelu_forward(xp, rows), x)
        self.x = x
        return y

    def backward(self, g):
        return (map_row_blocks(lambda g, x, t: g * gelu_grad(x, t), g, self.x, self.t),)


def silu_grad(x, s):
    """d silu / dx = s (1 + x (1 - s)), with s = sigmoid(x)."""
    return s * (1 + x * (1 - s))


class Silu(Function):
    """silu(x) = x * sigmoid(x) (the "swish" of SwiGLU)."""

    def forward(self, x):
        self.x = x
        self.s = stable_sigmoid(self.xp, x)
        return x * self.s

    def backward(self, g):
        return (g * silu_grad(self.x, self.s),)


class Softplus(Function):
    """softplus(x) = log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|) so it never overflows;
    its derivative is sigmoid(x). Shazeer et al. (2017) use it for the noise scale of noisy top-k."""

    def forward(self, x):
        xp = self.xp
        self.x = x
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, g):
        return (g * stable_sigmoid(self.xp, self.x),)


# Abramowitz & Stegun 7.1.26: erf(x) ~ 1 - P(t) e^{-x^2}, t = 1 / (1 + p x), for x >= 0, with an
# absolute error below 1.5e-7. NumPy has no erf, and this keeps the engine free of SciPy.
_ERF_P = 0.3275911
_ERF_A = (0.254829592, -0.284496736, 1.421413741, -1.453152027, 1.061405429)


class NormalCdf(Function):
    """Phi(z) = (1 + erf(z / sqrt 2)) / 2, the standard normal CDF: Shazeer et al. (2017, App. A,
    eq. 9) use it to turn noisy top-k gating into a smooth, differentiable load estimate.

    The backward is the exact derivative of the approximation used in the forward (not the
    Gaussian density it approximates to about 1e-7), so finite differences agree with it."""

    def forward(self, z):
        xp = self.xp
        self.sign = xp.sign(z)
        self.x = xp.abs(z) / math.sqrt(2)
        self.t = 1 / (1 + _ERF_P * self.x)
        self.e = xp.exp(-self.x * self.x)
        erf_abs = 1 - _poly(self.t) * self.e
        return 0.5 * (1 + self.sign * erf_abs)

    def backward(self, g):
        t, x = self.t, self.x
        d_erf = self.e * (_poly_derivative(t) * _ERF_P * t * t + 2 * x * _poly(t))  # d erf(x) / dx, even in z
        return (g * d_erf * (0.5 / math.sqrt(2)),)


def _poly(t):
    a1, a2, a3, a4, a5 = _ERF_A
    return t * (a1 + t * (a2 + t * (a3 + t * (a4 + t * a5))))


def _poly_derivative(t):
    a1, a2, a3, a4, a5 = _ERF_A
    return a1 + t * (2 * a2 + t * (3 * a3 + t * (4 * a4 + t * 5 * a5)))
