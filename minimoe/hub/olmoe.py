"""OLMoE (Muennighoff et al. 2024): 64 SwiGLU experts, top-8 of a softmax without
renormalisation (`norm_topk_prob` false), and QK-norm: an RMSNorm over the whole query
projection and one over the whole key projection (`q_norm` of width d, `k_norm` of width
n_kv_heads * head_dim), not per head. On disk: `mlp.gate` and `mlp.experts.{e}.{gate,up,down}_proj`."""
from ..models import ModelConfig
from .hf_config import UnsupportedCheckpoint, common, common_to_hf, export_problems, field, rope_theta
from .names import Piece, llama_pieces, swiglu_experts

MODEL_TYPE, ARCHITECTURE = "olmoe", "OlmoeForCausalLM"
SPELLING = {"gate": "gate_proj", "up": "up_proj", "down": "down_proj"}


def config_from_hf(hf: dict) -> ModelConfig:
    if hf.get("clip_qkv") is not None:
        raise UnsupportedCheckpoint(f"clip_qkv={hf['clip_qkv']} (clamping q, k, v) is not implemented")
    bias = bool(hf.get("attention_bias", False))
    return ModelConfig(**common(hf), rope_theta=rope_theta(hf, 10000.0), n_experts=int(field(hf, "num_experts")),
                       top_k=int(field(hf, "num_experts_per_tok")), expert_hidden=int(field(hf, "intermediate_size")),
                       renormalize=bool(hf.get("norm_topk_prob", False)), qk_norm=True, qkv_bias=bias, out_bias=bias)


def moe_pieces(config, i, available) -> list[Piece]:
    """The MoE block as OLMoE, Qwen2-MoE and DeepSeek spell it: `mlp.gate`, `mlp.experts.{e}.*_proj`."""
    prefix = f"model.layers.{i}.mlp"
    return [Piece(f"{prefix}.gate.weight", f"blocks.{i}.ffn.router.weight"),
            *swiglu_experts(config, prefix, f"blocks.{i}.ffn.experts", SPELLING, available)]


def pieces(config: ModelConfig, available) -> list[Piece]:
    return llama_pieces(config, lambda i, available: moe_pieces(config, i, available), available)


def export_problems_of(config: ModelConfig) -> list[str]:
    problems = export_problems(config, norm="rms", positions="rotary", activation="swiglu", ffn_bias=False,
                               qk_norm=True, router="topk", n_shared_experts=0, moe_every=1, dense_layers=())
    if config.qkv_bias != config.out_bias:
        problems.append("qkv_bias != out_bias (OLMoE's attention_bias is on all four projections or none)")
    return problems


def config_to_hf(config: ModelConfig) -> dict:
    return dict(common_to_hf(config), num_experts=config.n_experts, num_experts_per_tok=config.top_k,
                intermediate_size=config.expert_hidden, norm_topk_prob=config.renormalize,
                attention_bias=config.qkv_bias, clip_qkv=None, router_aux_loss_coef=config.balance_coef)
