"""Grades exercises/ex02_sparse_gating.py: top-k and noisy top-k gating, the importance and load losses."""
import math

import numpy as np
import pytest

import minimoe as mm
import minimoe.functional as F
from graders._checks import expect, expect_close, expect_equal, expect_gradients, expect_raises, lesson
from minimoe.moe import losses
from minimoe.moe.routers.noisy import NoisyTopKRouter
from minimoe.moe.routers.softmax import TopKRouter

MODULE = "ex02_sparse_gating"
see = lesson(MODULE)
TWINS = {
    "topk_gating": [F.topk, TopKRouter],
    "noisy_topk_gating": [NoisyTopKRouter, F.topk],
    "importance_loss": [losses.importance_loss, losses.importance, losses.cv_squared],
    "load_loss": [losses.load_loss, losses.cv_squared, NoisyTopKRouter],
}


def _phi(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


def _top_k(values, k):
    """(T, k) indices of each row's k largest, largest first, ties to the lower index."""
    return np.argsort(-values, axis=-1, kind="stable")[:, :k]


def _kept_softmax(values, k):
    """The softmax over each row's top k (ties to the lower index), zero elsewhere."""
    top = _top_k(values, k)
    kept = np.take_along_axis(values, top, axis=-1)
    e = np.exp(kept - kept.max(axis=-1, keepdims=True))
    out = np.zeros(values.shape)
    np.put_along_axis(out, top, e / e.sum(axis=-1, keepdims=True), axis=-1)
    return out


@pytest.mark.exercise("topk_gating", points=1)
def test_topk_gating_values(fn):
    gates, indices = fn(mm.tensor(np.array([[1.0, 2.0, 3.0, 0.0]]), dtype=np.float64), 2)
    e2, e3 = math.exp(2), math.exp(3)
    section = see("Top-k gating")
    expect_close(gates, [[0.0, e2 / (e2 + e3), e3 / (e2 + e3), 0.0]],
                 "topk_gating([[1, 2, 3, 0]], k=2) gates (softmax, keep 2, renormalise)", section)
    expect_equal(indices, [[2, 1]], "topk_gating([[1, 2, 3, 0]], k=2) indices (largest first)", section,
                 dtype="iu")
    tied = mm.tensor(np.array([[0.5, 2.0, 2.0, 2.0, 0.5]]), dtype=np.float64)
    gates, indices = fn(tied, 2)
    expect_equal(indices, [[1, 2]], "topk_gating([[0.5, 2, 2, 2, 0.5]], k=2) indices (ties: lower expert first)",
                 section)
    expect_close(gates, [[0.0, 0.5, 0.5, 0.0, 0.0]], "topk_gating gates with tied logits", section)
    logits = mm.tensor(np.zeros((2, 6)), dtype=np.float64)
    for k in (0, 7, -1):
        expect_raises(ValueError, lambda: fn(logits, k), f"topk_gating with k={k} and 6 experts", section)


@pytest.mark.exercise("topk_gating", points=1)
def test_topk_gating_random_k_and_dtypes(fn, rng):
    section = see("Top-k gating")
    n_experts = int(rng.integers(5, 9))
    for k, dtype in [(3, np.float64), (int(rng.integers(4, n_experts)), np.float32), (n_experts, np.float64)]:
        logits = rng.standard_normal((7, n_experts)) * 2
        gates, indices = fn(mm.tensor(logits, dtype=dtype), k)
        probs = np.exp(logits - logits.max(axis=1, keepdims=True))
        what = f"topk_gating on random logits (7 tokens, {n_experts} experts, k={k}, {np.dtype(dtype).name})"
        expect_equal(indices, _top_k(probs, k), f"{what}: indices, largest gate first", section, dtype="iu")
        expect_close(gates, _kept_softmax(logits, k), f"{what}: gates", section, dtype=dtype,
                     **(dict(rtol=1e-5, atol=1e-6) if dtype == np.float32 else {}))


@pytest.mark.exercise("topk_gating", points=1)
def test_topk_gating_gradients(fn, rng):
    logits = rng.standard_normal((5, 4))
    expect_close(fn(mm.tensor(logits, dtype=np.float64), 3)[0], _kept_softmax(logits, 3),
                 "topk_gating gates on random logits, k=3", see("Top-k gating"))
    expect_gradients(lambda x: fn(x, 3)[0], [logits], "topk_gating gates, d gates / d logits", see("Top-k gating"))


@pytest.mark.exercise("noisy_topk_gating", points=1)
def test_noisy_topk_gating_values(fn):
    # H = x W_g + noise * softplus(x W_noise) = [0, 1, 2] + [3, 0, 0] * softplus(0) = [3 ln 2, 1, 2]
    gates = fn(np.array([[1.0]]), np.array([[0.0, 1.0, 2.0]]), np.zeros((1, 3)), np.array([[3.0, 0.0, 0.0]]), 2)
    kept = np.exp([3 * math.log(2), 2.0])
    section = see("Noisy top-k")
    expect_close(gates, [[kept[0] / kept.sum(), 0.0, kept[1] / kept.sum()]],
                 "noisy_topk_gating with H = [3 ln 2, 1, 2], k=2 (noise scaled by softplus)", section)
    tied = fn(np.array([[1.0]]), np.array([[1.0, 1.0, 1.0, 0.0]]), np.zeros((1, 4)), np.zeros((1, 4)), 2)
    expect_close(tied, [[0.5, 0.5, 0.0, 0.0]], "noisy_topk_gating with H = [1, 1, 1, 0], k=2 (ties: the lower "
                 "experts are kept)", section)
    x, w = np.ones((2, 1)), np.zeros((1, 4))
    for k in (0, 5):
        expect_raises(ValueError, lambda: fn(x, w, w, np.zeros((2, 4)), k),
                      f"noisy_topk_gating with k={k} and 4 experts", section)


@pytest.mark.exercise("noisy_topk_gating", points=1)
def test_noisy_topk_gating_random(fn, rng):
    x, w_gate, w_noise = rng.standard_normal((12, 5)), rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    section = see("Noisy top-k")
    noise = rng.standard_normal((12, 6))
    noisy = x @ w_gate + noise * np.logaddexp(0.0, x @ w_noise)
    for k in (1, 4, 6):
        expect_close(fn(x, w_gate, w_noise, noise, k), _kept_softmax(noisy, k),
                     f"noisy_topk_gating on random inputs (12 tokens, 6 experts, k={k})", section)
    huge = fn(1000 * x, w_gate, w_noise, noise, 2)
    big = 1000 * x @ w_gate + noise * np.logaddexp(0.0, 1000 * x @ w_noise)
    expect_close(huge, _kept_softmax(big, 2), "noisy_topk_gating on logits near 1e4 (a stable softplus and "
                 "softmax)", section)


def _cv_squared(values):
    return values.var() / values.mean() ** 2


@pytest.mark.exercise("importance_loss", points=1)
def test_importance_loss_values(fn):
    section = see("Balancing losses")
    gates = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 2.0]])  # importance [1, 2, 3]
    got = fn(mm.tensor(gates, dtype=np.float64))
    expect_close(got, (2 / 3) / 4, "importance_loss with importance [1, 2, 3] (population variance 2/3, mean 2)",
                 section)
    uniform = fn(mm.tensor(np.full((4, 3), 1 / 3), dtype=np.float64))
    expect_close(uniform, 0.0, "importance_loss of perfectly balanced gates", section, atol=1e-12)


