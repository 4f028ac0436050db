"""Grades exercises/ex02_sparse_gating.py: top-k and noisy top-k gating, the importance and load losses."""
import math

import numpy as np
import pytest

import minimoe as mm
from graders._checks import as_array, expect, expect_close, expect_equal, expect_gradients, expect_raises, lesson

MODULE = "ex02_sparse_gating"
see = lesson(MODULE)


def _phi(z):
    return 0.5 * (1 + math.erf(z / math.sqrt(2)))


@pytest.mark.exercise("topk_gating", points=1)
def test_topk_gating_values(fn):
    gates, indices = fn(mm.tensor(np.array([[1.0, 2.0, 3.0, 0.0]]), dtype=np.float64), 2)
    e2, e3 = math.exp(2), math.exp(3)
    section = see("Top-k gating")
    expect_close(gates, [[0.0, e2 / (e2 + e3), e3 / (e2 + e3), 0.0]],
                 "topk_gating([[1, 2, 3, 0]], k=2) gates (softmax, keep 2, renormalise)", section)
    expect_equal(indices, [[2, 1]], "topk_gating([[1, 2, 3, 0]], k=2) indices (largest first)", section)
    logits = mm.tensor(np.random.default_rng(6).standard_normal((10, 6)), dtype=np.float64)
    gates = as_array(fn(logits, 3)[0])
    expect_close(gates.sum(axis=1), np.ones(10), "row sums of top-3 gates", section)
    expect_equal((gates > 0).sum(axis=1), np.full(10, 3), "non-zero gates per row with k=3", section)
    expect_raises(ValueError, lambda: fn(logits, 7), "topk_gating with k=7 > 6 experts", section)


@pytest.mark.exercise("topk_gating", points=1)
def test_topk_gating_gradients(fn):
    logits = np.random.default_rng(7).standard_normal((5, 4))
    expect_gradients(lambda x: fn(x, 2)[0], [logits], "topk_gating gates, d gates / d logits", see("Top-k gating"))


@pytest.mark.exercise("noisy_topk_gating", points=1)
def test_noisy_topk_gating_values(fn):
    # H = x W_g + noise * softplus(x W_noise) = [0, 1, 2] + [3, 0, 0] * softplus(0) = [3 ln 2, 1, 2]
    gates = fn(np.array([[1.0]]), np.array([[0.0, 1.0, 2.0]]), np.zeros((1, 3)), np.array([[3.0, 0.0, 0.0]]), 2)
    kept = np.exp([3 * math.log(2), 2.0])
    expect_close(gates, [[kept[0] / kept.sum(), 0.0, kept[1] / kept.sum()]],
                 "noisy_topk_gating with H = [3 ln 2, 1, 2], k=2 (noise scaled by softplus)", see("Noisy top-k"))


@pytest.mark.exercise("noisy_topk_gating", points=1)
def test_noisy_topk_gating_invariants(fn):
    rng = np.random.default_rng(8)
    x, w_gate, w_noise = rng.standard_normal((12, 5)), rng.standard_normal((5, 6)), rng.standard_normal((5, 6))
    section = see("Noisy top-k")
    gates = fn(x, w_gate, w_noise, rng.standard_normal((12, 6)), 2)
    expect_close(gates.sum(axis=1), np.ones(12), "row sums of noisy top-2 gates", section)
    expect_equal((gates > 0).sum(axis=1), np.full(12, 2), "non-zero gates per row with k=2", section)
    clean = x @ w_gate
    without_noise = fn(x, w_gate, w_noise, np.zeros((12, 6)), 6)
    expect_close(without_noise, np.exp(clean) / np.exp(clean).sum(axis=1, keepdims=True),
                 "noisy_topk_gating with zero noise and k=E (the plain softmax)", section)
    huge = fn(1000 * x, w_gate, w_noise, rng.standard_normal((12, 6)), 2)
    expect(np.all(np.isfinite(huge)) and np.allclose(huge.sum(axis=1), 1), "noisy_topk_gating on logits near 1e4",
           "finite gates summing to 1", "NaN or inf (use a stable softplus and softmax)", section)


@pytest.mark.exercise("importance_loss", points=1)
def test_importance_loss_values(fn):
    section = see("Balancing losses")
    gates = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 2.0]])  # importance [1, 2, 3]
    got = fn(mm.tensor(gates, dtype=np.float64))
    expect_close(got, (2 / 3) / 4, "importance_loss with importance [1, 2, 3] (population variance 2/3, mean 2)",
                 section)
    uniform = fn(mm.tensor(np.full((4, 3), 1 / 3), dtype=np.float64))
    expect_close(uniform, 0.0, "importance_loss of perfectly balanced gates", section)


@pytest.mark.exercise("importance_loss", points=1)
def test_importance_loss_gradients(fn):
    gates = np.random.default_rng(9).uniform(0.1, 1.0, (6, 4))
    expect_gradients(fn, [gates], "importance_loss gradients", see("Balancing losses"))


@pytest.mark.exercise("load_loss", points=2)
def test_load_loss_values(fn):
    # One token, k=1: expert 0 leads the noisy logits, so its threshold is the runner-up (0.5);
    # experts 1 and 2 would have to beat the leader (2.0).
    clean, noisy, std = np.array([[1.0, 0.0, 0.0]]), np.array([[2.0, 0.5, -1.0]]), np.ones((1, 3))
    loss, load = fn(clean, noisy, std, 1)
    expected = np.array([_phi(0.5), _phi(-2.0), _phi(-2.0)])
    section = see("The load estimator")
    expect_close(load, expected, "load with clean [1, 0, 0], noisy [2, 0.5, -1], std 1, k=1", section)
    expect_close(loss, expected.var() / expected.mean() ** 2, "load_loss = CV^2 of that load", section)


@pytest.mark.exercise("load_loss", points=1)
def test_load_loss_tends_to_counts(fn):
    rng = np.random.default_rng(10)
    clean = rng.standard_normal((30, 5))
    _, load = fn(clean, clean, np.full((30, 5), 1e-6), 2)
    top2 = np.argsort(-clean, axis=1)[:, :2]
    counts = np.bincount(top2.reshape(-1), minlength=5)
    expect_close(load, counts, "load with tiny noise (it becomes the top-2 counts)", see("The load estimator"),
                 atol=1e-6)
