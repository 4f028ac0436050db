"""Lesson 04, a tiny MoE Transformer (causal self-attention): exercises.

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
