"""Grades exercises/ex06_routing_zoo.py: expert choice, hash routing and Soft MoE's weights."""
import numpy as np
import pytest

import minimoe.functional as F
from graders._checks import expect_close, expect_equal, expect_raises, lesson
from minimoe.moe.routers.expert_choice import ExpertChoiceRouter
from minimoe.moe.routers.hash import HashRouter
from minimoe.moe.soft_moe import SoftMoE

MODULE = "ex06_routing_zoo"
see = lesson(MODULE)
TWINS = {
    "expert_choice": [ExpertChoiceRouter, F.topk],
    "hash_routing": [HashRouter],
    "soft_moe_weights": [SoftMoE, F.softmax],
}


def _random_probs(rng, n_tokens, n_experts):
    logits = rng.standard_normal((n_tokens, n_experts))
    return np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)


@pytest.mark.exercise("expert_choice", points=1)
def test_expert_choice_hand_case(fn):
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    token_index, gates = fn(probs, 2)
    section = see("Expert choice")
    expect_equal(token_index, [[0, 1], [2, 1]], "expert_choice tokens (each expert's top 2, best first)", section,
                 dtype="iu")
    expect_close(gates, [[0.9, 0.6], [0.8, 0.4]], "expert_choice gates", section)
    tied = np.array([[0.5, 0.5], [0.25, 0.75], [0.5, 0.5], [0.5, 0.5]])
    token_index, _ = fn(tied, 2)
    expect_equal(token_index, [[0, 2], [1, 0]], "expert_choice tokens with tied scores (ties: lower token first)",
                 section)
    for capacity in (4, 0):
        expect_raises(ValueError, lambda: fn(probs, capacity), f"expert_choice with capacity {capacity} and 3 tokens",
                      section)


@pytest.mark.exercise("expert_choice", points=1)
def test_expert_choice_random(fn, rng):
    section = see("Expert choice")
    for n_tokens, n_experts, capacity in [(20, 5, 8), (9, 3, 9), (6, 7, 1)]:
        probs = _random_probs(rng, n_tokens, n_experts)
        token_index, gates = fn(probs, capacity)
        expected = np.argsort(-probs.T, axis=1, kind="stable")[:, :capacity]
        what = f"expert_choice on {n_tokens} random tokens, {n_experts} experts, capacity {capacity}"
        expect_equal(token_index, expected, f"{what}: tokens, highest first", section, dtype="iu")
        expect_close(gates, probs[expected, np.arange(n_experts)[:, None]], f"{what}: gates", section)


@pytest.mark.exercise("hash_routing", points=1)
def test_hash_routing(fn, rng):
    table = np.array([2, 0, 1, 2, 0])
    section = see("Hash routing")
    experts, load = fn(np.array([3, 3, 1, 4, 0]), table, 4)
    expect_equal(experts, [2, 2, 0, 0, 2], "hash_routing experts for ids [3, 3, 1, 4, 0]", section, dtype="iu")
    expect_equal(load, [2, 0, 3, 0], "hash_routing load over 4 experts (expert 3 never used)", section, dtype="iu")
    for bad in ([1, 5], [0, -1], [-5]):
        expect_raises(ValueError, lambda: fn(np.array(bad), table, 4),
                      f"hash_routing with ids {bad} and a table of 5 (negative ids are errors too)", section)
    vocab, n_experts = int(rng.integers(10, 30)), int(rng.integers(4, 9))
    table = rng.integers(0, n_experts - 2, vocab)  # the last two experts own no id
    ids = rng.integers(0, vocab, 50)
    experts, load = fn(ids, table, n_experts)
    expect_equal(experts, table[ids], f"hash_routing experts for 50 random ids (vocabulary {vocab})", section)
    expect_equal(load, np.bincount(table[ids], minlength=n_experts), f"hash_routing load over {n_experts} experts "
                 "(the last two own no id)", section, dtype="iu")


def _softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


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
def test_soft_moe_weights_random(fn, rng):
    x, slots = rng.standard_normal((6, 4)), rng.standard_normal((4, 9))
    section = see("Soft MoE")
    for scale in (1.0, 1000.0):
        dispatch, combine = fn(scale * x, slots)
        logits = scale * x @ slots
        what = f"Soft MoE weights for 6 random tokens, d = 4, 9 slots, logits of scale {scale:g}"
        expect_close(dispatch, _softmax(logits, 0), f"{what}: dispatch", section)
        expect_close(combine, _softmax(logits, 1), f"{what}: combine", section)
