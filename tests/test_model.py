"""The tiny Transformer: sizes against the calculator, causality, rotary positions, gradients
against finite differences, the dense twin's matched compute, sampling, and its config."""
import dataclasses

import numpy as np
import pytest

import minimoe as mm
from minimoe import functional as F
from minimoe.calculator import count_parameters, flops_per_token
from minimoe.models import ModelConfig, Transformer, generate, model_summary
from minimoe.models.rotary import rotary

from model_gradients import check_sampled_gradients  # noqa: E402

TINY = ModelConfig(d_model=16, n_layers=2, n_heads=2, context=8, n_experts=4, top_k=2, expert_hidden=8)


def build(config, seed=0, dtype=np.float32):
    mm.manual_seed(seed)
    model = Transformer(config)
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    return model


def ids(rng, batch=2, length=8):
    return rng.integers(0, 96, size=(batch, length))


# ---- sizes -------------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [
    TINY,
    TINY.dense_twin(),
    dataclasses.replace(TINY, positions="rotary", tie_weights=True),
    dataclasses.replace(TINY, n_layers=3, moe_every=2, n_shared_experts=1),
], ids=["moe", "dense", "rotary-tied", "every-other-shared"])
def test_parameter_count_matches_the_calculator(config):
    model = build(config)
    expected = count_parameters(config.transformer_spec()).total
    assert model.num_parameters() == model_summary(config).total_params == expected
    assert len(model.moe_layers()) == sum(config.is_moe_layer(i) for i in range(config.n_layers))


def test_dense_twin_has_the_moe_models_active_compute():
    config = ModelConfig(d_model=128, n_layers=4, n_heads=4, context=128, n_experts=8, top_k=2,
                         expert_hidden=512)  # the benchmark's reference workload
    twin = config.dense_twin()
    assert twin.dense and twin.dense_hidden == 2 * 512
    moe, dense = model_summary(config), model_summary(twin)
    # Equal but for the router: a d x E matmul per MoE layer, 2 FLOPs per multiply-add.
    router = config.n_layers * config.d_model * config.n_experts
    assert moe.flops_per_token - dense.flops_per_token == 2 * router
    # Parameters: also the second expert's output bias (d per layer), which the dense FFN has once.
    assert moe.active_params - dense.active_params == router + config.n_layers * config.d_model
    assert moe.total_params > 3 * dense.total_params  # ... while the MoE holds 8 experts per layer
    # The reference workload: about 1.37 M active parameters.
    assert abs(dense.active_params / 1e6 - 1.37) < 0.02 and abs(moe.active_params / 1e6 - 1.37) < 0.02
    shared = dataclasses.replace(config, n_shared_experts=1, top_k=1)  # 1 routed + 1 shared expert
    assert shared.dense_twin().dense_hidden == 2 * 512
    moe_flops = flops_per_token(shared.transformer_spec(), 128)
    assert moe_flops - flops_per_token(shared.dense_twin().transformer_spec(), 128) == 2 * router


# ---- forward ----------------------------------------------------------------------------------

@pytest.mark.parametrize("config", [TINY, dataclasses.replace(TINY, positions="rotary"), TINY.dense_twin()],
                         ids=["moe", "rotary", "dense"])
def test_logits_at_a_position_ignore_later_tokens(config, rng):
    model = build(config)
    x = ids(rng)
    changed = x.copy()
    changed[:, 5:] = (changed[:, 5:] + 1) % 96
    before, after = model(x).numpy(), model(changed).numpy()
    assert before.shape == (2, 8, 96)
    np.testing.assert_allclose(before[:, :5], after[:, :5], rtol=1e-5, atol=1e-6)
    assert not np.allclose(before[:, 5:], after[:, 5:])


def test_initial_loss_is_near_uniform(rng):
    model = build(TINY)
    x = ids(rng, batch=4)
    loss = F.cross_entropy(model(x), x).item()
    assert abs(loss - np.log(96)) < 0.05  # small logits at initialisation


def test_aux_loss_sums_the_moe_layers_and_is_zero_when_dense(rng):
    model = build(TINY)
    model(ids(rng))
    per_layer = [layer.aux_loss.item() for layer in model.moe_layers()]
    assert len(per_layer) == 2 and all(v > 0 for v in per_layer)
    assert model.aux_loss().item() == pytest.approx(sum(per_layer))
    assert len(model.routing_reports()) == 2
    dense = build(TINY.dense_twin())
    dense(ids(rng))
    assert dense.aux_loss().item() == 0.0 and dense.routing_reports() == []


