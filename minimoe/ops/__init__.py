"""The differentiable ops, one file per family; each op is a `Function` with a hand-written backward.

arithmetic -- + - * / ** @ with broadcasting
pointwise  -- exp, log, sqrt, tanh, sigmoid, relu, gelu, silu, softplus
reduce     -- sum, mean, max
shape      -- reshape, transpose, indexing and slicing, concatenate, stack, split, cast
indexing   -- gather, scatter-add, where, masked fill, top-k
normalize  -- softmax, log-softmax, logsumexp, cross-entropy, layer norm, RMS norm, dropout
attention  -- fused causal multi-head attention
"""
from . import arithmetic, attention, indexing, normalize, pointwise, reduce, shape  # noqa: F401
