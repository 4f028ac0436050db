"""Capacity and the sorted dispatch (docs/formulas.md §7–§8): the rounding, the order in which
buffers fill, exact drop counts, and the layer against a naive per-token loop."""
import math
from fractions import Fraction

import numpy as np
import pytest

import minimoe as mm
from minimoe.moe import MoE, MoEConfig, expert_capacity, plan_dispatch


# ---- capacity = ceil(k * T / E * cf) ----------------------------------------------------------
@pytest.mark.parametrize("t, e, k, cf, expected", [
    (10, 4, 1, 1.0, 3),   # 2.5: floor would give 2
    (6, 4, 2, 1.25, 4),   # 3.75: floor 3
    (8, 4, 2, 1.1, 5),    # 4.4: floor 4
    (8, 4, 2, 1.0, 4),    # exact
    (25, 5, 2, 1.1, 11),  # exactly 11, though 2 * 25 * 1.1 / 5 is 11.000000000000002 in floats
    (3, 8, 1, 0.5, 1),    # 0.1875: at least one slot
])
def test_capacity_rounds_up(t, e, k, cf, expected):
    assert expert_capacity(t, e, k, cf) == expected


@pytest.mark.parametrize("t, e, k, cf, expected", [
    (100, 2, 1, 1.1, 55),  # 55 exactly; 100 * 1.1 / 2 is 55.00000000000001 in floats
    (1000, 10, 1, 1.1, 110),
    (8, 8, 1, 1.0000000001, 2),  # a hair above 1: one slot more, though rounding to 9 decimals loses it
    (10**12, 10, 1, 1.3, 130_000_000_000),  # large T * cf: exact, where a float would carry its error
    (10**15, 7, 3, 2.2, 942_857_142_857_143),
    (3, 3, 1, 0.1, 1),
    (30, 3, 1, 0.7, 7),  # 0.7 * 10 = 7.000000000000001 in floats
    (7, 1, 1, np.float64(1.1), 8),  # a NumPy float is read as its decimal too
])
def test_capacity_is_exact_on_the_decimal_factor(t, e, k, cf, expected):
    exact = math.ceil(Fraction(k * t) * Fraction(str(cf)) / e)
    assert exact == expected
    got = expert_capacity(t, e, k, cf)
    assert got == expected and isinstance(got, int)


def test_capacity_agrees_with_exact_arithmetic_on_a_grid_of_decimals():
    """Every factor 0.01 .. 4.00 in steps of 0.01 (written as decimals), against Decimal arithmetic."""
    for hundredths in range(1, 401):
        cf = hundredths / 100  # the float nearest to the decimal; its str is that decimal
        for t, e, k in [(100, 2, 1), (37, 4, 2), (1000, 8, 2), (12345, 64, 6)]:
            exact = math.ceil(Fraction(k * t * hundredths, 100 * e))
            assert expert_capacity(t, e, k, cf) == exact, (t, e, k, cf)


@pytest.mark.parametrize("cf", [0, -1.0, float("nan"), float("inf")])
def test_capacity_factor_must_be_positive(cf):
    with pytest.raises(ValueError, match="capacity_factor must be a finite number > 0.*None for dropless"):
        expert_capacity(8, 4, 2, cf)


# ---- the plan: sorted by expert, first choices first, exact drops -----------------------------------
def test_plan_on_a_hand_case():
    # assignment a = choice * T + token: first choices are 0..3, second choices 4..7
    # expert 0's queue: a0, a1, a2 (first choices), a7 (token 3's second) -> keeps a0, a1
    # expert 1's queue: a3 (token 3's first), then a4, a6 (second choices) -> keeps a3, a4
    # expert 2's queue: a5 -> keeps it
    index = np.array([[0, 1], [0, 2], [0, 1], [1, 0]])
    plan = plan_dispatch(index, 3, capacity=2)
    np.testing.assert_array_equal(plan.order, [0, 1, 3, 4, 5])
    np.testing.assert_array_equal(plan.group_sizes, [2, 2, 1])
    assert plan.n_dropped == 3


def test_first_choices_fill_the_buffer_before_second_choices():
    # expert 1 is token 0's second choice and the first choice of tokens 1 and 2. With two slots
    # the two first choices (a1, a2) win, though token 0 comes first in the batch: a3 is dropped
    index = np.array([[0, 1], [1, 0], [1, 0]])
    plan = plan_dispatch(index, 2, capacity=2)
    np.testing.assert_array_equal(plan.order, [0, 4, 1, 2])  # expert 0: a0, a4; expert 1: a1, a2
    assert plan.n_dropped == 2  # a3 (token 0's second) and a5 (token 2's second, expert 0 full)


def test_dropless_plan_keeps_everything_sorted_by_expert():
    index = np.random.default_rng(0).integers(0, 5, size=(20, 2))
    plan = plan_dispatch(index, 5)
    flat = index.T.reshape(-1)
    assert sorted(plan.order.tolist()) == list(range(40)) and plan.n_dropped == 0
    assert (np.diff(flat[plan.order]) >= 0).all()
    np.testing.assert_array_equal(plan.group_sizes, np.bincount(flat, minlength=5))


def test_no_expert_exceeds_its_capacity_and_drops_add_up():
    rng = np.random.default_rng(1)
    for _ in range(20):
        t, e, k = rng.integers(1, 30), rng.integers(1, 6), 1
        index = rng.integers(0, e, size=(t, k))
        capacity = int(rng.integers(1, 6))
        plan = plan_dispatch(index, e, capacity)
        assert plan.group_sizes.max() <= capacity
        counts = np.bincount(index.reshape(-1), minlength=e)
        assert plan.n_dropped == (counts - np.minimum(counts, capacity)).sum()
        assert len(plan.order) + plan.n_dropped == t * k


