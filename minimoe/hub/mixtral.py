"""Mixtral (Jiang et al. 2024): top-2 of 8 SwiGLU experts, softmax over all experts then the top
k renormalised (the Hugging Face `MixtralSparseMoeBlock`), grouped-query attention, rotary
theta 1e6. On disk: `block_sparse_moe.gate` and `block_sparse_moe.experts.{e}.w1/w2/w3`
(w1 gate, w2 down, w3 up); the fused layout is under `mlp.experts`."""
from ..models import ModelConfig
from .hf_config import common, common_to_hf, export_problems, field, rope_theta
from .names import Piece, llama_pieces, swiglu_experts

MODEL_TYPE, ARCHITECTURE = "mixtral", "MixtralForCausalLM"
SPELLING = {"gate": "w1", "up": "w3", "down": "w2"}


def config_from_hf(hf: dict) -> ModelConfig:
    return ModelConfig(**common(hf), rope_theta=rope_theta(hf, 1e6), n_experts=int(field(hf, "num_local_experts")),
                       top_k=int(field(hf, "num_experts_per_tok")), expert_hidden=int(field(hf, "intermediate_size")),
                       renormalize=True)


def pieces(config: ModelConfig, available) -> list[Piece]:
    def moe_block(i, available):
        prefix = f"model.layers.{i}.mlp" if f"model.layers.{i}.mlp.experts.gate_up_proj" in available \
            else f"model.layers.{i}.block_sparse_moe"
        return [Piece(f"{prefix}.gate.weight", f"blocks.{i}.ffn.router.weight"),
                *swiglu_experts(config, prefix, f"blocks.{i}.ffn.experts", SPELLING, available)]

    return llama_pieces(config, moe_block, available)


def export_problems_of(config: ModelConfig) -> list[str]:
    return export_problems(config, norm="rms", positions="rotary", activation="swiglu", ffn_bias=False,
                           qkv_bias=False, out_bias=False, qk_norm=False, router="topk", renormalize=True,
                           n_shared_experts=0, moe_every=1, dense_layers=())


def config_to_hf(config: ModelConfig) -> dict:
    return dict(common_to_hf(config), num_local_experts=config.n_experts, num_experts_per_tok=config.top_k,
                intermediate_size=config.expert_hidden, sliding_window=None, router_jitter_noise=0.0,
                router_aux_loss_coef=config.balance_coef, head_dim=config.head_dim)
