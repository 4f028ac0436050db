"""Lesson 04, a tiny MoE Transformer (causal self-attention, and the block an MoE layer sits in):
reference answers.

Try the exercise first (`exercises/ex04_transformer.py`); grade it with
`python -m minimoe.grade ex04`.
"""
import math

import numpy as np


def causal_mask(n_tokens):
    """Which keys each query may attend to in a decoder: itself and the past.

    n_tokens: int T. Returns a bool ndarray (T, T): mask[t, s] is True exactly when s <= t.

    Hint: np.tril of a (T, T) array of ones, as bool.
    """
    return np.tril(np.ones((n_tokens, n_tokens), dtype=bool))


def masked_softmax(scores, mask):
    """Softmax over the last axis that gives masked-out positions exactly zero weight.

    scores: float ndarray (..., S). mask: bool ndarray broadcastable to scores; True = allowed.
    Returns an ndarray of scores' shape: each row sums to 1 over its allowed positions and is 0
    elsewhere; a row with no allowed position is all zeros (not NaN); finite for scores of 1e4.

    Hint: where(mask, scores, -inf); minus the row max (0 if none allowed); exp; over the sum or 1.
    """
    masked = np.where(mask, scores, -np.inf)
    row_max = masked.max(axis=-1, keepdims=True)
    row_max = np.where(np.isfinite(row_max), row_max, 0.0)  # an all-masked row has max -inf
    e = np.exp(masked - row_max)  # exp(-inf) = 0 at masked positions
    total = e.sum(axis=-1, keepdims=True)
    return e / np.where(total > 0, total, 1.0)


def causal_attention(q, k, v):
    """Single-head causal self-attention: softmax(q k^T / sqrt(d_head) + causal mask) v.

    q, k: ndarrays (T, d_head); v: ndarray (T, d_v). Returns an ndarray (T, d_v) in which output t
    depends only on tokens 0..t. You may call `causal_mask` and `masked_softmax` from this module.

    Hint: masked_softmax(q @ k.T / sqrt(d_head), causal_mask(T)) @ v.
    """
    scores = q @ k.T / math.sqrt(q.shape[-1])  # (T, T); the scale keeps the softmax from saturating
    weights = masked_softmax(scores, causal_mask(q.shape[0]))  # (T, T), lower triangular
    return weights @ v  # (T, d_v)


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
    h = x + attention(attention_norm(x))  # (B, T, d): the residual stream after attention
    mixed, aux = moe(moe_norm(h))  # the MoE reads a normalised copy of the stream
    return h + mixed, aux


def total_loss(lm_loss, aux_losses):
    """The loss a training step minimises: the language-modelling loss plus every MoE layer's
    auxiliary loss.

    lm_loss: scalar Tensor. aux_losses: a list of scalar Tensors, one per MoE layer (each already
    weighted by its coefficient); empty for a dense model.
    Returns a scalar Tensor, lm_loss + sum of aux_losses, differentiable in every one of them (so
    backward reaches each router through its balancing loss).

    Hint: start from lm_loss and add each auxiliary loss as a Tensor (not its .item()).
    """
    total = lm_loss
    for aux in aux_losses:  # summed, not averaged: each layer's coefficient is its own weight
        total = total + aux
    return total
