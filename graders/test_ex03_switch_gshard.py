"""Grades exercises/ex03_switch_gshard.py: capacity, dispatch with dropping, the Switch loss, and
dropless dispatch by sorting."""
import math
from fractions import Fraction

import numpy as np
import pytest

import minimoe as mm
from graders._checks import expect, expect_close, expect_equal, expect_gradients, expect_raises, lesson
from minimoe.moe import dispatch, losses
from minimoe.moe.routers.gshard import GShardRouter

MODULE = "ex03_switch_gshard"
see = lesson(MODULE)
TWINS = {
    "expert_capacity": [dispatch.expert_capacity],
    "dispatch_with_capacity": [dispatch.plan_dispatch],
    "switch_loss": [losses.switch_balance_loss, losses.assignment_fractions],
    "sort_by_expert": [dispatch.plan_dispatch],
    "combine_sorted": [dispatch.plan_dispatch],
    "gshard_random_routing": [GShardRouter, mm.functional.topk],
    "gshard_aux_loss": [losses.gshard_balance_loss, losses.switch_balance_loss, losses.assignment_fractions],
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


def _random_routing_by_hand(probs, uniform):
    """GShard's rule one token at a time: the two largest (ties to the lower index), renormalised,
    the second kept where 2 g2 > u."""
    index, gates, keep = [], [], []
    for row, u in zip(probs, uniform):
        first = int(np.argmax(row))
        rest = row.copy()
        rest[first] = -np.inf
        second = int(np.argmax(rest))
        total = row[first] + row[second]
        index.append([first, second])
        gates.append([row[first] / total, row[second] / total])
        keep.append(2 * (row[second] / total) > u)
    return np.array(index), np.array(gates), np.array(keep)


def _expect_routing(got, expected, what, section, dtype=None):
    expect(isinstance(got, tuple) and len(got) == 3, what, "a tuple (expert_index, gates, keep_second)",
           f"{type(got).__name__}", section)
    index, gates, keep = got
    expect_equal(index, expected[0], f"{what}: expert_index", section, dtype="iu")
    rtol = 1e-6 if dtype == np.float32 else 1e-12
    expect_close(gates, expected[1], f"{what}: gates", section, dtype=dtype, rtol=rtol)
    expect_equal(keep, expected[2], f"{what}: keep_second", section, dtype="b")


@pytest.mark.exercise("gshard_random_routing", points=1)
def test_gshard_random_routing_hand_case(fn):
    section = see("Switch top-1 and GShard top-2")
    probs = np.array([[0.5, 0.3, 0.2],  # g2 = 3/8: kept with probability 3/4
                      [0.1, 0.2, 0.7],  # experts 2 then 1, g2 = 2/9
                      [0.3, 0.6, 0.1],  # g2 = 1/3
                      [0.4, 0.5, 0.1]])  # g2 = 4/9: 2 g2 = 8/9
    uniform = np.array([0.7, 0.5, 0.9, 0.85])
    expected = ([[0, 1], [2, 1], [1, 0], [1, 0]], [[5 / 8, 3 / 8], [7 / 9, 2 / 9], [2 / 3, 1 / 3], [5 / 9, 4 / 9]],
                [True, False, False, True])  # 0.75 > 0.7; 0.444 < 0.5; 0.667 < 0.9; 0.889 > 0.85
    _expect_routing(fn(probs, uniform), expected, "gshard_random_routing on 4 hand-made tokens", section)


@pytest.mark.exercise("gshard_random_routing", points=1)
def test_gshard_random_routing_random_tokens_and_dtypes(fn, rng):
    section = see("Switch top-1 and GShard top-2")
    for n_tokens, n_experts in [(60, 4), (33, 7), (12, 2)]:
        logits = rng.standard_normal((n_tokens, n_experts)) * 2
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        uniform = rng.uniform(size=n_tokens)
        for dtype in (np.float64, np.float32):
            cast, draws = probs.astype(dtype), uniform.astype(dtype)
            _expect_routing(fn(cast, draws), _random_routing_by_hand(cast, draws),
                            f"gshard_random_routing on {n_tokens} random tokens over {n_experts} experts "
                            f"({np.dtype(dtype).name})", section, dtype=dtype)
    expect_raises(ValueError, lambda: fn(probs[:10], np.zeros(9)), "gshard_random_routing with 10 tokens and 9 draws",
                  section)


@pytest.mark.exercise("gshard_random_routing", points=1)
def test_gshard_random_routing_edge_cases(fn):
    section = see("Switch top-1 and GShard top-2")
    probs = np.array([[1.0, 0.0, 0.0],  # g2 = 0: never kept, not even for u = 0; second choice 1 (tie with 2)
                      [0.75, 0.25, 0.0],  # g2 = 1/4: 2 g2 = 0.5 = u exactly: not kept (strictly greater)
                      [0.4, 0.4, 0.2],  # p1 = p2: experts 0 then 1, g2 = 1/2: always kept
                      [0.2, 0.5, 0.3],  # g2 = 3/8, 2 g2 = 0.75 > 0.7499
                      [0.2, 0.4, 0.4]])  # a tie at the top: experts 1 then 2, g2 = 1/2
    uniform = np.array([0.0, 0.5, 0.9999, 0.7499, 0.9999])
    expected = ([[0, 1], [0, 1], [0, 1], [1, 2], [1, 2]],
                [[1.0, 0.0], [0.75, 0.25], [0.5, 0.5], [5 / 8, 3 / 8], [0.5, 0.5]],
                [False, False, True, True, True])
    _expect_routing(fn(probs, uniform), expected, "gshard_random_routing at g2 = 0, 2 g2 = u, ties and g2 = 0.5",
                    section)


def _gshard_loss_by_hand(probs):
    """The mean over groups of (1/E) sum_e (c_e/S) m_e, one group and one expert at a time."""
    n_groups, n_tokens, n_experts = probs.shape
    total = 0.0
    for group in probs:
        first = group.argmax(axis=1)
        total += sum((first == e).sum() / n_tokens * group[:, e].mean() for e in range(n_experts)) / n_experts
    return total / n_groups


@pytest.mark.exercise("gshard_aux_loss", points=1)
def test_gshard_aux_loss_values(fn, rng):
    section = see("GShard's loss, first choices only")
    # group 0: first choices 0, 0, 1, 2: c/S = [1/2, 1/4, 1/4], m = [0.35, 0.325, 0.325]: 0.3375 / 3 = 0.1125
    # group 1: first choices 2, 2, 2, 2: c/S = [0, 0, 1], m = [0.1, 0.2, 0.7]: 0.7 / 3
    probs = np.array([[[0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]],
                      [[0.1, 0.2, 0.7]] * 4])
    expect_close(fn(mm.tensor(probs[:1], dtype=np.float64)), 0.1125, "gshard_aux_loss of one hand-made group of 4 "
                 "tokens over 3 experts: (1/E) sum_e (c_e/S) m_e", section)
    expect_close(fn(mm.tensor(probs, dtype=np.float64)), (0.1125 + 0.7 / 3) / 2, "gshard_aux_loss of two hand-made "
                 "groups: the mean of the groups' losses, not the loss of the pooled tokens", section)
    expect_close(fn(mm.tensor(np.full((3, 8, 4), 0.25), dtype=np.float64)), 1 / 16,
                 "gshard_aux_loss under perfectly uniform routing, E = 4 (1/E^2)", section)
    logits = rng.standard_normal((3, 10, 5)) * 2
    logits[:, :, 4] -= 10  # the last expert is never anyone's first choice
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    for dtype in (np.float64, np.float32):
        expect_close(fn(mm.tensor(probs, dtype=dtype)), _gshard_loss_by_hand(probs), "gshard_aux_loss on 3 random "
                     f"groups of 10 tokens ({np.dtype(dtype).name}, expert 4 never a first choice)", section,
                     dtype=dtype, rtol=1e-5)


@pytest.mark.exercise("gshard_aux_loss", points=1)
def test_gshard_aux_loss_gradients(fn, rng):
    section = see("GShard's loss, first choices only")
    logits = rng.standard_normal((2, 6, 3)) * 2
    probs = np.exp(logits) / np.exp(logits).sum(axis=-1, keepdims=True)
    expect_close(fn(mm.tensor(probs, dtype=np.float64)), _gshard_loss_by_hand(probs),
                 "gshard_aux_loss on 2 random groups of 6 tokens", section)
    expect_gradients(lambda x: fn(mm.functional.softmax(x)), [logits],
                     "gshard_aux_loss gradient through the router probabilities", section)
