"""Lesson 04, a tiny MoE Transformer (causal self-attention, and the block an MoE layer sits in):
exercises.

Replace each `raise NotImplementedError(...)` with your answer, then grade:
    python -m minimoe.grade ex04
Each docstring is the contract the grader checks; the reference answers are in
`solutions/ex04_transformer.py` (look there only when stuck).
"""
# ruff: noqa: F401  (the imports are there for your answers)
import math

import numpy as np


def causal_mask(n_tokens):
    """Which keys each query may attend to in a decoder: itself and the past.

    n_tokens: int T. Returns a bool ndarray (T, T): mask[t, s] is True exactly when s <= t.

    Hint: np.tril of a (T, T) array of ones, as bool.
    """
    raise NotImplementedError('ex04: np.tril of a (T, T) array of ones, as bool.')


def masked_softmax(scores, mask):
    """Softmax over the last axis that gives masked-out positions exactly zero weight.

    scores: float ndarray (..., S). mask: bool ndarray broadcastable to scores; True = allowed.
    Returns an ndarray of scores' shape: each row sums to 1 over its allowed positions and is 0
    elsewhere; a row with no allowed position is all zeros (not NaN); finite for scores of 1e4.

    Hint: where(mask, scores, -inf); minus the row max (0 if none allowed); exp; over the sum or 1.
    """
    raise NotImplementedError(
        'ex04: where(mask, scores, -inf); minus the row max (0 if none allowed); exp; over the '
        'sum or 1.')


def causal_attention(q, k, v):
    """Single-head causal self-attention: softmax(q k^T / sqrt(d_head) + causal mask) v.

    q, k: ndarrays (T, d_head); v: ndarray (T, d_v). Returns an ndarray (T, d_v) in which output t
    depends only on tokens 0..t. You may call `causal_mask` and `masked_softmax` from this module.

    Hint: masked_softmax(q @ k.T / sqrt(d_head), causal_mask(T)) @ v.
    """
    raise NotImplementedError('ex04: masked_softmax(q @ k.T / sqrt(d_head), causal_mask(T)) @ v.')


def moe_block(x, attention, attention_norm, moe, moe_norm):
    """One pre-norm Transformer block whose feed-forward layer is an MoE layer.

    x: Tensor (B, T, d). attention, attention_norm, moe_norm: callables mapping a Tensor (B, T, d)
    to a Tensor (B, T, d). moe: a callable mapping a Tensor (B, T, d) to (Tensor (B, T, d), the
    layer's auxiliary loss, a scalar Tensor already weighted by its coefficient).
    Pre-norm with residuals: h = x + attention(attention_norm(x)); (m, aux) = moe(moe_norm(h));
    the block returns (h + m, aux). Each callable is called exactly once; aux is passed on as it
    came (the block neither drops it nor cuts it from the graph), for the total loss.

    Hint: normalise the *input* of each sub-layer, add its output to the stream it read from.
    """
    raise NotImplementedError(
        'ex04: normalise the *input* of each sub-layer, add its output to the stream it read '
        'from.')


def total_loss(lm_loss, aux_losses):
    """The loss a training step minimises: the language-modelling loss plus every MoE layer's
    auxiliary loss.

    lm_loss: scalar Tensor. aux_losses: a list of scalar Tensors, one per MoE layer (each already
    weighted by its coefficient); empty for a dense model.
    Returns a scalar Tensor, lm_loss + sum of aux_losses, differentiable in every one of them (so
    backward reaches each router through its balancing loss).

    Hint: start from lm_loss and add each auxiliary loss as a Tensor (not its .item()).
    """
    raise NotImplementedError(
        'ex04: start from lm_loss and add each auxiliary loss as a Tensor (not its .item()).')
