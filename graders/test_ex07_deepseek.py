"""Grades exercises/ex07_deepseek.py: fine-grained experts, shared experts, the DeepSeek-V3 gate
and its auxiliary-loss-free bias update."""
import numpy as np
import pytest

from graders._checks import expect, expect_close, expect_equal, expect_raises, lesson

MODULE = "ex07_deepseek"
see = lesson(MODULE)


def _sigmoid(x):
    return 1 / (1 + np.exp(-x))


@pytest.mark.exercise("segment_experts", points=1)
def test_segment_experts_layout(fn):
    rng = np.random.default_rng(20)
    w_in, w_out = rng.standard_normal((2, 3, 8)), rng.standard_normal((2, 8, 3))
    fine_in, fine_out = fn(w_in, w_out, 4)
    section = see("Fine-grained experts")
    expect_equal(np.shape(fine_in), (8, 3, 2), "fine_in shape for E=2, d=3, h=8, m=4", section)
    expect_equal(np.shape(fine_out), (8, 2, 3), "fine_out shape", section)
    expect_close(fine_in[1 * 4 + 2], w_in[1][:, 4:6], "fine_in[e*m + j] for e=1, j=2 (hidden units 4..5 of "
                 "expert 1)", section)
    expect_close(fine_out[1 * 4 + 2], w_out[1][4:6], "fine_out[e*m + j] for e=1, j=2", section)
    expect_raises(ValueError, lambda: fn(w_in, w_out, 3), "segment_experts with m=3 not dividing h=8", section)


@pytest.mark.exercise("segment_experts", points=1)
def test_segment_experts_sum_to_the_original(fn):
    rng = np.random.default_rng(21)
    w_in, w_out, x = rng.standard_normal((3, 4, 6)), rng.standard_normal((3, 6, 4)), rng.standard_normal((5, 4))
    fine_in, fine_out = fn(w_in, w_out, 3)
    relu = lambda z: np.maximum(z, 0)  # noqa: E731
    original = np.stack([relu(x @ w_in[e]) @ w_out[e] for e in range(3)])  # (E, T, d)
    fine = np.stack([relu(x @ fine_in[f]) @ fine_out[f] for f in range(9)]).reshape(3, 3, 5, 4).sum(axis=1)
    expect_close(fine, original, "sum of the 3 fine experts of each expert (ReLU FFN)", see("Fine-grained experts"))


@pytest.mark.exercise("moe_with_shared_experts", points=1)
def test_moe_with_shared_experts(fn):
    rng = np.random.default_rng(22)
    x = rng.standard_normal((4, 3))
    routed, shared = rng.standard_normal((5, 3, 3)), rng.standard_normal((2, 3, 3))
    gates = np.zeros((4, 5))
    gates[[0, 1, 2, 3], [1, 4, 1, 0]] = [0.7, 1.0, 0.2, 0.5]
    gates[[0, 2], [3, 2]] = [0.3, 0.8]
    expected = np.stack([sum(gates[t, e] * x[t] @ routed[e] for e in range(5)) + x[t] @ shared[0] + x[t] @ shared[1]
                         for t in range(4)])
    section = see("Shared experts")
    expect_close(fn(x, gates, routed, shared), expected, "routed (gate-weighted) + shared (always on, weight 1)",
                 section)
    expect_close(fn(x, np.zeros((4, 5)), routed, shared), x @ shared[0] + x @ shared[1],
                 "output with every gate 0 (the shared experts alone)", section)


@pytest.mark.exercise("deepseek_v3_gate", points=2)
def test_deepseek_v3_gate_hand_case(fn):
    logits = np.array([[0.0, 1.0, 2.0, -2.0]])
    bias = np.array([0.0, 0.0, -5.0, 3.0])  # expert 2 pushed out of the choice, expert 3 pulled in
    expert_index, gates = fn(logits, bias, 2, scaling=2.5)
    s = _sigmoid(logits[0])
    section = see("The DeepSeek-V3 gate")
    expect_equal(expert_index, [[3, 1]], "experts chosen by sigmoid(logits) + bias (k=2)", section)
    expect_close(gates, [[2.5 * s[3] / (s[3] + s[1]), 2.5 * s[1] / (s[3] + s[1])]],
                 "gates = the *unbiased* sigmoid scores of the chosen, normalised, times 2.5", section)


@pytest.mark.exercise("deepseek_v3_gate", points=1)
def test_deepseek_v3_gate_invariants(fn):
    rng = np.random.default_rng(23)
    logits = 3 * rng.standard_normal((10, 8))
    section = see("The DeepSeek-V3 gate")
    expert_index, gates = fn(logits, np.zeros(8), 3, scaling=1.0)
    expect_equal(np.sort(expert_index, axis=1), np.sort(np.argsort(-logits, axis=1)[:, :3], axis=1),
                 "chosen experts with zero bias (the top 3 logits)", section)
    expect_close(np.sum(gates, axis=1), np.ones(10), "gate sums with scaling 1", section)
    _, big = fn(1000 * logits, np.zeros(8), 3, scaling=2.5)
    expect(np.all(np.isfinite(big)), "gates for logits near +-1000", "finite", "NaN or inf", section)


@pytest.mark.exercise("update_expert_bias", points=1)
def test_update_expert_bias_step(fn):
    got = fn(np.array([0.5, 0.0, -0.1]), np.array([10.0, 2.0, 6.0]), 0.01)  # mean load 6
    expect_close(got, [0.49, 0.01, -0.1], "bias after one step with load [10, 2, 6] (rate 0.01)",
                 see("Auxiliary-loss-free balancing"))


@pytest.mark.exercise("update_expert_bias", points=1)
def test_update_expert_bias_balances_the_load(fn):
    rng = np.random.default_rng(24)
    logits = rng.standard_normal((400, 4)) + np.array([1.5, 0.5, 0.0, -1.0])  # expert 0 is popular
    bias = np.zeros(4)
    start = np.bincount(np.argmax(logits, axis=1), minlength=4)
    for _ in range(300):
        load = np.bincount(np.argmax(logits + bias, axis=1), minlength=4)
        bias = fn(bias, load, 0.01)
    load = np.bincount(np.argmax(logits + bias, axis=1), minlength=4)
    expect(load.max() <= 1.2 * load.mean(), "max load after 300 bias updates (top-1, 400 tokens)",
           f"within 20% of the mean (it started at {start.max()} against a mean of 100)", str(load.tolist()),
           see("Auxiliary-loss-free balancing"))
