"""The calculator against published parameter counts and hand-computed small models."""
import dataclasses

import pytest

from minimoe.calculator import (
    TransformerSpec, attention_params, count_parameters, deepseek_v3, flops_per_token, memory_bytes,
    mixtral_8x7b, training_flops_per_token,
)


# ---- published models (docs/formulas.md §19) -------------------------------------------------

def test_mixtral_8x7b_matches_the_published_count():
    count = count_parameters(mixtral_8x7b())
    assert count.total == 46_702_792_704
    assert count.active == 12_879_925_248
    # The same total assembled from the config by hand, one term per component.
    attention, expert, router, norms = 41_943_040, 3 * 4096 * 14336, 8 * 4096, 2 * 4096
    assert count.total == 32 * (attention + 8 * expert + router + norms) + 2 * 32000 * 4096 + 4096
    assert count.breakdown["attention"] == 32 * attention


def test_deepseek_v3_matches_the_published_count():
    count = count_parameters(deepseek_v3())
    assert count.total == 671_026_419_200
    assert count.active == 37_552_297_472
    assert count.active - count.active_breakdown["embedding"] == 36_625_618_432
    assert abs(count.total / 671e9 - 1) < 0.02 and abs(count.active / 37e9 - 1) < 0.02


def test_deepseek_v3_mla_block_counted_projection_by_projection():
    d, heads = 7168, 128
    q = d * 1536 + 1536 + 1536 * heads * (128 + 64)            # q_a_proj, q_a_layernorm, q_b_proj
    kv = d * (512 + 64) + 512 + 512 * heads * (128 + 128)      # kv_a_proj_with_mqa, kv_a_layernorm, kv_b_proj
    out = heads * 128 * d                                      # o_proj
    assert attention_params(deepseek_v3()) == q + kv + out
    count = count_parameters(deepseek_v3())
    assert count.breakdown["router"] == 58 * (256 * d + 256)    # weight + e_score_correction_bias
    assert count.breakdown["shared_experts"] == 58 * 3 * d * 2048
    assert count.breakdown["dense_ffn"] == 3 * 3 * d * 18432


# ---- a model small enough to count by hand ----------------------------------------------------

def tiny_spec(**changes):
    spec = TransformerSpec(
        vocab_size=10, d_model=4, n_layers=2, n_heads=2, attention="mha", attention_bias=True,
        ffn="gelu", ffn_bias=True, n_routed_experts=4, top_k=2, expert_hidden=8,
        norm="layernorm", tied_embeddings=True, positions="learned", context_length=8)
    return dataclasses.replace(spec, **changes)


def test_tiny_model_counted_by_hand():
    # embedding 10*4 = 40; positions 8*4 = 32; head 0 (tied)
    # attention per block: q, k, v, o each 4*4 + 4 bias = 20 -> 80; two blocks -> 160
    # one GELU expert: up 4*8 + 8, down 8*4 + 4 = 76; 4 experts * 2 blocks = 608, active 2 * 2 * 76 = 304
    # router 4*4 = 16 per block -> 32
    # norms: LayerNorm 4 + 4 = 8, two per block plus the final one -> 5 * 8 = 40
    # total 40 + 32 + 160 + 608 + 32 + 40 = 912; active 912 - 608 + 304 = 608
    count = count_parameters(tiny_spec())
    assert count.breakdown == {"embedding": 40, "positions": 32, "attention": 160, "dense_ffn": 0,
                               "routed_experts": 608, "shared_experts": 0, "router": 32,
                               "norms": 40, "head": 0}
    assert (count.total, count.active) == (912, 608)


def test_tiny_model_flops_by_hand():
    # matmul weights per token: attention 2 * 64 = 128; active experts 2 blocks * 2 * 64 = 256;
    # router 2 * 16 = 32; LM head 40 (tied, but still multiplied) -> 456, times 2 = 912 FLOPs.
    # attention at seq 8: 2 blocks * (2*8*4 scores + 2*8*4 values) = 256. Forward 1168.
    assert flops_per_token(tiny_spec(), seq_len=8) == 1168
    assert training_flops_per_token(tiny_spec(), seq_len=8) == 3 * 1168


def test_untied_rmsnorm_rotary_changes_by_hand():
    count = count_parameters(tiny_spec(tied_embeddings=False, norm="rmsnorm", positions="rotary",
                                       context_length=0))
    # + head 40, - positions 32, norms 5 * 4 = 20 instead of 40
    assert count.total == 912 + 40 - 32 - 20


def test_moe_every_other_block_and_leading_dense_blocks():
    spec = tiny_spec(n_layers=5, n_dense_layers=1, moe_every=2, dense_hidden=6)
    assert [spec.is_moe_layer(i) for i in range(5)] == [False, True, False, True, False]
    count = count_parameters(spec)
    assert count.breakdown["dense_ffn"] == 3 * (4 * 6 + 6 + 6 * 4 + 4)
    assert count.breakdown["routed_experts"] == 2 * 4 * 76


