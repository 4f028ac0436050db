"""Grades exercises/ex07_deepseek.py: fine-grained experts, shared experts, the DeepSeek-V3 gate
and its auxiliary-loss-free bias update."""
import numpy as np
import pytest

from graders._checks import expect, expect_close, expect_equal, expect_raises, lesson
from minimoe.moe import losses
from minimoe.moe.routers.deepseek import DeepSeekV3Router

MODULE = "ex07_deepseek"
see = lesson(MODULE)
TWINS = {
    "deepseek_v3_gate": [DeepSeekV3Router],
    "update_expert_bias": [losses.aux_free_bias_update, DeepSeekV3Router],
}


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
def test_segment_experts_random_sizes(fn, rng):
    n_experts, d, m, part = 3, 5, 2, 7  # no two sizes alike: E, d, m, h/m
    w_in, w_out = rng.standard_normal((n_experts, d, m * part)), rng.standard_normal((n_experts, m * part, d))
    fine_in, fine_out = fn(w_in, w_out, m)
    section = see("Fine-grained experts")
    expected_in = np.stack([w_in[e][:, j * part:(j + 1) * part] for e in range(n_experts) for j in range(m)])
    expected_out = np.stack([w_out[e][j * part:(j + 1) * part] for e in range(n_experts) for j in range(m)])
    expect_close(fine_in, expected_in, f"fine_in for E={n_experts}, d={d}, h={m * part}, m={m}", section)
    expect_close(fine_out, expected_out, f"fine_out for E={n_experts}, d={d}, h={m * part}, m={m}", section)


@pytest.mark.exercise("segment_experts", points=1)
def test_segment_experts_sum_to_the_original(fn, rng):
    w_in, w_out, x = rng.standard_normal((3, 4, 6)), rng.standard_normal((3, 6, 4)), rng.standard_normal((5, 4))
    fine_in, fine_out = fn(w_in, w_out, 3)
    relu = lambda z: np.maximum(z, 0)  # noqa: E731
    original = np.stack([relu(x @ w_in[e]) @ w_out[e] for e in range(3)])  # (E, T, d)
    fine = np.stack([relu(x @ fine_in[f]) @ fine_out[f] for f in range(9)]).reshape(3, 3, 5, 4).sum(axis=1)
    expect_close(fine, original, "sum of the 3 fine experts of each expert (ReLU FFN)", see("Fine-grained experts"))


@pytest.mark.exercise("moe_with_shared_experts", points=1)
def test_moe_with_shared_experts(fn, rng):
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
    x, gates = rng.standard_normal((6, 2)), rng.uniform(size=(6, 3))
    routed, shared = rng.standard_normal((3, 2, 2)), rng.standard_normal((1, 2, 2))
    expected = np.stack([sum(gates[t, e] * x[t] @ routed[e] for e in range(3)) + x[t] @ shared[0] for t in range(6)])
    expect_close(fn(x, gates, routed, shared), expected, "6 tokens, d = 2, 3 routed experts, 1 shared expert",
                 section)


@pytest.mark.exercise("deepseek_v3_gate", points=2)
def test_deepseek_v3_gate_hand_case(fn):
    logits = np.array([[0.0, 1.0, 2.0, -2.0]])
    bias = np.array([0.0, 0.0, -5.0, 3.0])  # expert 2 pushed out of the choice, expert 3 pulled in
    expert_index, gates = fn(logits, bias, 2, scaling=2.5)
    s = _sigmoid(logits[0])
    section = see("The DeepSeek-V3 gate")
    expect_equal(expert_index, [[3, 1]], "experts chosen by sigmoid(logits) + bias (k=2)", section, dtype="iu")
    expect_close(gates, [[2.5 * s[3] / (s[3] + s[1]), 2.5 * s[1] / (s[3] + s[1])]],
                 "gates = the *unbiased* sigmoid scores of the chosen, normalised, times 2.5", section)
    _, default = fn(logits, bias, 2)
    expect_close(default, [[s[3] / (s[3] + s[1]), s[1] / (s[3] + s[1])]],
                 "gates with the default scaling (1, as minimoe's DeepSeekV3Router)", section)
    tied_index, _ = fn(np.array([[1.0, 3.0, 1.0, 3.0, 3.0]]), np.zeros(5), 4)
    expect_equal(tied_index, [[1, 3, 4, 0]], "experts for logits [1, 3, 1, 3, 3], k=4 (ties: lower expert first)",
                 section)


