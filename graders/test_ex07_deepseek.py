"""Grades exercises/ex07_deepseek.py: fine-grained experts, shared experts, the DeepSeek-V3 gate,
its auxiliary-loss-free bias update, the sequence-wise balance loss and group-limited routing."""
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
    "sequence_balance_loss": [losses.deepseek_sequence_loss],
    "group_limited_topk": [DeepSeekV3Router],
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


# ---- the sequence-wise balance loss (eqs. 17-20) ------------------------------------------------

def _sequence_loss_by_hand(scores, topk_idx, n_experts, k, alpha):
    """Eqs. 17-20 one sequence at a time, with bincount: an independent reference."""
    losses_per_sequence = []
    for seq_scores, seq_idx in zip(scores, topk_idx):
        length = len(seq_scores)
        f = np.bincount(seq_idx.ravel(), minlength=n_experts) * n_experts / (k * length)
        p = (seq_scores / seq_scores.sum(axis=1, keepdims=True)).mean(axis=0)
        losses_per_sequence.append(alpha * float(f @ p))
    return float(np.mean(losses_per_sequence))


@pytest.mark.exercise("sequence_balance_loss", points=1)
def test_sequence_balance_loss_hand_cases(fn):
    section = see("The complementary sequence-wise loss")
    # Each sequence sends both its tokens to one expert: balanced over the batch, collapsed within
    # each sequence. f = 2/(1*2) * [2, 0] = [2, 0], P = [0.9, 0.1]: 1.8 per sequence (1.0 batch-wise).
    scores = np.array([[[0.9, 0.1], [0.9, 0.1]], [[0.1, 0.9], [0.1, 0.9]]])
    expect_close(fn(scores, np.array([[[0], [0]], [[1], [1]]]), 2, 1, 0.5), 0.5 * 1.8,
                 "loss of two collapsed sequences that balance each other over the batch (alpha 0.5; "
                 "the batch-wise value would be 0.5)", section)
    # Sigmoid scores need s' = s / sum_j s: rows sum to 2. f = 4/(2*2) * [2, 1, 0, 1];
    # P = [0.35, 0.325, 0.125, 0.2]; sum f P = 1.225.
    scores = np.array([[[0.8, 0.4, 0.2, 0.6], [0.6, 0.9, 0.3, 0.2]]])
    expect_close(fn(scores, np.array([[[0, 3], [1, 0]]]), 4, 2, 0.1), 0.1225,
                 "loss of one sequence of 2 tokens, E=4, k=2, scores not summing to 1 (alpha 0.1)", section)
    balanced = np.array([[[0, 1], [2, 3], [1, 0], [3, 2]]])
    expect_close(fn(np.full((1, 4, 4), 0.5), balanced, 4, 2, 1e-4), 1e-4,
                 "loss under uniform scores and balanced choices (alpha 1e-4, the paper's value)", section)


@pytest.mark.exercise("sequence_balance_loss", points=1)
def test_sequence_balance_loss_random(fn, rng):
    section = see("The complementary sequence-wise loss")
    for n_seq, length, n_experts, k in [(4, 9, 8, 3), (2, 16, 6, 2), (5, 3, 7, 1)]:
        scores = _sigmoid(2 * rng.standard_normal((n_seq, length, n_experts)))
        topk_idx = np.argsort(-scores, axis=-1, kind="stable")[..., :k]
        alpha = float(rng.uniform(1e-4, 0.5))
        before = scores.copy()
        expect_close(fn(scores, topk_idx, n_experts, k, alpha),
                     _sequence_loss_by_hand(scores, topk_idx, n_experts, k, alpha),
                     f"loss on random sigmoid scores (B={n_seq}, T={length}, E={n_experts}, k={k}, "
                     f"alpha {alpha:.4f})", section)
        expect_close(scores, before, "the scores after the call (the input must not change)", section)
    # the indices are taken as given: a bias-steered choice counted as the caller says
    scores = _sigmoid(rng.standard_normal((3, 5, 4)))
    topk_idx = rng.integers(0, 4, size=(3, 5, 1))
    expect_close(fn(scores, topk_idx, 4, 1, 1.0), _sequence_loss_by_hand(scores, topk_idx, 4, 1, 1.0),
                 "loss with the given (random) top-1 indices, B=3, T=5, E=4", section)


@pytest.mark.exercise("sequence_balance_loss", points=1)
def test_sequence_balance_loss_edges_and_errors(fn, rng):
    section = see("The complementary sequence-wise loss")
    scores = _sigmoid(rng.standard_normal((2, 6, 5)))
    every_expert = np.broadcast_to(np.arange(5), (2, 6, 5))
    expect_close(fn(scores, every_expert, 5, 5, 0.3), 0.3, "loss at k = E (every f_i = 1, so the sum of P is 1)",
                 section)
    one_token = np.array([[[0.2, 0.6, 0.2]]])
    expect_close(fn(one_token, np.array([[[1]]]), 3, 1, 1.0), 3 * 0.6, "loss of a single token (T=1) sent to "
                 "expert 1: f = [0, 3, 0], P = s'", section)
    scores32 = scores.astype(np.float32)
    topk_idx = np.argsort(-scores, axis=-1, kind="stable")[..., :2]
    expect_close(fn(scores32, topk_idx, 5, 2, 0.01), _sequence_loss_by_hand(scores, topk_idx, 5, 2, 0.01),
                 "loss on float32 scores", section, rtol=1e-5)
    expect_raises(ValueError, lambda: fn(scores, topk_idx[..., :1], 5, 2, 0.01),
                  "topk_idx of shape (B, T, 1) with k=2", section)
    expect_raises(ValueError, lambda: fn(scores, np.full((2, 6, 2), 5), 5, 2, 0.01),
                  "an expert index equal to n_experts", section)
    expect_raises(ValueError, lambda: fn(scores, topk_idx, 4, 2, 0.01), "scores with 5 columns and n_experts=4",
                  section)


