"""Grades exercises/ex03_switch_gshard.py: capacity, dispatch with dropping, the Switch loss, and
dropless dispatch by sorting."""
import math
from fractions import Fraction

import numpy as np
import pytest

import minimoe as mm
from graders._checks import expect, expect_close, expect_equal, expect_gradients, expect_raises, lesson
from minimoe.moe import dispatch, losses

MODULE = "ex03_switch_gshard"
see = lesson(MODULE)
TWINS = {
    "expert_capacity": [dispatch.expert_capacity],
    "dispatch_with_capacity": [dispatch.plan_dispatch],
    "switch_loss": [losses.switch_balance_loss, losses.assignment_fractions],
    "sort_by_expert": [dispatch.plan_dispatch],
    "combine_sorted": [dispatch.plan_dispatch],
}


def _exact_capacity(n_tokens, n_experts, k, factor_text):
    return math.ceil(Fraction(k * n_tokens) * Fraction(factor_text) / n_experts)


def _expect_capacity(fn, n_tokens, n_experts, k, factor, expected):
    got = fn(n_tokens, n_experts, k, factor)
    expect(got == expected and isinstance(got, (int, np.integer)),
           f"expert_capacity(T={n_tokens}, E={n_experts}, k={k}, cf={factor})",
           f"the int ceil(k*T/E*cf) = {expected}, computed exactly on the decimal cf", repr(got),
           see("Expert capacity"))


@pytest.mark.exercise("expert_capacity", points=1)
@pytest.mark.parametrize("n_tokens, n_experts, k, factor, expected", [
    (10, 4, 1, 1.0, 3),  # 2.5 rounds up
    (10, 4, 2, 1.25, 7),  # 6.25
    (8, 4, 1, 1.0, 2),  # exact
    (100, 8, 2, 1.25, 32),  # 31.25
    (6, 4, 1, 1.5, 3),  # 2.25
    (100, 2, 1, 1.1, 55),  # 55 exactly; floating point gives 55.00000000000001
    (30, 3, 1, 0.7, 7),  # 7 exactly; floating point gives 7.000000000000001
    (8, 8, 1, 1.0000000001, 2),  # a hair above 1: a rounding step before the ceiling loses it
    (10**12, 10, 1, 1.3, 130_000_000_000),  # large T * cf
])
def test_expert_capacity_values(fn, n_tokens, n_experts, k, factor, expected):
    _expect_capacity(fn, n_tokens, n_experts, k, factor, expected)


@pytest.mark.exercise("expert_capacity", points=1)
def test_expert_capacity_random_and_bad_factors(fn, rng):
    for _ in range(30):
        n_tokens, n_experts, k = int(rng.integers(1, 5000)), int(rng.integers(1, 65)), int(rng.integers(1, 5))
        text = f"{rng.integers(1, 400) / 100:.2f}".rstrip("0").rstrip(".")
        _expect_capacity(fn, n_tokens, n_experts, k, float(text), _exact_capacity(n_tokens, n_experts, k, text))
    for factor in (0.0, -1.0, float("nan"), float("inf")):
        expect_raises(ValueError, lambda: fn(10, 4, 1, factor), f"expert_capacity with capacity_factor={factor}",
                      see("Expert capacity"))


def _dispatch_by_hand(expert_index, n_experts, capacity):
    """GShard's order, one assignment at a time: all first choices in token order, then all second..."""
    n_tokens, k = expert_index.shape
    taken, slots = np.zeros(n_experts, dtype=int), np.full((n_tokens, k), -1)
    for j in range(k):
        for t in range(n_tokens):
            e = expert_index[t, j]
            if taken[e] < capacity:
                slots[t, j] = taken[e]
            taken[e] += 1
    return slots


@pytest.mark.exercise("dispatch_with_capacity", points=2)
def test_dispatch_with_capacity_hand_case(fn):
    # First choices fill the buffers first: tokens 0 and 1 take expert 0's two slots, token 2's first
    # choice is dropped, token 3 takes expert 1's slot 0; then second choices: token 0 gets expert 1's
    # slot 1 and everything else finds its expert full.
    expert_index = np.array([[0, 1], [0, 1], [0, 1], [1, 0]])
    section = see("Dispatch with dropping")
    expect_equal(fn(expert_index, 2, 2), [[0, 1], [1, -1], [-1, -1], [0, -1]],
                 "slots for experts [[0,1],[0,1],[0,1],[1,0]], capacity 2 (-1 = dropped)", section, dtype="iu")
    expect_equal(fn(expert_index, 2, 0), np.full((4, 2), -1), "slots with capacity 0 (everything dropped)", section)
    three = np.array([[2, 0, 1], [2, 1, 0], [0, 2, 1]])  # k = E = 3
    expect_equal(fn(three, 3, 2), [[0, 1, 1], [1, 0, -1], [0, -1, -1]],
                 "slots for top-3 of 3 experts [[2,0,1],[2,1,0],[0,2,1]], capacity 2 (choice by choice)", section)


