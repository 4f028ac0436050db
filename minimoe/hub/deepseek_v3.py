"""DeepSeek-V3 (Liu et al. 2024) as the Hugging Face `DeepseekV3ForCausalLM` computes it:
multi-head latent attention (minimoe.models.latent_attention), the first `first_k_dense_replace`
blocks dense, then MoE blocks with sigmoid router scores, a correction bias that steers only the
choice (`gate.e_score_correction_bias`), group-limited top-k, normalised gates times
`routed_scaling_factor`, and `n_shared_experts` always-on experts held as one FFN
(`mlp.shared_experts`). The released weights are fp8 with block scales: the loader refuses them
(dequantise to bf16 first); the scaled (YaRN) rotary of the released config is refused too."""
from ..models import ModelConfig
from .hf_config import UnsupportedCheckpoint, common, common_to_hf, export_problems, field, rope_theta
from .names import Piece, linear, llama_pieces, norm, swiglu_ffn
from .olmoe import moe_pieces

MODEL_TYPE, ARCHITECTURE = "deepseek_v3", "DeepseekV3ForCausalLM"


def config_from_hf(hf: dict) -> ModelConfig:
    fields = common({**hf, "head_dim": None})  # head_dim is the rotary width here, not d / heads
    k = int(field(hf, "num_experts_per_tok"))
    if not hf.get("norm_topk_prob", True) or k == 1:
        raise UnsupportedCheckpoint("norm_topk_prob=false or num_experts_per_tok=1: minimoe's DeepSeek-V3 router "
                                    "normalises the top-k gates (eq. 13) for k > 1 only")
    bias = bool(hf.get("attention_bias", False))
    fields.update(n_kv_heads=None, qkv_bias=bias, out_bias=bias, router="deepseek")
    return ModelConfig(**fields, rope_theta=rope_theta(hf, 10000.0), attention="mla",
                       q_lora_rank=hf.get("q_lora_rank"), kv_lora_rank=int(field(hf, "kv_lora_rank")),
                       qk_nope_head_dim=int(field(hf, "qk_nope_head_dim")),
                       qk_rope_head_dim=int(field(hf, "qk_rope_head_dim")), v_head_dim=int(field(hf, "v_head_dim")),
                       rope_interleave=bool(hf.get("rope_interleave", True)),
                       n_experts=int(field(hf, "n_routed_experts")), top_k=k,
                       expert_hidden=int(field(hf, "moe_intermediate_size")),
                       ffn_hidden=int(field(hf, "intermediate_size")),
                       n_groups=int(hf.get("n_group") or 1), topk_groups=int(hf.get("topk_group") or 1),
                       routed_scaling=float(hf.get("routed_scaling_factor", 1.0)),
                       n_shared_experts=int(hf.get("n_shared_experts") or 0),
                       dense_layers=tuple(range(int(hf.get("first_k_dense_replace") or 0))))


def latent_attention_pieces(config, source: str, target: str) -> list[Piece]:
    if config.q_lora_rank is None:
        query = linear(f"{source}.q_proj", f"{target}.query")
    else:
        query = [*linear(f"{source}.q_a_proj", f"{target}.query_down", config.qkv_bias),
                 norm(f"{source}.q_a_layernorm", f"{target}.query_norm"),
                 *linear(f"{source}.q_b_proj", f"{target}.query_up")]
    return [*query, *linear(f"{source}.kv_a_proj_with_mqa", f"{target}.kv_down", config.qkv_bias),
            norm(f"{source}.kv_a_layernorm", f"{target}.kv_norm"), *linear(f"{source}.kv_b_proj", f"{target}.kv_up"),
            *linear(f"{source}.o_proj", f"{target}.out", config.out_bias)]


def pieces(config: ModelConfig, available) -> list[Piece]:
    def block(i, available):
        mlp, ffn = f"model.layers.{i}.mlp", f"blocks.{i}.ffn"
        if not config.is_moe_layer(i):
            return swiglu_ffn(mlp, ffn)
        shared = [Piece(f"{mlp}.shared_experts.{role}_proj.weight", f"{ffn}.shared.{name}", expert=0)
                  for role, name in (("gate", "w_gate"), ("up", "w_in"), ("down", "w_out"))] \
            if config.n_shared_experts else []
        return [*moe_pieces(config, i, available), *shared,
                Piece(f"{mlp}.gate.e_score_correction_bias", f"{ffn}.router.expert_bias", transpose=False)]

    return llama_pieces(config, block, available, attention=latent_attention_pieces)


def export_problems_of(config: ModelConfig) -> list[str]:
    problems = export_problems(config, norm="rms", positions="rotary", activation="swiglu", ffn_bias=False,
                               attention="mla", router="deepseek", moe_every=1, shared_expert_gate=False,
                               shared_expert_hidden=None)
    if config.top_k == 1 or config.qkv_bias != config.out_bias:
        problems.append("top_k=1 or qkv_bias != out_bias (DeepSeek-V3 normalises k > 1 gates; one attention_bias)")
    if config.dense_layers != tuple(range(len(config.dense_layers))):
        problems.append(f"dense_layers={config.dense_layers} (DeepSeek-V3 keeps only the first blocks dense)")
    return problems


def config_to_hf(config: ModelConfig) -> dict:
    return dict(common_to_hf(config), num_key_value_heads=config.n_heads, attention_bias=config.qkv_bias,
                q_lora_rank=config.q_lora_rank, kv_lora_rank=config.kv_lora_rank,
                qk_nope_head_dim=config.qk_nope_head_dim, qk_rope_head_dim=config.qk_rope_head_dim,
                v_head_dim=config.v_head_dim, rope_interleave=config.rope_interleave,
                n_routed_experts=config.n_experts, num_experts_per_tok=config.top_k,
                moe_intermediate_size=config.expert_hidden, intermediate_size=config.dense_hidden,
                n_group=config.n_groups, topk_group=config.topk_groups, routed_scaling_factor=config.routed_scaling,
                n_shared_experts=config.n_shared_experts, first_k_dense_replace=len(config.dense_layers),
                norm_topk_prob=True, num_mtp_layers=0)