def test_assignments_the_router_does_not_keep_are_neither_computed_nor_dropped():
    index = np.array([[0, 1], [0, 1], [0, 1]])
    keep = np.array([[True, False], [True, True], [True, False]])
    plan = plan_dispatch(index, 2, capacity=2, keep=keep)
    np.testing.assert_array_equal(plan.order, [0, 1, 4])  # expert 0 keeps tokens 0, 1; expert 1 token 1's second
    np.testing.assert_array_equal(plan.group_sizes, [2, 1])
    assert plan.n_dropped == 1  # token 2's first choice, over capacity; the unkept seconds are not drops


def test_plan_rejects_a_capacity_below_one():
    with pytest.raises(ValueError, match="capacity must be at least 1"):
        plan_dispatch(np.zeros((3, 1), dtype=np.int64), 2, capacity=0)


# ---- the layer against a naive per-token loop ------------------------------------------------------
def float64_layer(seed=0, router_scale=3.0, **options):
    mm.manual_seed(seed)
    cfg = dict(d_model=5, n_experts=4, top_k=2, expert_hidden=6, balance_loss=None)
    layer = MoE(MoEConfig(**{**cfg, **options}))
    for p in layer.parameters():
        p.data = p.data.astype(np.float64)
    layer.router.weight.data = layer.router.weight.data * router_scale  # sharp routing: some experts overflow
    return layer


def gelu(u):
    return 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))


def expert_ffn(state, prefix, e, x_row, activation):
    u = x_row @ state[prefix + "w_in"][e] + state[prefix + "b_in"][e]
    if activation == "gelu":
        hidden = gelu(u)
    else:
        v = x_row @ state[prefix + "w_gate"][e]
        hidden = v / (1 + np.exp(-v)) * u
    return hidden @ state[prefix + "w_out"][e] + state[prefix + "b_out"][e]


def naive_moe(layer, x):
    """One token and one choice at a time: route, drop over capacity (first choices first), weight."""
    cfg, state = layer.cfg, layer.state_dict()
    n = x.shape[0]
    logits = x @ state["router.weight"]
    p = np.exp(logits - logits.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    k = 1 if cfg.router == "switch" else cfg.top_k
    capacity = math.ceil(k * n * cfg.capacity_factor / cfg.n_experts - 1e-9) if cfg.capacity_factor else n * k
    used = [0] * cfg.n_experts
    y = np.zeros_like(x)
    for choice in range(k):
        for token in range(n):
            ranked = sorted(range(cfg.n_experts), key=lambda e: -p[token, e])
            expert = ranked[choice]
            if used[expert] == capacity:
                continue
            used[expert] += 1
            gate = p[token, expert] if cfg.router == "switch" else p[token, expert] / sum(p[token, ranked[:k]])
            y[token] += gate * expert_ffn(state, "experts.", expert, x[token], cfg.activation)
    for token in range(n):
        if cfg.n_shared_experts:
            y[token] += expert_ffn(state, "shared.", 0, x[token], cfg.activation)
    return y


@pytest.mark.parametrize("options", [
    dict(router="switch"),
    dict(router="topk"),
    dict(router="switch", capacity_factor=1.0),
    dict(router="topk", capacity_factor=0.75),
    dict(router="topk", top_k=3, capacity_factor=1.0),
    dict(router="topk", n_shared_experts=2),
    dict(router="topk", activation="swiglu"),
    dict(router="switch", activation="swiglu", capacity_factor=1.25, n_shared_experts=1),
], ids=lambda o: "-".join(f"{k}={v}" for k, v in o.items()))
def test_sorted_dispatch_equals_a_naive_per_token_loop(options):
    layer = float64_layer(**options)
    x = np.random.default_rng(2).normal(size=(12, 5))
    y = layer(mm.tensor(x, dtype=np.float64)).data
    np.testing.assert_allclose(y, naive_moe(layer, x), rtol=1e-10, atol=1e-12)
    if options.get("capacity_factor"):
        k = 1 if options["router"] == "switch" else options.get("top_k", 2)
        assert layer.report.tokens_per_expert.max() <= expert_capacity(12, 4, k, options["capacity_factor"])
        assert layer.report.dropped_fraction > 0  # the case really drops tokens


def test_a_large_enough_capacity_equals_dropless():
    x = mm.tensor(np.random.default_rng(3).normal(size=(2, 6, 5)), dtype=np.float64)
    dropless = float64_layer(seed=4)
    y = dropless(x).data
    for cf in (2.0, 4.0):  # cf = E / k: every expert can take every token
        capped = float64_layer(seed=4, capacity_factor=cf)
        np.testing.assert_array_equal(capped(x).data, y)
        assert capped.report.dropped_fraction == 0.0


def test_dropped_tokens_pass_nothing_through_the_layer():
    layer = float64_layer(router="switch", capacity_factor=0.5, router_scale=0.0)  # all choose expert 0
    x = np.random.default_rng(5).normal(size=(8, 5))
    y = layer(mm.tensor(x, dtype=np.float64)).data
    # C = ceil(8 / 4 * 0.5) = 1: only token 0 is computed; the residual connection outside carries the rest
    assert layer.report.dropped_fraction == 7 / 8
    np.testing.assert_array_equal(y[1:], 0.0)
    assert np.abs(y[0]).sum() > 0