def test_too_long_or_badly_shaped_input_is_refused(rng):
    model = build(TINY)
    with pytest.raises(ValueError, match="context is 8"):
        model(ids(rng, length=9))
    with pytest.raises(ValueError, match="shape"):
        model(np.arange(5))


# ---- rotary positions ---------------------------------------------------------------------------

def test_rotary_gradient_matches_finite_differences(rng):
    mm.assert_gradcheck(rotary, [rng.standard_normal((1, 2, 5, 4))])


def test_rotary_scores_depend_only_on_the_offset(rng):
    q, k = rng.standard_normal(4), rng.standard_normal(4)
    x = mm.tensor(np.stack([np.tile(q, (6, 1)), np.tile(k, (6, 1))])[None], dtype=np.float64)  # (1, 2, 6, 4)
    rq, rk = rotary(x).numpy()[0]
    assert rq[3] @ rk[1] == pytest.approx(rq[4] @ rk[2]) == pytest.approx(rq[5] @ rk[3])
    assert np.linalg.norm(rq, axis=1) == pytest.approx(np.full(6, np.linalg.norm(q)))  # a rotation
    assert rq[0] == pytest.approx(q)  # position 0 is not rotated


# ---- gradients of the whole model -------------------------------------------------------------

DENSE_ROTARY_TIED = dataclasses.replace(TINY.dense_twin(), positions="rotary", tie_weights=True)


@pytest.mark.parametrize("config", [TINY, DENSE_ROTARY_TIED], ids=["moe", "dense-rotary-tied"])
def test_model_gradients_match_finite_differences(config, rng):
    """Every parameter tensor, three entries each, in float64 (the loss includes the aux loss)."""
    model = build(config, dtype=np.float64)
    x, y = ids(rng, length=6), ids(rng, length=6)

    def loss():
        return F.cross_entropy(model(x), y) + model.aux_loss()

    check_sampled_gradients(model, loss, rng)


# ---- sampling ----------------------------------------------------------------------------------

def test_generate_is_seeded_crops_to_the_context_and_keeps_the_prompt():
    model = build(TINY)
    prompt = np.arange(1, 13)  # longer than the context of 8
    a = generate(model, prompt, 10, temperature=1.0, seed=3)
    assert a.shape == (22,) and (a[:12] == prompt).all() and ((0 <= a) & (a < 96)).all()
    assert (a == generate(model, prompt, 10, temperature=1.0, seed=3)).all()
    assert not (a == generate(model, prompt, 10, temperature=1.0, seed=4)).all()
    greedy = generate(model, prompt, 1, temperature=0)
    assert greedy[-1] == int(np.argmax(model(prompt[-8:][None]).numpy()[0, -1]))
    assert model.training  # generate restores the mode it found
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, 1, temperature=-1)


# ---- the config --------------------------------------------------------------------------------

def test_config_round_trips_through_json_and_refuses_unknown_keys():
    import json

    config = dataclasses.replace(TINY, router="switch", capacity_factor=1.25, positions="rotary")
    assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    with pytest.raises(ValueError, match=r"unknown ModelConfig field\(s\) \['d_modle'\]"):
        ModelConfig.from_dict({**config.to_dict(), "d_modle": 3})


@pytest.mark.parametrize("change, message", [
    ({"n_heads": 3}, "divide by n_heads"),
    ({"positions": "sinusoidal"}, "positions must be one of"),
    ({"top_k": 5}, "top_k"),
    ({"router": "magic"}, "unknown router"),
    ({"d_model": 0}, "at least 1"),
    ({"dropout": 1.0}, "dropout"),
])
def test_bad_configs_are_refused_with_the_field_named(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(TINY, **change)


def test_switch_router_dense_twin_uses_one_expert():
    switch = dataclasses.replace(TINY, router="switch")
    assert switch.dense_twin().dense_hidden == TINY.expert_hidden
    router = TINY.n_layers * TINY.d_model * TINY.n_experts  # the router weights
    assert model_summary(switch).active_params - model_summary(switch.dense_twin()).active_params == router


def test_calculator_counts_the_deepseek_bias_and_soft_moe_slots_reach_the_layer():
    from minimoe.models import ModelConfig, Transformer, model_summary

    cfg = ModelConfig(d_model=16, n_layers=2, n_heads=2, context=8, n_experts=4, top_k=2, expert_hidden=8,
                      router="deepseek", balance_loss=None, n_shared_experts=1)
    assert model_summary(cfg).total_params == Transformer(cfg).num_parameters()
    soft = ModelConfig(d_model=16, n_layers=1, n_heads=2, context=8, n_experts=4, expert_hidden=8,
                       router="soft", balance_loss=None, slots_per_expert=3)
    assert soft.moe_config().slots_per_expert == 3
