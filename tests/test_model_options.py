"""The model options of Llama-style checkpoints (RMSNorm, bias-free SwiGLU experts and FFNs,
grouped-query attention, rotary theta, OLMoE's QK-norm, Qwen2-MoE's gated shared expert, dense
blocks by number): float64 finite-difference checks of every new op and layer on the plain and
the fast path, hand-computable cases, and the config's checks. The defaults are the course's
model, unchanged (the other test files check those)."""
import dataclasses

import numpy as np
import pytest

import minimoe as mm
from minimoe import functional as F
from minimoe.calculator import count_parameters
from minimoe.models import ModelConfig, Transformer
from minimoe.models.rotary import rotary
from minimoe.moe import MoE, MoEConfig
from minimoe.moe.experts import Experts
from minimoe.nn import GatedMLP, repeat_heads

from test_moe_gradcheck import swapped  # noqa: E402  (the parameter replaced by the checked tensor)

from model_gradients import check_sampled_gradients  # noqa: E402

pytestmark = pytest.mark.usefixtures("engine_path")  # every check on the plain and the fast path

BASE = ModelConfig(d_model=16, n_layers=2, n_heads=4, context=8, n_experts=4, top_k=2, expert_hidden=8)
HF_STYLE = dict(norm="rms", positions="rotary", activation="swiglu", ffn_bias=False, rope_theta=1e6)
OPTION_SETS = {
    "mixtral-gqa": dataclasses.replace(BASE, **HF_STYLE, n_kv_heads=2, norm_eps=1e-5),
    "olmoe-qk-norm-biases": dataclasses.replace(BASE, **HF_STYLE, qk_norm=True, qkv_bias=True, out_bias=True,
                                                renormalize=False, tie_weights=True),
    "qwen2-shared-gate-dense-block": dataclasses.replace(
        BASE, **HF_STYLE, qkv_bias=True, n_kv_heads=1, n_shared_experts=1, shared_expert_hidden=12,
        shared_expert_gate=True, dense_layers=(1,), ffn_hidden=20),
    "deepseek-routing-dense-first": dataclasses.replace(
        BASE, **HF_STYLE, n_layers=3, router="deepseek", n_experts=8, top_k=3, n_groups=4, topk_groups=2,
        routed_scaling=2.5, n_shared_experts=2, dense_layers=(0,), ffn_hidden=20, balance_loss="deepseek_sequence"),
    "deepseek-latent-attention": dataclasses.replace(
        BASE, **HF_STYLE, attention="mla", q_lora_rank=6, kv_lora_rank=8, qk_nope_head_dim=4, qk_rope_head_dim=4,
        v_head_dim=3, rope_interleave=True, qkv_bias=True, router="deepseek", n_experts=4, top_k=2),
    "deepseek-latent-attention-plain-query": dataclasses.replace(
        BASE, **HF_STYLE, attention="mla", kv_lora_rank=8, qk_nope_head_dim=2, qk_rope_head_dim=6, v_head_dim=8),
}


def assert_gradcheck_nontrivial(fn, value):
    """gradcheck, and a guard that the gradient is not zero everywhere (which would pass trivially)."""
    mm.assert_gradcheck(fn, [value])
    tensor = mm.tensor(value, dtype=np.float64, requires_grad=True)
    out = fn(tensor)
    (out * mm.tensor(np.random.default_rng(0).normal(size=out.shape), dtype=np.float64)).sum().backward()
    assert tensor.grad is not None and np.abs(tensor.grad).max() > 1e-6


def check_parameters(module, names, output):
    """gradcheck of output() with respect to each named parameter of `module`."""
    for name in names:
        def of_parameter(value, name=name):
            with swapped(module, name, value):
                return output()
        assert_gradcheck_nontrivial(of_parameter, dict(module.named_parameters())[name].data.copy())


def float64(module):
    for p in module.parameters():
        p.data = p.data.astype(np.float64)
    return module


# ---- the new ops and layers ------------------------------------------------------------------------

