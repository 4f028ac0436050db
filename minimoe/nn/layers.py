"""The standard layers, each a few lines over `minimoe.functional`."""
import math

from .. import functional as F
from ..config_checks import whole
from ..tensor import Tensor
from .module import Module, Parameter


def _rate(value, what: str) -> float:
    """A probability in [0, 1), or a ValueError naming `what`."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value < 1:
        raise ValueError(f"{what} must be a number in [0, 1), got {value!r}")
    return float(value)


def _positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{what} must be a finite number > 0, got {value!r}")
    return float(value)


def _check_input(layer: str, x) -> None:
    """Layers take Tensors of at least one axis (a list or a NumPy array must be wrapped first)."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{layer} takes a Tensor, got {type(x).__name__}; wrap it with minimoe.tensor(x)")
    if x.ndim == 0:
        raise ValueError(f"{layer} takes a tensor with a feature axis, got a 0-d tensor; reshape it to (1,) or (n, features)")


class Linear(Module):
    """y = x W + b, with W of shape (in, out) so the matmul needs no transpose. Initialised like
    PyTorch: uniform in +-1/sqrt(in)."""

    def __init__(self, d_in: int, d_out: int, bias: bool = True):
        d_in, d_out = whole(d_in, "Linear d_in"), whole(d_out, "Linear d_out")
        bound = 1 / math.sqrt(d_in)
        self.weight = Parameter.uniform((d_in, d_out), bound)
        self.bias = Parameter.uniform((d_out,), bound) if bias else None

    def forward(self, x):
        _check_input("Linear", x)
        if x.shape[-1] != self.weight.shape[0]:
            raise ValueError(f"Linear expects inputs with last axis {self.weight.shape[0]}, got shape {x.shape}")
        y = x @ self.weight
        return y + self.bias if self.bias is not None else y


class Embedding(Module):
    """A lookup table: row i is the vector of token i."""

    def __init__(self, n: int, d: int, std: float = 0.02):
        n, d = whole(n, "Embedding n (rows)"), whole(d, "Embedding d (width)")
        self.weight = Parameter.normal((n, d), _positive(std, "Embedding std"))

    def forward(self, ids):
        ids = ids.data if isinstance(ids, Tensor) else ids
        if not hasattr(ids, "dtype") or ids.dtype.kind not in "iu":
            raise TypeError(f"Embedding takes integer ids, got {getattr(ids, 'dtype', type(ids).__name__)}; "
                            "a float id would be truncated to another token")
        n = self.weight.shape[0]
        if ids.size and (int(ids.min()) < 0 or int(ids.max()) >= n):
            raise ValueError(f"Embedding has {n} rows; got ids from {int(ids.min())} to {int(ids.max())}")
        return self.weight[ids]


class LayerNorm(Module):
    def __init__(self, d: int, eps: float = 1e-5):
        d = whole(d, "LayerNorm d")
        self.weight = Parameter.constant((d,), 1.0)
        self.bias = Parameter.constant((d,), 0.0)
        self.eps = _positive(eps, "LayerNorm eps")

    def forward(self, x):
        return F.layer_norm(x, self.weight, self.bias, self.eps)


class RMSNorm(Module):
    def __init__(self, d: int, eps: float = 1e-6):
        d = whole(d, "RMSNorm d")
        self.weight = Parameter.constant((d,), 1.0)
        self.eps = _positive(eps, "RMSNorm eps")

    def forward(self, x):
        return F.rms_norm(x, self.weight, self.eps)


class Dropout(Module):
    def __init__(self, p: float):
        self.p = _rate(p, "Dropout p")

    def forward(self, x):
        return F.dropout(x, self.p, self.training)


ACTIVATIONS = {"gelu": F.gelu, "relu": F.relu, "silu": F.silu, "tanh": F.tanh}


class MLP(Module):
    """Linear -> activation -> Linear (the Transformer's feed-forward block, and lesson 00's net)."""

    def __init__(self, d_in: int, d_hidden: int, d_out: int, activation: str = "gelu"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {sorted(ACTIVATIONS)}")
        self.fc1 = Linear(d_in, d_hidden)
        self.fc2 = Linear(d_hidden, d_out)
        self.activation = activation

    def forward(self, x):
        return self.fc2(ACTIVATIONS[self.activation](self.fc1(x)))
