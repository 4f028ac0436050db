"""Lesson 04, a tiny MoE Transformer (causal self-attention): reference answers.

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