def test_gqa_and_swiglu_shapes():
    spec = tiny_spec(attention="gqa", n_heads=4, n_kv_heads=2, head_dim=3, attention_bias=False,
                     ffn="swiglu", ffn_bias=False)
    # q, o: 4 * (4*3) = 48 each; k, v: 4 * (2*3) = 24 each -> 144 per block
    assert attention_params(spec) == 144
    # one SwiGLU expert: gate, up, down, each 4 * 8 = 32
    assert count_parameters(spec).breakdown["routed_experts"] == 2 * 4 * 96


# ---- invariants ---------------------------------------------------------------------------------

def test_fine_grained_split_keeps_expert_params_and_compute():
    """DeepSeekMoE §3.1: N experts of width h, top-k  ->  mN experts of width h/m, top mk."""
    coarse = mixtral_8x7b()
    fine = dataclasses.replace(coarse, n_routed_experts=4 * 8, top_k=4 * 2, expert_hidden=14336 // 4)
    before, after = count_parameters(coarse), count_parameters(fine)
    # The experts are unchanged; only the router widens from E to mE columns.
    assert after.breakdown["routed_experts"] == before.breakdown["routed_experts"]
    assert after.active_breakdown["routed_experts"] == before.active_breakdown["routed_experts"]
    router_growth = 32 * 4096 * (32 - 8)
    assert after.breakdown["router"] - before.breakdown["router"] == router_growth
    assert after.total - router_growth == before.total
    assert after.active - router_growth == before.active
    assert flops_per_token(fine, 4096) - flops_per_token(coarse, 4096) == 2 * router_growth


@pytest.mark.parametrize("spec", [mixtral_8x7b(), deepseek_v3(), tiny_spec()])
def test_breakdowns_add_up_and_active_is_smaller(spec):
    count = count_parameters(spec)
    assert sum(count.breakdown.values()) == count.total
    assert sum(count.active_breakdown.values()) == count.active
    assert 0 < count.active < count.total


def test_all_experts_active_means_active_equals_total():
    count = count_parameters(tiny_spec(top_k=4))
    assert count.active == count.total


def test_dense_model_flops_are_twice_its_matmul_params():
    spec = TransformerSpec(vocab_size=100, d_model=8, n_layers=3, n_heads=2, ffn="gelu", dense_hidden=32,
                           norm="rmsnorm")
    count = count_parameters(spec)
    assert count.active == count.total
    # no biases; the embedding is a lookup, not a matmul; the untied head is one
    matmul = count.total - count.breakdown["norms"] - count.breakdown["embedding"]
    assert flops_per_token(spec, seq_len=16) == 2 * matmul + 3 * 2 * 2 * 16 * 8


def test_memory_follows_total_parameters():
    total = count_parameters(mixtral_8x7b()).total
    assert memory_bytes(mixtral_8x7b(), 2).total == 2 * total
    fp32_adam = memory_bytes(mixtral_8x7b(), 4, training=True)
    assert (fp32_adam.weights, fp32_adam.gradients, fp32_adam.adam_state) == (4 * total, 4 * total, 8 * total)
    assert memory_bytes(mixtral_8x7b(), 2, training=True, master_weights=True).total == 16 * total
    assert memory_bytes(mixtral_8x7b(), 0.5).total == total / 2


# ---- bad input --------------------------------------------------------------------------------

@pytest.mark.parametrize("changes, message", [
    ({"top_k": 5}, "top_k=5 is larger than n_routed_experts=4"),
    ({"top_k": 0}, "top_k must be positive"),
    ({"d_model": 0}, "d_model must be positive"),
    ({"n_layers": -1}, "n_layers must be positive"),
    ({"expert_hidden": 0}, "expert_hidden must be positive"),
    ({"vocab_size": -3}, "vocab_size must be positive"),
    ({"context_length": 0}, "context_length must be positive"),
    ({"n_routed_experts": 0, "top_k": 0, "expert_hidden": 0}, "dense_hidden must be positive"),
    ({"n_dense_layers": 3}, "n_dense_layers=3 exceeds n_layers=2"),
    ({"attention": "gqa"}, "needs n_kv_heads"),
    ({"attention": "gqa", "n_kv_heads": 3}, "multiple of n_kv_heads=3"),
    ({"n_kv_heads": 1}, "use attention='gqa'"),
    ({"kv_lora_rank": 8}, "apply only to attention='mla'"),
    ({"attention": "mla"}, "kv_lora_rank must be positive"),
    ({"n_heads": 3}, "not divisible by n_heads=3"),
    ({"ffn": "relu"}, "ffn must be one of"),
    ({"norm": "batchnorm"}, "norm must be one of"),
])
def test_bad_specs_raise_clear_errors(changes, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        tiny_spec(**changes)


def test_non_integer_size_is_a_type_error():
    with pytest.raises(TypeError, match="d_model must be an int"):
        tiny_spec(d_model=4.0)


def test_bad_calculator_arguments():
    with pytest.raises(ValueError, match="seq_len must be positive"):
        flops_per_token(mixtral_8x7b(), 0)
    with pytest.raises(ValueError, match="exceeds the learned position table"):
        flops_per_token(tiny_spec(), 9)
    with pytest.raises(ValueError, match="bytes_per_param must be a positive number"):
        memory_bytes(mixtral_8x7b(), 0)
