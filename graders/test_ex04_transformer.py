"""Grades exercises/ex04_transformer.py: the causal mask, a masked softmax, causal attention, and the
pre-norm block an MoE layer sits in, with its auxiliary loss carried into the total loss."""
import math

import numpy as np
import pytest

import minimoe as mm
import minimoe.functional as F
from graders._checks import expect, expect_close, expect_equal, lesson
from minimoe.models.transformer import Block, Transformer
from minimoe.ops import attention

MODULE = "ex04_transformer"
see = lesson(MODULE)
TWINS = {
    "causal_mask": [attention.attention_forward],
    "masked_softmax": [attention.attention_forward, F.softmax],
    "causal_attention": [attention.Attention, attention.attention_forward, F.attention],
    "moe_block": [Block],
    "total_loss": [Transformer.aux_loss],
}


def _masked_softmax_by_hand(scores, mask):
    mask = np.broadcast_to(mask, scores.shape)
    out = np.zeros(scores.shape)
    for index in np.ndindex(scores.shape[:-1]):
        allowed = mask[index]
        if allowed.any():
            e = np.exp(scores[index][allowed] - scores[index][allowed].max())
            out[index][allowed] = e / e.sum()
    return out


@pytest.mark.exercise("causal_mask", points=1)
def test_causal_mask(fn, rng):
    section = see("Causal self-attention")
    expect_equal(fn(3), [[True, False, False], [True, True, False], [True, True, True]],
                 "causal_mask(3) (query t sees keys 0..t)", section, dtype="b")
    expect_equal(fn(1), [[True]], "causal_mask(1)", section, dtype="b")
    n = int(rng.integers(4, 12))
    expect_equal(fn(n), np.arange(n)[None, :] <= np.arange(n)[:, None], f"causal_mask({n})", section, dtype="b")


@pytest.mark.exercise("masked_softmax", points=1)
def test_masked_softmax_values(fn, rng):
    scores = np.array([[1.0, 2.0, 3.0], [0.0, 5.0, 0.0]])
    mask = np.array([[True, True, False], [True, False, True]])
    e = math.e
    section = see("Causal self-attention")
    expect_close(fn(scores, mask), [[1 / (1 + e), e / (1 + e), 0.0], [0.5, 0.0, 0.5]],
                 "masked_softmax (masked positions get exactly 0)", section)
    causal = fn(np.zeros((3, 3)), np.tril(np.ones((3, 3), dtype=bool)))
    expect_close(causal, [[1, 0, 0], [0.5, 0.5, 0], [1 / 3, 1 / 3, 1 / 3]],
                 "masked_softmax of zeros under a causal mask", section)
    scores = 3 * rng.standard_normal((2, 4, 5))
    mask = rng.uniform(size=(4, 5)) < 0.6  # broadcast over the leading axis
    expect_close(fn(scores, mask), _masked_softmax_by_hand(scores, mask),
                 "masked_softmax of random (2, 4, 5) scores with a random (4, 5) mask", section)


@pytest.mark.exercise("masked_softmax", points=1)
def test_masked_softmax_edge_cases(fn):
    scores = np.array([[1e4, -1e4, 3.0], [1.0, 2.0, 3.0]])
    mask = np.array([[True, True, False], [False, False, False]])
    expect_close(fn(scores, mask), [[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]],
                 "masked_softmax with scores of +-1e4 and a row with nothing allowed (all zeros, no NaN)",
                 see("Causal self-attention"))


def _attention_by_hand(q, k, v):
    n = q.shape[0]
    scores = q @ k.T / math.sqrt(q.shape[-1])
    return _masked_softmax_by_hand(scores, np.tril(np.ones((n, n), dtype=bool))) @ v


@pytest.mark.exercise("causal_attention", points=1, uses=("causal_mask", "masked_softmax"))
def test_causal_attention_values(fn, rng):
    q = np.array([[1.0, 0.0], [0.0, 2.0]])
    k = np.array([[2.0, 0.0], [0.0, 1.0]])
    v = np.array([[1.0, 2.0, 3.0], [-1.0, 0.0, 1.0]])
    # Row 1 scores: q1.k0 = 0, q1.k1 = 2, scaled by 1/sqrt(2).
    w = np.exp([0.0, 2 / math.sqrt(2)])
    w /= w.sum()
    section = see("Causal self-attention")
    expect_close(fn(q, k, v), [v[0], w[0] * v[0] + w[1] * v[1]],
                 "causal_attention (softmax(q k^T / sqrt(d)) over the past, times v)", section)
    q, k, v = rng.standard_normal((5, 3)), rng.standard_normal((5, 3)), rng.standard_normal((5, 4))
    expect_close(fn(q, k, v), _attention_by_hand(q, k, v), "causal_attention on random q, k (5, 3) and v (5, 4)",
                 section)


@pytest.mark.exercise("causal_attention", points=1, uses=("causal_mask", "masked_softmax"))
def test_causal_attention_ignores_the_future(fn, rng):
    q, k, v = rng.standard_normal((7, 4)), rng.standard_normal((7, 4)), rng.standard_normal((7, 2))
    section = see("Causal self-attention")
    before = fn(q, k, v)
    expect_close(before, _attention_by_hand(q, k, v), "causal_attention on random q, k (7, 4) and v (7, 2)",
                 section)
    k2, v2 = k.copy(), v.copy()
    k2[4:], v2[4:] = rng.standard_normal((3, 4)), rng.standard_normal((3, 2))
    after = fn(q, k2, v2)
    expect(np.allclose(before[:4], after[:4]), "outputs 0..3 after changing tokens 4 to 6",
           "unchanged (no token sees the future)", "changed", see("Causal self-attention"))