@pytest.mark.exercise("importance_loss", points=1)
def test_importance_loss_gradients(fn, rng):
    gates = rng.uniform(0.1, 1.0, (6, 4))
    expect_close(fn(mm.tensor(gates, dtype=np.float64)), _cv_squared(gates.sum(axis=0)),
                 "importance_loss on random gates", see("Balancing losses"))
    expect_gradients(fn, [gates], "importance_loss gradients", see("Balancing losses"))


def _load_by_hand(clean, noisy, std, k):
    """Expert by expert: the k-th largest of the other experts' H is the bar to clear."""
    load = np.zeros(clean.shape[1])
    for i in range(clean.shape[1]):
        others = np.delete(noisy, i, axis=1)
        bar = -np.sort(-others, axis=1)[:, k - 1]
        load[i] = sum(_phi(z) for z in (clean[:, i] - bar) / std[:, i])
    return load


def _expect_load(fn, clean, noisy, std, k, what, section):
    """The tolerance admits every correct Phi the lesson teaches: math.erf, or the engine's own
    normal_cdf (good to about 1e-7 per token)."""
    loss, load = fn(clean, noisy, std, k)
    expected = _load_by_hand(clean, noisy, std, k)
    n_tokens = clean.shape[0]
    expect_close(load, expected, f"load with {what}", section, rtol=1e-6, atol=2e-7 * n_tokens)
    expect_close(loss, _cv_squared(expected), f"load_loss = CV^2 of the load, with {what}", section,
                 rtol=1e-5, atol=1e-6)
    expect(isinstance(loss, float), f"load_loss's loss with {what}", "a Python float", type(loss).__name__, section)


@pytest.mark.exercise("load_loss", points=2)
def test_load_loss_values(fn, rng):
    # One token, k=1: expert 0 leads the noisy logits, so its threshold is the runner-up (0.5);
    # experts 1 and 2 would have to beat the leader (2.0).
    clean, noisy, std = np.array([[1.0, 0.0, 0.0]]), np.array([[2.0, 0.5, -1.0]]), np.ones((1, 3))
    section = see("The load estimator")
    _expect_load(fn, clean, noisy, std, 1, "clean [1, 0, 0], noisy [2, 0.5, -1], std 1, k=1", section)
    for k in (1, 3):
        clean = rng.standard_normal((9, 5))
        std = np.logaddexp(0.0, rng.standard_normal((9, 5)))
        noisy = clean + std * rng.standard_normal((9, 5))
        _expect_load(fn, clean, noisy, std, k, f"random inputs (9 tokens, 5 experts, k={k})", section)


@pytest.mark.exercise("load_loss", points=1)
def test_load_loss_tends_to_counts(fn, rng):
    clean = rng.standard_normal((30, 5))
    _, load = fn(clean, clean, np.full((30, 5), 1e-6), 2)
    counts = np.bincount(_top_k(clean, 2).reshape(-1), minlength=5)
    expect_close(load, counts, "load with tiny noise (it becomes the top-2 counts)", see("The load estimator"),
                 atol=1e-6)