@pytest.mark.exercise("deepseek_v3_gate", points=1)
def _gate_by_hand(logits, bias, k, scaling):
    s = _sigmoid(logits)
    index = np.argsort(-(s + bias), axis=1, kind="stable")[:, :k]
    chosen = np.take_along_axis(s, index, axis=1)
    return index, chosen / chosen.sum(axis=1, keepdims=True) * scaling


@pytest.mark.exercise("deepseek_v3_gate", points=1)
def test_deepseek_v3_gate_random_and_extreme(fn, rng):
    section = see("The DeepSeek-V3 gate")
    for k, scaling in [(3, 1.0), (5, 2.5)]:
        logits, bias = 3 * rng.standard_normal((10, 8)), 0.3 * rng.standard_normal(8)
        expert_index, gates = fn(logits, bias, k, scaling=scaling)
        expected_index, expected_gates = _gate_by_hand(logits, bias, k, scaling)
        what = f"deepseek_v3_gate on random logits (10 tokens, 8 experts, k={k}, scaling {scaling})"
        expect_equal(expert_index, expected_index, f"{what}: experts, in decreasing s + b", section, dtype="iu")
        expect_close(gates, expected_gates, f"{what}: gates", section)
    logits = np.array([[-1000.0, -1001.0, -998.0, 1000.0], [-1000.0, -1000.0, 5.0, -999.0]])
    expert_index, gates = fn(logits, np.zeros(4), 3, scaling=2.5)
    # Row 0 chooses 3, then 0 and 1 (every other s is 0 in float64: tied, so by index): 3 takes all.
    # Row 1 chooses 2, then 0 and 1 (tied): their s are e^-1000 against sigmoid(5).
    expect_equal(expert_index, [[3, 0, 1], [2, 0, 1]], "experts for logits near +-1000 (every other s is 0: "
                 "ties, lower expert first)", section)
    expect_close(gates, [[2.5, 0.0, 0.0], [2.5, 0.0, 0.0]], "gates for logits near +-1000", section)
    _, low = fn(np.array([[-1000.0, -1001.0, -1002.0, 0.0]]), np.array([1.0, 1.0, 1.0, 0.0]), 2, scaling=1.0)
    e = np.exp([0.0, -1.0])
    expect_close(low, [e / e.sum()], "gates when every chosen logit is near -1000 (s underflows to 0: normalise "
                 "in logs; the promise is finite gates summing to the scaling)", section)


@pytest.mark.exercise("update_expert_bias", points=1)
def test_update_expert_bias_step(fn, rng):
    got = fn(np.array([0.5, 0.0, -0.1]), np.array([10.0, 2.0, 6.0]), 0.01)  # mean load 6
    section = see("Auxiliary-loss-free balancing")
    expect_close(got, [0.49, 0.01, -0.1], "bias after one step with load [10, 2, 6] (rate 0.01)", section)
    bias, load, rate = rng.standard_normal(7), rng.integers(0, 40, 7).astype(float), float(rng.uniform(1e-3, 0.1))
    load[3] = np.delete(load, 3).mean()  # exactly the mean of all: this expert stays
    expect_close(fn(bias.copy(), load, rate), bias + rate * np.sign(load.mean() - load),
                 f"bias after one step with random load {load.astype(int).tolist()} (rate {rate:.4f})", section)


@pytest.mark.exercise("update_expert_bias", points=1)
def test_update_expert_bias_balances_the_load(fn, rng):
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
