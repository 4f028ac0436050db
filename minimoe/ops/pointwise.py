"""Elementwise functions. Each backward reuses what the forward computed (e.g. 1 - tanh^2 from
tanh) instead of recomputing it: fewer passes over memory, which is what NumPy's time goes on."""
import math

from ..tensor import Function


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


class Gelu(Function):
    """GELU with the tanh approximation (Hendrycks & Gimpel 2016, eq. after §2; GPT-2 uses it):
    gelu(x) = x/2 (1 + tanh(c (x + 0.044715 x^3))), c = sqrt(2/pi)."""

    def forward(self, x):
        xp = self.xp
        self.x = x
        self.t = xp.tanh(GELU_C * (x + 0.044715 * x * x * x))
        return 0.5 * x * (1 + self.t)

    def backward(self, g):
        x, t = self.x, self.t
        dinner = GELU_C * (1 + 3 * 0.044715 * x * x)
        return (g * (0.5 * (1 + t) + 0.5 * x * (1 - t * t) * dinner),)


class Silu(Function):
    """silu(x) = x * sigmoid(x) (the "swish" of SwiGLU); d/dx = s (1 + x (1 - s))."""

    def forward(self, x):
        self.x = x
        self.s = stable_sigmoid(self.xp, x)
        return x * self.s

    def backward(self, g):
        s = self.s
        return (g * s * (1 + self.x * (1 - s)),)


class Softplus(Function):
    """softplus(x) = log(1 + e^x), computed as max(x, 0) + log1p(e^-|x|) so it never overflows;
    its derivative is sigmoid(x). Shazeer et al. (2017) use it for the noise scale of noisy top-k."""

    def forward(self, x):
        xp = self.xp
        self.x = x
        return xp.maximum(x, 0) + xp.log1p(xp.exp(-xp.abs(x)))

    def backward(self, g):
        return (g * stable_sigmoid(self.xp, self.x),)
