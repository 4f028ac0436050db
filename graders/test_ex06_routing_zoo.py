"""Grades exercises/ex06_routing_zoo.py: expert choice, hash routing and Soft MoE's weights."""
import numpy as np
import pytest

from graders._checks import expect, expect_close, expect_equal, expect_raises, lesson

MODULE = "ex06_routing_zoo"
see = lesson(MODULE)


@pytest.mark.exercise("expert_choice", points=1)
def test_expert_choice_hand_case(fn):
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    token_index, gates = fn(probs, 2)
    section = see("Expert choice")
    expect_equal(token_index, [[0, 1], [2, 1]], "expert_choice tokens (each expert's top 2, best first)", section)
    expect_close(gates, [[0.9, 0.6], [0.8, 0.4]], "expert_choice gates", section)
    expect_raises(ValueError, lambda: fn(probs, 4), "expert_choice with capacity 4 > 3 tokens", section)


@pytest.mark.exercise("expert_choice", points=1)
def test_expert_choice_invariants(fn):
    rng = np.random.default_rng(18)
    logits = rng.standard_normal((20, 5))
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    token_index, gates = fn(probs, 8)
    section = see("Expert choice")
    expect_equal(np.shape(token_index), (5, 8), "shape of token_index (E, C)", section)
    for e in range(5):
        chosen = token_index[e]
        expect(len(set(chosen.tolist())) == 8, f"tokens of expert {e}", "8 distinct tokens", str(chosen), section)
        rest = np.setdiff1d(np.arange(20), chosen)
        expect(probs[chosen, e].min() >= probs[rest, e].max(), f"tokens of expert {e}",
               "the 8 with the highest probability for it", "a lower-scoring token chosen", section)
    expect_close(gates, probs[token_index, np.arange(5)[:, None]], "gates = router_probs[token, expert]", section)


@pytest.mark.exercise("hash_routing", points=1)
def test_hash_routing(fn):
    table = np.array([2, 0, 1, 2, 0])
    section = see("Hash routing")
    experts, load = fn(np.array([3, 3, 1, 4, 0]), table, 4)
    expect_equal(experts, [2, 2, 0, 0, 2], "hash_routing experts for ids [3, 3, 1, 4, 0]", section)
    expect_equal(load, [2, 0, 3, 0], "hash_routing load over 4 experts (expert 3 never used)", section)
    expect_raises(ValueError, lambda: fn(np.array([1, 5]), table, 4), "hash_routing with id 5 and a table of 5",
                  section)


@pytest.mark.exercise("soft_moe_weights", points=1)
def test_soft_moe_weights_hand_case(fn):
    x = np.array([[1.0, 0.0], [0.0, 1.0]])
    slots = np.array([[1.0, 0.0, 2.0], [0.0, 0.0, 1.0]])  # logits = slots (x is the identity)
    dispatch, combine = fn(x, slots)
    section = see("Soft MoE")
    e = np.exp(slots)
    expect_close(dispatch, e / e.sum(axis=0), "Soft MoE dispatch (softmax over tokens, per slot)", section)
    expect_close(combine, e / e.sum(axis=1, keepdims=True), "Soft MoE combine (softmax over slots, per token)",
                 section)


@pytest.mark.exercise("soft_moe_weights", points=1)
def test_soft_moe_weights_invariants(fn):
    rng = np.random.default_rng(19)
    x, slots = rng.standard_normal((6, 4)), rng.standard_normal((4, 9))
    dispatch, combine = fn(x, slots)
    section = see("Soft MoE")
    expect_close(np.sum(dispatch, axis=0), np.ones(9), "column sums of dispatch", section)
    expect_close(np.sum(combine, axis=1), np.ones(6), "row sums of combine", section)
    permutation = rng.permutation(6)
    d2, c2 = fn(x[permutation], slots)
    expect_close(d2, np.asarray(dispatch)[permutation], "dispatch after permuting the tokens (rows permute too)",
                 section)
    big_d, big_c = fn(1000 * x, slots)
    expect(np.all(np.isfinite(big_d)) and np.all(np.isfinite(big_c)), "Soft MoE weights for logits near 1e3",
           "finite", "NaN or inf (subtract the max)", section)
