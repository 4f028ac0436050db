"""The engine's ops as functions: what models and lessons call (`import minimoe.functional as F`).

Each function here is a thin front door to an op in `minimoe/ops/`, where its backward lives.
"""
from .ops.arithmetic import MatMul
from .ops.attention import attention
from .ops.indexing import (combine_rows, dispatch_rows, gather, index_add, masked_fill, permute_rows, topk,
                           unpermute_rows, where)
from .ops.normalize import CrossEntropy, Dropout, LayerNorm, LogSoftmax, LogSumExp, RMSNorm, Softmax
from .ops.pointwise import Exp, Gelu, Log, NormalCdf, Relu, Sigmoid, Silu, Softplus, Sqrt, Tanh
from .ops.reduce import mean
from .ops.shape import concatenate, split, stack
from .rng import device_rng
from .tensor import Tensor, tensor

__all__ = [
    "attention", "concatenate", "cross_entropy", "dropout", "exp", "gather", "gelu", "index_add",
    "layer_norm", "log", "normal_cdf", "log_softmax", "logsumexp", "masked_fill", "matmul", "mean", "permute_rows", "relu",
    "rms_norm", "sigmoid", "silu", "softmax", "softplus", "split", "sqrt", "stack", "tanh", "topk",
    "unpermute_rows", "where", "combine_rows", "dispatch_rows",
]


def matmul(a, b):
    return MatMul.apply(a, b)


def exp(x):
    return Exp.apply(x)


def log(x):
    return Log.apply(x)


def sqrt(x):
    return Sqrt.apply(x)


def tanh(x):
    return Tanh.apply(x)


def sigmoid(x):
    return Sigmoid.apply(x)


def relu(x):
    return Relu.apply(x)


def gelu(x):
    return Gelu.apply(x)


def silu(x):
    return Silu.apply(x)


def softplus(x):
    return Softplus.apply(x)


def normal_cdf(x):
    return NormalCdf.apply(x)


def softmax(x, axis=-1):
    return Softmax.apply(x, axis=axis)


def log_softmax(x, axis=-1):
    return LogSoftmax.apply(x, axis=axis)


def logsumexp(x, axis=-1, keepdims=False):
    return LogSumExp.apply(x, axis=axis, keepdims=keepdims)


def cross_entropy(logits, targets):
    """Mean cross-entropy of `logits` (..., C) against integer `targets` (...)."""
    if isinstance(targets, Tensor):
        targets = targets.data
    elif not hasattr(targets, "dtype"):
        targets = tensor(targets, backend_name=logits.backend).data
    return CrossEntropy.apply(logits, targets=targets)


def layer_norm(x, weight, bias, eps=1e-5):
    _check_last_axis("layer_norm", x, weight)
    return LayerNorm.apply(x, weight, bias, eps=eps)


def rms_norm(x, weight, eps=1e-6):
    _check_last_axis("rms_norm", x, weight)
    return RMSNorm.apply(x, weight, eps=eps)


def dropout(x, p, training=True):
    """Inverted dropout with probability p; the identity when not training or p == 0."""
    if not 0 <= p < 1:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0:
        return x
    keep = device_rng(x.xp).random(x.shape, dtype=x.dtype) >= p
    return Dropout.apply(x, keep_mask=keep, p=p)


def _check_last_axis(op, x, weight):
    if x.shape[-1:] != weight.shape:
        raise ValueError(f"{op}: the last axis of x {x.shape} must match the weight's shape {weight.shape}")