# ---- the block -----------------------------------------------------------------------------------

class _Parts:
    """Four different sub-layers on (B, T, d) Tensors, each counting its calls; the MoE's auxiliary
    loss depends on a router weight, so its gradient shows whether the loss kept its graph."""

    def __init__(self, rng, d):
        self.a = rng.standard_normal((d, d)) / math.sqrt(d)
        self.m = rng.standard_normal((d, d)) / math.sqrt(d)
        self.scale1, self.scale2 = rng.uniform(0.5, 2.0, d), rng.uniform(0.5, 2.0, d)
        self.router = mm.tensor(rng.standard_normal(d), dtype=np.float64, requires_grad=True)
        self.calls = {"attention": 0, "attention_norm": 0, "moe": 0, "moe_norm": 0}

    @staticmethod
    def _norm(x, scale):
        return (x - x.mean(axis=-1, keepdims=True)) * scale

    def attention_norm(self, x):
        self.calls["attention_norm"] += 1
        return self._norm(x, self.scale1)

    def moe_norm(self, x):
        self.calls["moe_norm"] += 1
        return self._norm(x, self.scale2)

    def attention(self, x):
        self.calls["attention"] += 1
        return (x @ self.a).tanh()

    def moe(self, x):
        self.calls["moe"] += 1
        return (x @ self.m) * 0.5, ((x * self.router).sum(axis=-1) ** 2).mean() * 0.01

    def by_hand(self, x):
        """(y, aux, d aux / d router) in NumPy."""
        def norm(v, scale):
            return (v - v.mean(axis=-1, keepdims=True)) * scale
        h = x + np.tanh(norm(x, self.scale1) @ self.a)
        u = norm(h, self.scale2)
        r = self.router.numpy()
        s = u @ r
        return h + 0.5 * (u @ self.m), 0.01 * (s**2).mean(), 0.01 * 2 * (s[..., None] * u).reshape(-1, len(r)).sum(0) / s.size


@pytest.mark.exercise("moe_block", points=2)
def test_moe_block(fn, rng):
    section = see("The block, and where the MoE goes")
    for shape in [(2, 3, 4), (1, 5, 6)]:
        parts = _Parts(rng, shape[-1])
        x = rng.standard_normal(shape)
        got = fn(mm.tensor(x, dtype=np.float64), parts.attention, parts.attention_norm, parts.moe, parts.moe_norm)
        expect(isinstance(got, tuple) and len(got) == 2, "moe_block's result", "a pair (output, aux)",
               type(got).__name__, section)
        y, aux = got
        expected_y, expected_aux, expected_grad = parts.by_hand(x)
        what = f"moe_block on x of shape {shape}"
        expect(parts.calls == {name: 1 for name in parts.calls}, f"{what}: calls of each sub-layer",
               "each called once", str(parts.calls), section)
        expect_close(y, expected_y, f"{what}: output (pre-norm sub-layers, each added to the stream it read)",
                     section)
        expect_close(aux, expected_aux, f"{what}: the auxiliary loss passed on", section)
        expect(isinstance(aux, mm.Tensor), f"{what}: the auxiliary loss", "a Tensor (its graph kept)",
               type(aux).__name__, section)
        aux.backward()
        expect_close(parts.router.grad if parts.router.grad is not None else np.zeros(shape[-1]), expected_grad,
                     f"{what}: d aux / d router weight (the graph must reach the router)", section)


@pytest.mark.exercise("total_loss", points=1)
def test_total_loss(fn, rng):
    section = see("The block, and where the MoE goes")
    for n_layers in (3, 1, 0):
        lm = mm.tensor(rng.uniform(1, 4), dtype=np.float64, requires_grad=True)
        leaves = [mm.tensor(rng.uniform(0.1, 1.0, 3), dtype=np.float64, requires_grad=True) for _ in range(n_layers)]
        weights = rng.uniform(0.01, 0.1, n_layers)
        aux = [(leaf * leaf).sum() * w for leaf, w in zip(leaves, weights)]
        what = f"total_loss with {n_layers} MoE layer(s)"
        total = fn(lm, aux)
        expected = lm.item() + sum(float((leaf.numpy() ** 2).sum() * w) for leaf, w in zip(leaves, weights))
        expect_close(total, expected, f"{what} (LM loss + the sum of the auxiliary losses)", section)
        expect(isinstance(total, mm.Tensor), what, "a Tensor", type(total).__name__, section)
        total.backward()
        expect_close(lm.grad if lm.grad is not None else 0.0, 1.0, f"{what}: d total / d LM loss", section)
        for i, (leaf, w) in enumerate(zip(leaves, weights)):
            grad = leaf.grad if leaf.grad is not None else np.zeros(3)
            expect_close(grad, 2 * w * leaf.numpy(), f"{what}: gradient reaching layer {i}'s router through its "
                         "auxiliary loss", section)
