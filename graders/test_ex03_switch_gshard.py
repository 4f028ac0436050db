"""Grades exercises/ex03_switch_gshard.py: capacity, dispatch with dropping, the Switch loss, and
dropless dispatch by sorting."""
import numpy as np
import pytest

import minimoe as mm
from graders._checks import expect, expect_close, expect_equal, expect_gradients, expect_raises, lesson

MODULE = "ex03_switch_gshard"
see = lesson(MODULE)


@pytest.mark.exercise("expert_capacity", points=1)
@pytest.mark.parametrize("n_tokens, n_experts, k, factor, expected", [
    (10, 4, 1, 1.0, 3),  # 2.5 rounds up
    (10, 4, 2, 1.25, 7),  # 6.25
    (8, 4, 1, 1.0, 2),  # exact
    (100, 8, 2, 1.25, 32),  # 31.25
    (6, 4, 1, 1.5, 3),  # 2.25
])
def test_expert_capacity_values(fn, n_tokens, n_experts, k, factor, expected):
    got = fn(n_tokens, n_experts, k, factor)
    expect(got == expected and isinstance(got, (int, np.integer)),
           f"expert_capacity(T={n_tokens}, E={n_experts}, k={k}, cf={factor})",
           f"the int ceil(k*T/E*cf) = {expected}", repr(got), see("Expert capacity"))


@pytest.mark.exercise("expert_capacity", points=1)
@pytest.mark.parametrize("factor", [0.0, -1.0])
def test_expert_capacity_rejects_bad_factor(fn, factor):
    expect_raises(ValueError, lambda: fn(10, 4, 1, factor), f"expert_capacity with capacity_factor={factor}",
                  see("Expert capacity"))


@pytest.mark.exercise("dispatch_with_capacity", points=2)
def test_dispatch_with_capacity_hand_case(fn):
    # First choices fill the buffers first: tokens 0 and 1 take expert 0's two slots, token 2's first
    # choice is dropped, token 3 takes expert 1's slot 0; then second choices: token 0 gets expert 1's
    # slot 1 and everything else finds its expert full.
    expert_index = np.array([[0, 1], [0, 1], [0, 1], [1, 0]])
    got = fn(expert_index, 2, 2)
    expect_equal(got, [[0, 1], [1, -1], [-1, -1], [0, -1]],
                 "slots for experts [[0,1],[0,1],[0,1],[1,0]], capacity 2 (-1 = dropped)",
                 see("Dispatch with dropping"))


@pytest.mark.exercise("dispatch_with_capacity", points=1)
def test_dispatch_with_capacity_invariants(fn):
    rng = np.random.default_rng(11)
    expert_index = np.stack([rng.permutation(4)[:2] for _ in range(50)])  # (50, 2), two distinct experts
    section = see("Dispatch with dropping")
    slots = np.asarray(fn(expert_index, 4, 20))
    demand = np.bincount(expert_index.reshape(-1), minlength=4)
    for e in range(4):
        taken = np.sort(slots[(expert_index == e) & (slots >= 0)])
        expect_equal(taken, np.arange(min(demand[e], 20)), f"slots given out by expert {e} (demand {demand[e]}, "
                     "capacity 20): 0, 1, 2, ... with none repeated or skipped", section)
    for e in range(4):
        second_kept = np.any((expert_index[:, 1] == e) & (slots[:, 1] >= 0))
        first_dropped = np.any((expert_index[:, 0] == e) & (slots[:, 0] < 0))
        expect(not (second_kept and first_dropped), f"drops at expert {e}",
               "every first choice served before any second choice",
               "a second choice kept while a first choice was dropped", section)
    roomy = np.asarray(fn(expert_index, 4, 100))
    expect(np.all(roomy >= 0), "dispatch with capacity >= T*k", "no drops", f"{(roomy < 0).sum()} drops", section)


@pytest.mark.exercise("switch_loss", points=1)
def test_switch_loss_values(fn):
    section = see("The Switch balancing loss")
    probs = np.array([[0.9, 0.1], [0.6, 0.4]])  # f = [1, 0], P = [0.75, 0.25]
    got = fn(mm.tensor(probs, dtype=np.float64), alpha=0.01)
    expect_close(got, 0.01 * 2 * 0.75, "switch_loss([[0.9, 0.1], [0.6, 0.4]], alpha=0.01) = alpha * N * sum f P",
                 section)
    uniform = fn(mm.tensor(np.full((8, 4), 0.25), dtype=np.float64), alpha=0.01)
    expect_close(uniform, 0.01, "switch_loss under perfectly uniform routing (it equals alpha)", section)


@pytest.mark.exercise("switch_loss", points=1)
def test_switch_loss_gradients(fn):
    logits = np.random.default_rng(12).standard_normal((6, 3)) * 2
    expect_gradients(lambda x: fn(mm.functional.softmax(x), alpha=0.1), [logits],
                     "switch_loss gradient through the router probabilities", see("The Switch balancing loss"))


@pytest.mark.exercise("sort_by_expert", points=1)
def test_sort_by_expert(fn):
    section = see("Dropless dispatch by sorting")
    expert_index = np.array([[1, 0], [0, 2], [1, 1]])  # flat: [1, 0, 0, 2, 1, 1]
    order, sizes = fn(expert_index, 4)
    expect_equal(order, [1, 2, 0, 4, 5, 3], "order for experts [[1,0],[0,2],[1,1]] (stable sort by expert)", section)
    expect_equal(sizes, [2, 3, 1, 0], "group sizes with 4 experts (expert 3 unused)", section)
    many = np.random.default_rng(13).integers(0, 5, (40, 2))
    order, sizes = fn(many, 6)
    flat = many.reshape(-1)
    expect(np.array_equal(np.sort(order), np.arange(80)) and np.all(np.diff(flat[order]) >= 0),
           "order for 40 tokens x 2 choices", "a permutation of 0..79 sorting the experts", "something else", section)
    ties_in_order = all(np.all(np.diff(order[flat[order] == e]) > 0) for e in range(5))
    expect(ties_in_order, "order within each expert", "increasing assignment numbers (a stable sort)",
           "a shuffled group", section)
    expect_equal(sizes, np.bincount(flat, minlength=6), "group sizes for 40 tokens x 2 choices", section)


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
def test_combine_sorted_round_trip(fn):
    rng = np.random.default_rng(14)
    x, expert_index = rng.standard_normal((7, 3)), rng.integers(0, 4, (7, 2))
    gates = rng.uniform(size=(7, 2))
    order = np.argsort(expert_index.reshape(-1), kind="stable")
    scale = np.array([1.0, 2.0, -1.0, 0.5])  # expert e multiplies its tokens by scale[e]
    sorted_outputs = x[order // 2] * scale[expert_index.reshape(-1)[order], None]
    expected = (gates[:, :, None] * x[:, None, :] * scale[expert_index][:, :, None]).sum(axis=1)
    expect_close(fn(sorted_outputs, order, gates), expected,
                 "combine_sorted after four scaling experts on 7 tokens x 2 choices",
                 see("Dropless dispatch by sorting"))
