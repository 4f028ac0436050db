"""Grades exercises/ex10_scaling.py: sparse upcycling, routing drift, and a power law in the experts."""
import dataclasses

import numpy as np
import pytest

import minimoe as mm
from graders._checks import expect, expect_close, expect_raises, lesson
from minimoe import finetune
from minimoe.models import ModelConfig, Transformer
from minimoe.models.upcycle import upcycle as library_upcycle
from minimoe.models.upcycle import upcycled_state

MODULE = "ex10_scaling"
see = lesson(MODULE)
TWINS = {"upcycle": [library_upcycle, upcycled_state], "routing_drift": [finetune.routing_drift]}
FFN_OF_EXPERT = {"w_in": "fc1.weight", "b_in": "fc1.bias", "w_out": "fc2.weight", "b_out": "fc2.bias"}


def _fit_by_hand(e, loss):
    x, y = np.log(e), np.log(loss)
    slope = ((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()
    return float(np.exp(y.mean() - slope * x.mean())), float(slope)


@pytest.mark.exercise("fit_power_law", points=1)
def test_fit_power_law_recovers_an_exact_law(fn, rng):
    section = see("More experts at fixed active compute")
    got = fn(np.array([1, 2, 4, 8]), np.array([4.0, 2.0, 1.0, 0.5]))
    expect(isinstance(got, tuple) and len(got) == 2 and all(isinstance(v, float) for v in got),
           "fit_power_law(...): the result", "a pair (c, alpha) of Python floats", repr(got), section)
    expect_close(got, [4.0, -1.0], "fit_power_law(E = [1, 2, 4, 8], loss = [4, 2, 1, 0.5]): (c, alpha)", section)
    c, alpha = float(rng.uniform(1.5, 4.0)), float(rng.uniform(-0.2, -0.01))
    e = np.array([1, 2, 4, 8, 16, 32])
    expect_close(fn(e, c * e**alpha), [c, alpha], f"fit_power_law of loss = {c:.4f} * E^{alpha:.4f}: (c, alpha)",
                 section, rtol=1e-9)


@pytest.mark.exercise("fit_power_law", points=1)
def test_fit_power_law_on_noisy_losses(fn, rng):
    section = see("More experts at fixed active compute")
    e = np.repeat([1, 2, 4, 8, 16, 32], 3)  # three seeds per expert count
    loss = 2.5 * e ** -0.02 * np.exp(rng.normal(0, 0.01, e.shape))
    expect_close(fn(e, loss), _fit_by_hand(e, loss), "fit_power_law of noisy losses, 3 per expert count: (c, alpha) "
                 "of the least-squares line in log space", section, rtol=1e-7)
    expect_raises(ValueError, lambda: fn(np.array([4, 4, 4]), np.array([2.0, 2.1, 2.2])),
                  "fit_power_law with a single expert count", section)
    expect_raises(ValueError, lambda: fn(np.array([1, 2]), np.array([2.0, 0.0])), "fit_power_law with a loss of 0",
                  section)


def _dense_model(rng):
    """A small dense Transformer with random sizes, in float64, its weights drawn from the run's seed."""
    config = ModelConfig(d_model=int(rng.choice([8, 12, 16])), n_layers=int(rng.integers(1, 4)), n_heads=2,
                         context=8, dense=True, ffn_hidden=int(rng.integers(5, 20)))
    mm.manual_seed(int(rng.integers(2**31)))
    model = Transformer(config)
    for p in model.parameters():
        p.data = rng.normal(0.0, 0.3, p.shape)  # float64, and unlike any fresh draw
    return model


def _upcycled(fn, rng, what, section):
    dense = _dense_model(rng)
    n_experts = int(rng.integers(2, 9))
    top_k = int(rng.integers(1, n_experts + 1))
    before = dense.state_dict()
    got = fn(dense, n_experts, top_k)
    expect(isinstance(got, Transformer), f"{what}: the result", "a minimoe Transformer", type(got).__name__, section)
    return dense, before, got, n_experts, top_k


@pytest.mark.exercise("upcycle", points=1)
def test_upcycle_copies_the_dense_weights_into_every_expert(fn, rng):
    section = see("Sparse upcycling")
    for _ in range(2):
        dense, before, got, n_experts, top_k = _upcycled(fn, rng, "upcycle", section)
        what = f"upcycle(dense model with config {dense.config}, n_experts={n_experts}, top_k={top_k})"
        c = got.config
        expect((c.dense, c.n_experts, c.top_k, c.expert_hidden, c.router, c.renormalize, c.n_shared_experts)
               == (False, n_experts, top_k, dense.config.dense_hidden, "topk", True, 0), f"{what}: the new config",
               f"dense=False, n_experts={n_experts}, top_k={top_k}, expert_hidden={dense.config.dense_hidden}, "
               "router='topk', renormalize=True, n_shared_experts=0", str(c), section)
        state = got.state_dict()
        for name, value in state.items():
            if ".experts." in name:
                block, kind = name.split(".experts.")
                expected = np.broadcast_to(before[f"{block}.{FFN_OF_EXPERT[kind]}"], value.shape)
                expect_close(value, expected, f"{what}: {name} (every expert a copy of the block's dense FFN)",
                             section, rtol=0, atol=0)
            elif ".router." not in name:
                expect_close(value, before[name], f"{what}: {name} (carried over from the dense model)", section,
                             rtol=0, atol=0)
        for name, value in dense.state_dict().items():
            expect_close(value, before[name], f"{what}: the dense model's {name} afterwards (it must not change)",
                         section, rtol=0, atol=0)
        got.blocks[0].ffn.experts.w_in.data[...] += 1.0
        expect_close(dense.blocks[0].ffn.fc1.weight.data, before["blocks.0.ffn.fc1.weight"],
                     f"{what}: the dense fc1 weight after changing the upcycled model's experts (copies, not views)",
                     section, rtol=0, atol=0)


@pytest.mark.exercise("upcycle", points=1)
def test_upcycle_computes_the_dense_models_logits_at_init(fn, rng):
    section = see("Sparse upcycling")
    for _ in range(2):
        dense, _, got, n_experts, top_k = _upcycled(fn, rng, "upcycle", section)
        what = (f"upcycle(..., n_experts={n_experts}, top_k={top_k}) on a float64 model of "
                f"{dense.config.n_layers} block(s)")
        expect(got.token_embedding.weight.dtype == np.float64, f"{what}: the parameters' dtype", "float64 (the "
               "dense model's)", str(got.token_embedding.weight.dtype), section)
        ids = rng.integers(0, dense.config.vocab_size, (3, dense.config.context))
        with mm.no_grad():
            expect_close(got(ids), dense(ids).numpy(), f"{what}: logits at init (identical experts, gates summing "
                         "to one)", section, rtol=1e-9, atol=1e-9)


@pytest.mark.exercise("upcycle", points=1)
def test_upcycle_draws_a_fresh_router_and_refuses_bad_input(fn, rng):
    section = see("Sparse upcycling")
    dense = _dense_model(rng)
    got = fn(dense, 8, 2)
    expect(isinstance(got, Transformer), "upcycle(dense, 8, 2): the result", "a minimoe Transformer",
           type(got).__name__, section)
    d = dense.config.d_model
    for i, layer in enumerate(got.moe_layers()):
        weight = layer.router.weight.numpy()
        expect(weight.shape == (d, 8) and 0.5 < weight.std() / np.sqrt(0.1 / d) < 1.5,
               f"upcycle(dense, 8, 2): the router of MoE layer {i}", f"a fresh (d, E) = ({d}, 8) router as the "
               f"Transformer draws it (std about sqrt(0.1 / d) = {np.sqrt(0.1 / d):.3f})",
               f"shape {weight.shape}, std {weight.std():.3g}", section)
    ids = rng.integers(0, dense.config.vocab_size, (4, dense.config.context))
    with mm.no_grad():
        got(ids)
    chosen = sorted({int(e) for r in got.routing_reports() for e in r.expert_index.reshape(-1)})
    expect(len(chosen) > 2, "upcycle(dense, 8, 2): experts chosen on 32 tokens", "more than two experts "
           "(a fresh router routes tokens differently)", f"only {chosen}", section)
    moe = Transformer(dataclasses.replace(dense.config, dense=False, n_experts=4, top_k=2, expert_hidden=8))
    expect_raises(ValueError, lambda: fn(moe, 4, 2), "upcycle of a model that is already MoE", section)
    expect_raises(ValueError, lambda: fn(dense, 2, 3), "upcycle with top_k=3 > n_experts=2", section)
    expect_raises(ValueError, lambda: fn(dense, 0, 1), "upcycle with n_experts=0", section)


def _drift_by_hand(before, after, first_only):
    before, after = before.reshape(-1, before.shape[-1]), after.reshape(-1, after.shape[-1])
    if first_only:
        return float(np.mean([b[0] != a[0] for b, a in zip(before, after)]))
    return float(np.mean([1 - len(set(b) & set(a)) / len(b) for b, a in zip(before, after)]))


def _random_routing(rng, shape, n_experts):
    """(..., k) distinct experts per token: the first k of a random permutation each."""
    k = shape[-1]
    return np.argsort(rng.uniform(size=shape[:-1] + (n_experts,)), axis=-1)[..., :k]


def _changed(rng, ids, n_experts, share):
    """ids with about `share` of the tokens given a fresh routing."""
    fresh = _random_routing(rng, ids.shape, n_experts)
    redo = rng.uniform(size=ids.shape[:-1] + (1,)) < share
    return np.where(redo, fresh, ids)


@pytest.mark.exercise("routing_drift", points=1)
def test_routing_drift_of_the_first_choice(fn, rng):
    section = see("Fine-tuning an MoE")
    before = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    after = np.array([[0, 5], [3, 2], [4, 5], [1, 6]])  # token 1 swapped its two, token 3 changed both
    got = fn(before, after)
    expect(isinstance(got, float), "routing_drift(...): the result", "a Python float", type(got).__name__, section)
    expect_close(got, 0.5, "routing_drift of 4 tokens, top-2, whose first choice changed for tokens 1 and 3", section)
    for shape in [(50, 2), (3, 20, 1), (4, 10, 3)]:
        ids = _random_routing(rng, shape, 8)
        later = _changed(rng, ids, 8, 0.4)
        expect_close(fn(ids, later), _drift_by_hand(ids, later, True), f"routing_drift on random routings of shape "
                     f"{shape} (first choices only)", section)
    expect_raises(ValueError, lambda: fn(before, after[:3]), "routing_drift of arrays of shapes (4, 2) and (3, 2)",
                  section)


@pytest.mark.exercise("routing_drift", points=1)
def test_routing_drift_of_the_set_of_choices(fn, rng):
    section = see("Fine-tuning an MoE")
    before = np.array([[0, 1], [2, 3], [4, 5], [6, 7]])
    after = np.array([[0, 5], [3, 2], [4, 5], [1, 6]])
    # token 0 kept 1 of 2, token 1 both (order ignored), token 2 both, token 3 kept 1 of 2: (0.5 + 0 + 0 + 0.5) / 4
    expect_close(fn(before, after, first_only=False), 0.25, "routing_drift(..., first_only=False) of 4 tokens, "
                 "top-2 (the order within the k does not count)", section)
    for shape in [(60, 2), (2, 25, 4)]:
        ids = _random_routing(rng, shape, 10)
        later = _changed(rng, ids, 10, 0.5)
        expect_close(fn(ids, later, first_only=False), _drift_by_hand(ids, later, False),
                     f"routing_drift(..., first_only=False) on random routings of shape {shape}", section)
    expect_raises(ValueError, lambda: fn(np.zeros((0, 2), int), np.zeros((0, 2), int), first_only=False),
                  "routing_drift of no tokens", section)