@pytest.mark.exercise("dispatch_with_capacity", points=1)
def test_dispatch_with_capacity_random(fn, rng):
    section = see("Dispatch with dropping")
    for n_tokens, n_experts, k in [(50, 4, 2), (40, 6, 3), (30, 5, 4), (20, 3, 3)]:
        expert_index = np.stack([rng.permutation(n_experts)[:k] for _ in range(n_tokens)])
        for capacity in (int(rng.integers(1, n_tokens * k // n_experts + 1)), n_tokens * k):
            expect_equal(fn(expert_index, n_experts, capacity), _dispatch_by_hand(expert_index, n_experts, capacity),
                         f"slots for {n_tokens} random tokens, top-{k} of {n_experts} experts, capacity {capacity}",
                         section, dtype="iu")


def _switch_by_hand(probs, alpha):
    n_tokens, n_experts = probs.shape
    f = np.array([(probs.argmax(axis=1) == e).sum() for e in range(n_experts)]) / n_tokens
    return alpha * n_experts * (f * probs.mean(axis=0)).sum()


@pytest.mark.exercise("switch_loss", points=1)
def test_switch_loss_values(fn, rng):
    section = see("The Switch balancing loss")
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])  # f = [1, 0], P = [0.75, 0.25]
    got = fn(mm.tensor(probs, dtype=np.float64), alpha=0.01)
    expect_close(got, 0.01 * 2 * 0.75, "switch_loss([[0.9, 0.1], [0.6, 0.4]], alpha=0.01) = alpha * N * sum f P",
                 section)
    uniform = fn(mm.tensor(np.full((8, 4), 0.25), dtype=np.float64), alpha=0.01)
    expect_close(uniform, 0.01, "switch_loss under perfectly uniform routing (it equals alpha)", section)
    logits = rng.standard_normal((9, 5))
    logits[:, 4] -= 10  # the last expert is never anyone's first choice
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    for dtype in (np.float64, np.float32):
        got = fn(mm.tensor(probs, dtype=dtype), alpha=0.1)
        expect_close(got, _switch_by_hand(probs, 0.1), f"switch_loss on random probabilities ({np.dtype(dtype).name},"
                     " expert 4 never chosen)", section, dtype=dtype, rtol=1e-5)


@pytest.mark.exercise("switch_loss", points=1)
def test_switch_loss_gradients(fn, rng):
    logits = rng.standard_normal((6, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    expect_close(fn(mm.tensor(probs, dtype=np.float64), alpha=0.1), _switch_by_hand(probs, 0.1),
                 "switch_loss on random probabilities", see("The Switch balancing loss"))
    expect_gradients(lambda x: fn(mm.functional.softmax(x), alpha=0.1), [logits],
                     "switch_loss gradient through the router probabilities", see("The Switch balancing loss"))


@pytest.mark.exercise("sort_by_expert", points=1)
def test_sort_by_expert(fn, rng):
    section = see("Dropless dispatch by sorting")
    expert_index = np.array([[1, 0], [0, 2], [1, 1]])  # flat: [1, 0, 0, 2, 1, 1]
    order, sizes = fn(expert_index, 4)
    expect_equal(order, [1, 2, 0, 4, 5, 3], "order for experts [[1,0],[0,2],[1,1]] (stable sort by expert)", section,
                 dtype="iu")
    expect_equal(sizes, [2, 3, 1, 0], "group sizes with 4 experts (expert 3 unused)", section, dtype="iu")
    for n_tokens, k, used, n_experts in [(40, 2, 5, 6), (13, 3, 4, 7), (9, 4, 6, 6)]:
        many = rng.integers(0, used, (n_tokens, k))
        order, sizes = fn(many, n_experts)
        flat = many.reshape(-1)
        what = f"{n_tokens} tokens x {k} choices over {n_experts} experts"
        expect_equal(order, np.argsort(flat, kind="stable"), f"order for {what} (a stable sort)", section, dtype="iu")
        expect_equal(sizes, np.bincount(flat, minlength=n_experts), f"group sizes for {what}", section)


@pytest.mark.exercise("combine_sorted", points=1)
def test_combine_sorted_hand_case(fn):
    # experts [[1,0],[0,1]] sort to order [1, 2, 0, 3]; the sorted rows are the outputs of
    # assignments 1, 2, 0, 3, so assignment 0 got 30, 1 got 10, 2 got 20 and 3 got 40.
    sorted_outputs = np.array([[10.0], [20.0], [30.0], [40.0]])
    gates = np.array([[0.6, 0.4], [0.7, 0.3]])
    got = fn(sorted_outputs, np.array([1, 2, 0, 3]), gates)
    expect_close(got, [[0.6 * 30 + 0.4 * 10], [0.7 * 20 + 0.3 * 40]],
                 "combine_sorted (undo the sort with the inverse permutation, then weight)",
                 see("Dropless dispatch by sorting"))


@pytest.mark.exercise("combine_sorted", points=1)
def test_combine_sorted_round_trip(fn, rng):
    for n_tokens, d, k, n_experts in [(7, 3, 2, 4), (5, 4, 3, 6)]:
        x, expert_index = rng.standard_normal((n_tokens, d)), rng.integers(0, n_experts, (n_tokens, k))
        gates = rng.uniform(size=(n_tokens, k))
        order = np.argsort(expert_index.reshape(-1), kind="stable")
        scale = rng.standard_normal(n_experts)  # expert e multiplies its tokens by scale[e]
        sorted_outputs = x[order // k] * scale[expert_index.reshape(-1)[order], None]
        expected = (gates[:, :, None] * x[:, None, :] * scale[expert_index][:, :, None]).sum(axis=1)
        expect_close(fn(sorted_outputs, order, gates), expected,
                     f"combine_sorted after {n_experts} scaling experts on {n_tokens} tokens x {k} choices, d = {d}",
                     see("Dropless dispatch by sorting"))