# ---- group-limited (node-limited) routing ---------------------------------------------------------

def _group_topk_by_hand(scores, n_groups, topk_groups, k):
    """One token at a time, with sorted(): groups by (-(sum of the best two), group), then experts
    of the kept groups by (-score, expert)."""
    size = scores.shape[1] // n_groups
    chosen = []
    for row in scores:
        groups = [sum(sorted(row[g * size:(g + 1) * size])[-2:]) for g in range(n_groups)]
        kept = sorted(range(n_groups), key=lambda g: (-groups[g], g))[:topk_groups]
        candidates = [e for g in kept for e in range(g * size, (g + 1) * size)]
        chosen.append(sorted(candidates, key=lambda e: (-row[e], e))[:k])
    return np.array(chosen)


@pytest.mark.exercise("group_limited_topk", points=1)
def test_group_limited_topk_hand_cases(fn):
    section = see("Group-limited routing")
    # groups {0, 1}, {2, 3}: plain top-2 is {0, 2}; the group scores are 1.0 and 1.61
    expect_equal(fn(np.array([[0.95, 0.05, 0.88, 0.73]]), 2, 1, 2), [[2, 3]],
                 "experts for scores [0.95, 0.05, 0.88, 0.73], 2 groups of 2, 1 group, k=2", section, dtype="iu")
    # group 0 holds the best expert (0.9) but group 1 the best two (0.6 + 0.6 > 0.9 + 0.1)
    expect_equal(fn(np.array([[0.9, 0.1, 0.1, 0.6, 0.6, 0.0]]), 2, 1, 2), [[3, 4]],
                 "experts when one group has the top expert and the other the best pair (group score = "
                 "sum of the best two, not the max)", section)
    # group 0 sums to more (2.0) but group 1 has the better pair (1.7 > 1.0)
    expect_equal(fn(np.array([[0.5, 0.5, 0.5, 0.5, 0.9, 0.8, 0.0, 0.0]]), 2, 1, 3), [[4, 5, 6]],
                 "experts when one group sums to more but the other has the better pair (the best two, "
                 "not the whole group)", section)
    # every group scores 3: groups 0 and 1 (lower first); then 2 before 1 tie at 2, 0 before 3 at 1
    expect_equal(fn(np.array([[1.0, 2.0, 2.0, 1.0, 0.0, 3.0]]), 3, 2, 3), [[1, 2, 0]],
                 "experts for scores [1, 2, 2, 1, 0, 3], 3 groups of 2, 2 groups, k=3 (ties: lower group, "
                 "then lower expert, first)", section)


@pytest.mark.exercise("group_limited_topk", points=1)
def test_group_limited_topk_random(fn, rng):
    section = see("Group-limited routing")
    for n_tokens, n_groups, size, topk_groups, k in [(20, 4, 4, 2, 4), (15, 8, 2, 3, 5), (12, 3, 5, 2, 6)]:
        scores = _sigmoid(2 * rng.standard_normal((n_tokens, n_groups * size))) + 0.2 * rng.standard_normal(
            n_groups * size)  # s + b
        before = scores.copy()
        expect_equal(fn(scores, n_groups, topk_groups, k), _group_topk_by_hand(scores, n_groups, topk_groups, k),
                     f"experts on random s + b ({n_tokens} tokens, {n_groups} groups of {size}, {topk_groups} "
                     f"groups, k={k}), in decreasing score order", section, dtype="iu")
        expect_close(scores, before, "the scores after the call (the input must not change)", section)


@pytest.mark.exercise("group_limited_topk", points=1)
def test_group_limited_topk_edges_and_errors(fn, rng):
    section = see("Group-limited routing")
    scores = rng.standard_normal((10, 12))
    plain = np.argsort(-scores, axis=-1, kind="stable")[:, :5]
    expect_equal(fn(scores, 4, 4, 5), plain, "topk_groups = n_groups (every group allowed: plain top-k)", section)
    expect_equal(fn(scores, 12, 5, 5), plain, "groups of one expert, 5 groups, k=5 (plain top-k again)", section)
    best = _group_topk_by_hand(scores, 3, 1, 4)
    expect_equal(fn(scores, 3, 1, 4), best, "k = group size with one group: the whole best group, in "
                 "decreasing score order", section)
    negative = -rng.uniform(0.1, 1.0, size=(8, 8))  # s + b can be negative: a mask of 0 would win
    expect_equal(fn(negative, 4, 1, 2), _group_topk_by_hand(negative, 4, 1, 2),
                 "experts on negative scores (other groups must never be chosen: mask with -inf, not 0)", section)
    expect_raises(ValueError, lambda: fn(scores, 5, 2, 2), "12 experts in n_groups=5", section)
    expect_raises(ValueError, lambda: fn(scores, 4, 5, 2), "topk_groups=5 of n_groups=4", section)
    expect_raises(ValueError, lambda: fn(scores, 4, 2, 7), "k=7 from 2 groups of 3 experts", section)
