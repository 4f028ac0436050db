"""Sparse upcycling (minimoe.models.upcycle): the upcycled model computes what the dense model
computed while its experts are copies and its gates sum to one; every weight but the router is
carried over; Switch's unrenormalised gate scales the copied FFN; training breaks the symmetry."""
import dataclasses

import numpy as np
import pytest

import minimoe as mm
from minimoe import functional as F
from minimoe.models import ModelConfig, Transformer, upcycle
from minimoe.optim import AdamW

DENSE = ModelConfig(d_model=16, n_layers=2, n_heads=2, context=8, dense=True, ffn_hidden=24)


def build(config, seed=0, dtype=np.float64):
    mm.manual_seed(seed)
    model = Transformer(config)
    for p in model.parameters():
        p.data = p.data.astype(dtype)
    return model


def token_ids(seed=0, batch=3):
    return np.random.default_rng(seed).integers(0, 96, size=(batch, DENSE.context))


@pytest.mark.parametrize("n_experts, top_k, changes", [(4, 2, {}), (8, 1, {}), (5, 3, {}), (4, 2, {"moe_every": 2})],
                         ids=["E4-top2", "E8-top1", "E5-top3", "every-other-block"])
def test_the_upcycled_model_computes_what_the_dense_model_computed(n_experts, top_k, changes):
    dense = build(dataclasses.replace(DENSE, n_layers=3))
    moe = upcycle(dense, n_experts, top_k, **changes)
    x = token_ids()
    with mm.no_grad():
        expected, got = dense(x).numpy(), moe(x).numpy()
    assert moe.config.n_experts == n_experts and moe.config.experts_per_token == top_k
    assert len(moe.moe_layers()) == (2 if changes else 3)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    chosen = np.concatenate([r.expert_index.reshape(-1, top_k) for r in moe.routing_reports()])
    assert len(np.unique(chosen)) > 1  # the routers do route: the match is not one expert doing everything


def test_every_weight_but_the_router_is_copied_and_the_dense_model_is_left_alone():
    dense = build(DENSE, seed=1)
    before = dense.state_dict()
    moe = upcycle(dense, 6, 2)
    state = moe.state_dict()
    for name, value in state.items():
        if ".router." in name:
            assert value.shape == (DENSE.d_model, 6)
            assert 0.5 < value.std() / np.sqrt(0.1 / DENSE.d_model) < 1.5  # a fresh router at the usual scale
        elif ".experts." in name:
            block, kind = name.split(".experts.")
            dense_name = {"w_in": "fc1.weight", "b_in": "fc1.bias", "w_out": "fc2.weight", "b_out": "fc2.bias"}[kind]
            for expert in value:
                np.testing.assert_array_equal(expert, before[f"{block}.{dense_name}"])
        else:
            np.testing.assert_array_equal(value, before[name])
    for name, value in dense.state_dict().items():
        np.testing.assert_array_equal(value, before[name])
    moe.blocks[0].ffn.experts.w_in.data[0] += 1.0  # the experts are copies, not views of the dense FFN
    np.testing.assert_array_equal(dense.blocks[0].ffn.fc1.weight.data, before["blocks.0.ffn.fc1.weight"])


def test_switch_gates_scale_the_copied_ffn_by_the_router_probability():
    dense = build(DENSE, seed=2)
    moe = upcycle(dense, 8, 1, router="switch")
    h = mm.tensor(np.random.default_rng(3).normal(size=(10, DENSE.d_model)), dtype=np.float64)
    layer, ffn = moe.blocks[0].ffn, dense.blocks[0].ffn
    with mm.no_grad():
        gate = layer.router(h).gates.numpy()  # (T, 1): the top-1 probability, about 1/8 at a fresh router
        np.testing.assert_allclose(layer(h).numpy(), gate * ffn(h).numpy(), rtol=1e-12, atol=1e-12)
    assert np.all(gate < 0.5)


def test_training_breaks_the_symmetry_between_the_copies():
    moe = upcycle(build(DENSE, seed=4), 4, 2)
    optimizer = AdamW(moe.parameters(), lr=1e-2)
    x = token_ids(seed=5, batch=4)
    loss = F.cross_entropy(moe(x[:, :-1]), moe.as_ids(x[:, 1:])) + moe.aux_loss()
    loss.backward()
    optimizer.step()
    w_in = moe.blocks[0].ffn.experts.w_in.data  # (E, d, h)
    assert not np.allclose(w_in[0], w_in[1])  # the copies saw different tokens, so they moved apart


def test_bad_inputs_are_refused_with_the_fix():
    dense = build(DENSE)
    with pytest.raises(ValueError, match="dense Transformer"):
        upcycle(build(dataclasses.replace(DENSE, dense=False, n_experts=4, top_k=2, expert_hidden=8)), 4, 2)
    with pytest.raises(ValueError, match="n_experts"):
        upcycle(dense, 0, 1)
    with pytest.raises(ValueError, match="top_k"):
        upcycle(dense, 4, 2.0)
    with pytest.raises(ValueError):
        upcycle(dense, 2, 3)  # more experts per token than there are
