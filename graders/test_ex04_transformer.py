"""Grades exercises/ex04_transformer.py: the causal mask, a masked softmax and causal attention."""
import math

import numpy as np
import pytest

from graders._checks import expect, expect_close, expect_equal, lesson

MODULE = "ex04_transformer"
see = lesson(MODULE)


@pytest.mark.exercise("causal_mask", points=1)
def test_causal_mask(fn):
    expect_equal(fn(3), [[True, False, False], [True, True, False], [True, True, True]],
                 "causal_mask(3) (query t sees keys 0..t)", see("Causal self-attention"))
    expect_equal(fn(1), [[True]], "causal_mask(1)", see("Causal self-attention"))


@pytest.mark.exercise("masked_softmax", points=1)
def test_masked_softmax_values(fn):
    scores = np.array([[1.0, 2.0, 3.0], [0.0, 5.0, 0.0]])
    mask = np.array([[True, True, False], [True, False, True]])
    e = math.e
    expect_close(fn(scores, mask), [[1 / (1 + e), e / (1 + e), 0.0], [0.5, 0.0, 0.5]],
                 "masked_softmax (masked positions get exactly 0)", see("Causal self-attention"))
    causal = fn(np.zeros((3, 3)), np.tril(np.ones((3, 3), dtype=bool)))
    expect_close(causal, [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]],
                 "masked_softmax of zeros under a causal mask", see("Causal self-attention"))


@pytest.mark.exercise("masked_softmax", points=1)
def test_masked_softmax_edge_cases(fn):
    scores = np.array([[1e4, -1e4, 3.0], [1.0, 2.0, 3.0]])
    mask = np.array([[True, True, False], [False, False, False]])
    expect_close(fn(scores, mask), [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                 "masked_softmax with scores of +-1e4 and a row with nothing allowed (all zeros, no NaN)",
                 see("Causal self-attention"))


@pytest.mark.exercise("causal_attention", points=1, uses=("causal_mask", "masked_softmax"))
def test_causal_attention_values(fn):
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    k = np.array([[2.0, 0.0], [0.0, 1.0]])
    v = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]])
    # Row 1 scores: q1.k0 = 0, q1.k1 = 2, scaled by 1/sqrt(2).
    w = np.exp([0.0, 2 / math.sqrt(2)])
    w /= w.sum()
    expect_close(fn(q, k, v), [v[0], w[0] * v[0] + w[1] * v[1]],
                 "causal_attention (softmax(q k^T / sqrt(d)) over the past, times v)", see("Causal self-attention"))


@pytest.mark.exercise("causal_attention", points=1, uses=("causal_mask", "masked_softmax"))
def test_causal_attention_ignores_the_future(fn):
    rng = np.random.default_rng(15)
    q, k, v = rng.standard_normal((6, 4)), rng.standard_normal((6, 4)), rng.standard_normal((6, 3))
    before = fn(q, k, v)
    k2, v2 = k.copy(), v.copy()
    k2[4:], v2[4:] = rng.standard_normal((2, 4)), rng.standard_normal((2, 3))
    after = fn(q, k2, v2)
    expect(np.allclose(before[:4], after[:4]), "outputs 0..3 after changing tokens 4 and 5",
           "unchanged (no token sees the future)", "changed", see("Causal self-attention"))
