"""Finite-difference gradient checks (float64, relative error < 1e-6) through the whole MoE layer,
for every router's differentiable path, with the auxiliary losses in the checked output.

Routing decisions (top-k, capacity, random routing) are piecewise constant: a nudge of 1e-6 does
not flip them as long as no two scores tie, so the router weights are scaled up to keep scores
apart. Random draws (router noise, random routing, expert dropout) are re-seeded before every
forward, so each evaluation sees the same noise.
"""
import contextlib
import functools

import numpy as np
import pytest

import minimoe as mm
from minimoe.moe import MoE, MoEConfig

pytestmark = pytest.mark.usefixtures("engine_path")  # every check on the plain and the fast path

BASE = dict(d_model=4, n_experts=4, top_k=2, expert_hidden=5, balance_coef=0.3, z_loss_coef=0.05)

# name: (config options, training?, re-seed before each forward?, parameters to check)
CASES = {
    "dense": (dict(router="dense"), False, False, ["router.weight", "experts.w_in"]),
    "topk": (dict(router="topk"), False, False, ["router.weight", "experts.w_out"]),
    "topk-no-renorm": (dict(router="topk", renormalize=False), False, False, ["router.weight"]),
    "topk_then_softmax": (dict(router="topk_then_softmax", top_k=3), False, False, ["router.weight"]),
    "noisy_topk-train": (dict(router="noisy_topk", balance_loss="importance_load"), True, True,
                         ["router.weight", "router.noise_weight"]),
    "noisy_topk-eval": (dict(router="noisy_topk", balance_loss="importance_load"), False, False, ["router.weight"]),
    "switch": (dict(router="switch"), False, False, ["router.weight", "experts.b_in"]),
    "switch-jitter": (dict(router="switch", router_jitter=0.1), True, True, ["router.weight"]),
    "gshard-eval": (dict(router="gshard"), False, False, ["router.weight"]),
    "gshard-train": (dict(router="gshard", capacity_factor=1.0), True, True, ["router.weight"]),
    "expert_choice": (dict(router="expert_choice", capacity_factor=1.5), False, False, ["router.weight", "experts.b_out"]),
    "hash": (dict(router="hash", balance_loss=None), False, False, ["experts.w_in"]),
    "soft": (dict(router="soft", slots_per_expert=2), False, False, ["soft.phi", "soft.scale", "soft.experts.w_in"]),
    "deepseek": (dict(router="deepseek", balance_loss="deepseek_sequence", routed_scaling=2.5), False, False,
                 ["router.weight"]),
    "deepseek-groups": (dict(router="deepseek", balance_loss="deepseek_sequence", n_experts=8, top_k=3,
                             n_groups=4, topk_groups=2), False, False, ["router.weight"]),
    "capacity-dropping": (dict(router="topk", capacity_factor=0.75), False, False, ["router.weight", "experts.w_in"]),
    "shared-experts": (dict(router="topk", n_shared_experts=2), False, False, ["shared.w_in", "shared.b_out"]),
    "swiglu": (dict(router="topk", activation="swiglu", n_shared_experts=1), False, False,
               ["experts.w_gate", "experts.w_in", "shared.w_gate"]),
    "expert-dropout": (dict(router="topk", expert_dropout=0.3, n_shared_experts=1), True, True,
                       ["experts.w_out", "shared.w_in"]),
}


def float64_layer(options, training):
    mm.manual_seed(0)
    layer = MoE(MoEConfig(**{**BASE, **options}))
    for p in layer.parameters():
        p.data = p.data.astype(np.float64)
    rng = np.random.default_rng(1)
    for name, p in layer.named_parameters():
        if name.startswith("router.") and name != "router.expert_bias":
            p.data = rng.normal(size=p.shape)  # well-separated scores: no ties near the nudges
    if options.get("router") == "deepseek":
        layer.router.expert_bias.data = rng.normal(scale=0.1, size=layer.router.expert_bias.shape)
    return layer.train(training)


@contextlib.contextmanager
def swapped(layer, path, value):
    """The layer with the parameter at `path` ("router.weight") replaced by the tensor `value`,
    so the gradient of the forward flows into `value`."""
    *owners, name = path.split(".")
    owner = functools.reduce(getattr, owners, layer)
    original = getattr(owner, name)
    object.__setattr__(owner, name, value)  # not registered: the module's parameters stay as they were
    try:
        yield
    finally:
        object.__setattr__(owner, name, original)


def checked_output(layer, reseed):
    """fn(x) = sum(y * fixed weights) + aux_loss, with the noise fixed if `reseed`."""
    cfg = layer.cfg
    x = np.random.default_rng(2).normal(size=(2, 4, cfg.d_model))
    ids = np.arange(8).reshape(2, 4)
    probe = mm.tensor(np.random.default_rng(3).normal(size=x.shape), dtype=np.float64)

    def fn(x_tensor):
        if reseed:
            mm.manual_seed(7)
        y = layer(x_tensor, token_ids=ids)
        return (y * probe).sum() + layer.aux_loss

    return fn, x


def assert_gradcheck_nontrivial(fn, value):
    """gradcheck, plus a guard that the gradient is not zero everywhere (which would pass trivially)."""
    mm.assert_gradcheck(fn, [value])
    tensor = mm.tensor(value, dtype=np.float64, requires_grad=True)
    fn(tensor).backward()
    assert tensor.grad is not None and np.abs(tensor.grad).max() > 1e-6


@pytest.mark.parametrize("case", CASES)
def test_gradcheck_through_the_layer_wrt_the_input(case):
    options, training, reseed, _ = CASES[case]
    layer = float64_layer(options, training)
    fn, x = checked_output(layer, reseed)
    assert_gradcheck_nontrivial(fn, x)


@pytest.mark.parametrize("case", CASES)
def test_gradcheck_through_the_layer_wrt_parameters(case):
    options, training, reseed, paths = CASES[case]
    layer = float64_layer(options, training)
    fn, x = checked_output(layer, reseed)
    x_tensor = mm.tensor(x, dtype=np.float64)
    for path in paths:
        def fn_of_parameter(value, path=path):
            with swapped(layer, path, value):
                return fn(x_tensor)

        current = dict(layer.named_parameters())[path].data.copy()
        assert_gradcheck_nontrivial(fn_of_parameter, current)


def forward_of(case):
    options, training, reseed, _ = CASES[case]
    layer = float64_layer(options, training)
    fn, x = checked_output(layer, reseed)
    fn(mm.tensor(x, dtype=np.float64))
    return layer


def test_the_cases_exercise_what_they_name():
    """Guards on the cases above: the losses are in the output, tokens really are dropped, and in
    GShard training some second choices are not dispatched (random routing, or a full buffer)."""
    for case in ("topk", "noisy_topk-train", "deepseek", "deepseek-groups"):
        layer = forward_of(case)
        assert layer.aux_loss.item() > 0.05
        assert len(layer.report.losses) >= 2  # a balance loss and the z-loss
    assert forward_of("capacity-dropping").report.dropped_fraction > 0
    gshard = forward_of("gshard-train").report
    assert 0 < (gshard.expert_index[..., 1] == -1).sum() < 8