def test_repeat_heads_gradient_and_layout(rng):
    mm.assert_gradcheck(lambda x: repeat_heads(x, 3), [rng.standard_normal((2, 2, 3, 4))])
    x = mm.tensor(rng.standard_normal((1, 2, 3, 4)))
    y = repeat_heads(x, 2).numpy()
    for h in range(4):  # query head h reads key/value head h // group
        assert np.array_equal(y[0, h], x.numpy()[0, h // 2])
    assert repeat_heads(x, 1) is x


def test_rotary_theta_gradient_and_relative_positions(rng):
    mm.assert_gradcheck(lambda x: rotary(x, 1e6), [rng.standard_normal((1, 2, 5, 4))])
    q, k = rng.standard_normal(4), rng.standard_normal(4)
    shifted = []
    for offset in (0, 3):  # q at position offset + 1, k at offset: the score depends on the distance only
        x = np.zeros((2, 1, 5, 4))
        x[0, 0, offset + 1], x[1, 0, offset] = q, k
        y = rotary(mm.tensor(x, dtype=np.float64), 500.0).numpy()
        shifted.append(y[0, 0, offset + 1] @ y[1, 0, offset])
    assert np.isclose(shifted[0], shifted[1], rtol=1e-12)
    plain = rotary(mm.tensor(rng.standard_normal((1, 1, 5, 4))), 1e4)
    with pytest.raises(ValueError, match="theta"):
        rotary(plain, 1.0)


def test_gated_mlp_gradient_and_value(rng):
    mm.manual_seed(0)
    layer = float64(GatedMLP(4, 6))
    x = rng.standard_normal((3, 4))
    check_parameters(layer, [name for name, _ in layer.named_parameters()],
                     lambda: layer(mm.tensor(x, dtype=np.float64)))
    assert_gradcheck_nontrivial(layer, x)
    gate, up, down = (getattr(layer, n).weight.numpy() for n in ("gate", "up", "down"))
    silu = (x @ gate) / (1 + np.exp(-(x @ gate)))
    np.testing.assert_allclose(layer(mm.tensor(x, dtype=np.float64)).numpy(), (silu * (x @ up)) @ down, rtol=1e-12)
    assert layer.gate.bias is None


@pytest.mark.parametrize("activation", ["swiglu", "gelu"])
def test_bias_free_experts_gradient_and_value(rng, activation):
    mm.manual_seed(0)
    experts = float64(Experts(3, 4, 5, activation, bias=False))
    assert sorted(name for name, _ in experts.named_parameters()) == sorted(
        ["w_in", "w_out"] + (["w_gate"] if activation == "swiglu" else []))
    x, sizes = rng.standard_normal((7, 4)), [3, 0, 4]
    assert_gradcheck_nontrivial(lambda x: experts(x, sizes), x)
    check_parameters(experts, [name for name, _ in experts.named_parameters()],
                     lambda: experts(mm.tensor(x, dtype=np.float64), sizes))
    if activation == "swiglu":  # expert 2 on rows 3..6: silu(x W_gate) * (x W_in), then W_out, no biases
        rows = x[3:]
        v, u = rows @ experts.w_gate.numpy()[2], rows @ experts.w_in.numpy()[2]
        expected = (v / (1 + np.exp(-v)) * u) @ experts.w_out.numpy()[2]
        np.testing.assert_allclose(experts(mm.tensor(x, dtype=np.float64), sizes).numpy()[3:], expected, rtol=1e-12)


def test_gated_shared_expert_gradient_and_value(rng):
    mm.manual_seed(0)
    cfg = MoEConfig(d_model=4, n_experts=4, top_k=2, expert_hidden=5, activation="swiglu", expert_bias=False,
                    n_shared_experts=1, shared_expert_hidden=3, shared_expert_gate=True, balance_coef=0.3)
    layer = float64(MoE(cfg))
    layer.router.weight.data = rng.normal(size=layer.router.weight.shape)  # scores apart: no ties near the nudges
    x = rng.normal(size=(2, 3, 4))
    probe = mm.tensor(rng.normal(size=x.shape), dtype=np.float64)

    def output(x_tensor):
        return (layer(x_tensor) * probe).sum() + layer.aux_loss

    assert_gradcheck_nontrivial(output, x)
    check_parameters(layer, ["shared_gate", "shared.w_gate", "shared.w_in", "experts.w_out"],
                     lambda: output(mm.tensor(x, dtype=np.float64)))
    # the shared part alone: sigmoid(x w) * shared(x), one gate per token
    flat = x.reshape(-1, 4)
    without_gate = dataclasses.replace(cfg, shared_expert_gate=False)
    mm.manual_seed(0)
    plain = float64(MoE(without_gate))
    state = {k: v for k, v in layer.state_dict().items() if k != "shared_gate"}
    plain.load_state_dict(state)
    gate = 1 / (1 + np.exp(-(flat @ layer.shared_gate.numpy())))  # (N, 1)
    shared = plain.shared(mm.tensor(flat, dtype=np.float64), [flat.shape[0]]).numpy()
    routed = plain(mm.tensor(x, dtype=np.float64)).numpy().reshape(-1, 4) - shared
    np.testing.assert_allclose(layer(mm.tensor(x, dtype=np.float64)).numpy().reshape(-1, 4),
                               routed + gate * shared, rtol=1e-10, atol=1e-12)


def test_qk_norm_normalises_the_whole_projection_not_each_head(rng):
    config = OPTION_SETS["olmoe-qk-norm-biases"]
    mm.manual_seed(0)
    attention = float64(Transformer(config)).blocks[0].attention
    x = mm.tensor(rng.normal(size=(1, 3, 16)), dtype=np.float64)
    q = attention.query(x).numpy()
    expected = q / np.sqrt((q * q).mean(axis=-1, keepdims=True) + config.norm_eps) * attention.query_norm.weight.numpy()
    np.testing.assert_allclose(attention.query_norm(attention.query(x)).numpy(), expected, rtol=1e-12)
    assert attention.query_norm.weight.shape == (16,) and attention.key_norm.weight.shape == (16,)


def reference_latent_attention(attention, x, theta):
    """MLA for one sequence x (T, d) in NumPy, from the formulas of DeepSeek-V2 §2.1 with
    interleaved rotary pairs (x0, x1), (x2, x3), ... rotated by position * theta^(-2i/r)."""
    w = {name: p.numpy() for name, p in attention.named_parameters()}
    h, nope, rope, v_dim = attention.n_heads, attention.nope, attention.rope, attention.v_dim

    def rms(a, weight):
        return a / np.sqrt((a * a).mean(axis=-1, keepdims=True) + 1e-6) * weight

    def rotate(a):  # (..., T, r) interleaved pairs
        angles = np.arange(a.shape[-2])[:, None] * theta ** (-np.arange(0, rope, 2) / rope)  # (T, r/2)
        even, odd = a[..., 0::2], a[..., 1::2]
        return np.concatenate([even * np.cos(angles) - odd * np.sin(angles),
                               odd * np.cos(angles) + even * np.sin(angles)], axis=-1)

    c_q = rms(x @ w["query_down.weight"] + w["query_down.bias"], w["query_norm.weight"])
    q = (c_q @ w["query_up.weight"]).reshape(len(x), h, nope + rope).transpose(1, 0, 2)  # (H, T, nope + rope)
    down = x @ w["kv_down.weight"] + w["kv_down.bias"]
    c_kv, k_rope = rms(down[:, :-rope], w["kv_norm.weight"]), rotate(down[:, -rope:])  # (T, c), (T, r)
    kv = (c_kv @ w["kv_up.weight"]).reshape(len(x), h, nope + v_dim).transpose(1, 0, 2)
    q = np.concatenate([q[..., :nope], rotate(q[..., nope:])], axis=-1)
    k = np.concatenate([kv[..., :nope], np.broadcast_to(k_rope, (h,) + k_rope.shape)], axis=-1)
    scores = q @ k.transpose(0, 2, 1) / np.sqrt(nope + rope) + np.triu(np.full((len(x), len(x)), -np.inf), 1)
    p = np.exp(scores - scores.max(axis=-1, keepdims=True))
    y = (p / p.sum(axis=-1, keepdims=True)) @ kv[..., nope:]  # (H, T, v)
    return y.transpose(1, 0, 2).reshape(len(x), h * v_dim) @ w["out.weight"]


def test_latent_attention_matches_the_papers_formulas(rng):
    config = OPTION_SETS["deepseek-latent-attention"]
    mm.manual_seed(0)
    attention = float64(Transformer(config)).blocks[0].attention
    x = rng.normal(size=(1, 5, 16))
    ours = attention(mm.tensor(x, dtype=np.float64)).numpy()[0]
    np.testing.assert_allclose(ours, reference_latent_attention(attention, x[0], config.rope_theta), rtol=1e-10,
                               atol=1e-12)
    assert attention.kv_down.weight.shape == (16, 8 + 4) and attention.kv_up.weight.shape == (8, 4 * (4 + 3))


# ---- whole models --------------------------------------------------------------------------------

@pytest.mark.parametrize("name", OPTION_SETS)
def test_model_gradients_match_finite_differences(name, rng):
    """Three entries of every parameter tensor, in float64, the aux loss included."""
    mm.manual_seed(0)
    model = float64(Transformer(OPTION_SETS[name]))
    for block in model.blocks:  # router scores well apart, so the nudges never flip a choice
        if block.is_moe:
            block.ffn.router.weight.data = rng.normal(size=block.ffn.router.weight.shape)
    x, y = rng.integers(0, 96, size=(2, 6)), rng.integers(0, 96, size=(2, 6))

    def loss():
        return F.cross_entropy(model(x), y) + model.aux_loss()

    # DeepSeek-V3's bias only steers the choice: no gradient by design
    check_sampled_gradients(model, loss, rng, skip=lambda name: name.endswith("expert_bias"))


def test_the_options_build_what_they_name():
    mm.manual_seed(0)
    qwen = Transformer(OPTION_SETS["qwen2-shared-gate-dense-block"])
    assert [block.is_moe for block in qwen.blocks] == [True, False]
    assert isinstance(qwen.blocks[1].ffn, GatedMLP) and qwen.blocks[1].ffn.up.weight.shape == (16, 20)
    assert qwen.blocks[0].ffn.shared.w_in.shape == (1, 16, 12) and qwen.blocks[0].ffn.shared_gate.shape == (16, 1)
    assert qwen.blocks[0].attention.key.weight.shape == (16, 4) and qwen.blocks[0].attention.key.bias.shape == (4,)
    assert qwen.blocks[0].attention.out.bias is None
    names = {name for name, _ in qwen.named_parameters()}
    assert not any(name.endswith(("b_in", "b_out")) for name in names)
    assert type(qwen.final_norm).__name__ == "RMSNorm" and qwen.final_norm.eps == 1e-5
    deepseek = Transformer(OPTION_SETS["deepseek-routing-dense-first"])
    assert [block.is_moe for block in deepseek.blocks] == [False, True, True]


@pytest.mark.parametrize("name", ["mixtral-gqa", "deepseek-routing-dense-first", "deepseek-latent-attention-plain-query"])
def test_parameter_count_matches_the_calculator_where_it_has_the_options(name):
    config = OPTION_SETS[name]
    mm.manual_seed(0)
    assert Transformer(config).num_parameters() == count_parameters(config.transformer_spec()).total


def test_options_round_trip_through_json_and_defaults_are_not_written():
    import json

    from minimoe.models.config import CHECKPOINT_OPTIONS

    for config in OPTION_SETS.values():
        assert ModelConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    assert not set(CHECKPOINT_OPTIONS) & set(BASE.to_dict())  # the course's configs read as before
    assert OPTION_SETS["qwen2-shared-gate-dense-block"].to_dict()["dense_layers"] == [1]


@pytest.mark.parametrize("change, message", [
    (dict(norm="batch"), "norm must be one of"),
    (dict(n_kv_heads=3), "multiple of n_kv_heads"),
    (dict(activation="relu"), "activation must be one of"),
    (dict(ffn_bias=False), "ffn_bias=False is for SwiGLU"),
    (dict(dense_layers=(5,)), "dense_layers must be block numbers"),
    (dict(rope_theta=0.5), "rope_theta"),
    (dict(shared_expert_gate=True), "set n_shared_experts"),
    (dict(norm_eps=0.0), "norm_eps"),
])
def test_bad_options_are_refused_with_the_field_named(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(BASE, **change)
