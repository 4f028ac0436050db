"""Qwen2-MoE (Qwen team 2024, the Hugging Face `Qwen2MoeSparseMoeBlock`): routed SwiGLU experts
(top-k of a softmax, renormalised only if `norm_topk_prob`) plus one always-on shared expert of
its own width whose output is scaled by sigmoid(x w_gate), w_gate of shape (d, 1); biases on
q, k, v but not on the output. Blocks in `mlp_only_layers`, or off the `decoder_sparse_step`
pattern, have a dense SwiGLU FFN of width `intermediate_size`."""
from ..models import ModelConfig
from .hf_config import UnsupportedCheckpoint, common, common_to_hf, export_problems, field, rope_theta
from .names import Piece, llama_pieces, swiglu_ffn
from .olmoe import moe_pieces

MODEL_TYPE, ARCHITECTURE = "qwen2_moe", "Qwen2MoeForCausalLM"


def dense_layers(hf: dict, n_layers: int) -> tuple:
    """The blocks transformers builds dense (Qwen2MoeDecoderLayer's condition)."""
    step, only = int(hf.get("decoder_sparse_step", 1)), set(hf.get("mlp_only_layers") or ())
    experts = int(field(hf, "num_experts"))
    return tuple(i for i in range(n_layers) if i in only or not (experts > 0 and (i + 1) % step == 0))


def config_from_hf(hf: dict) -> ModelConfig:
    fields = common(hf)
    if hf.get("use_sliding_window"):
        raise UnsupportedCheckpoint("use_sliding_window=true (a window on some layers only) is not implemented")
    return ModelConfig(**fields, rope_theta=rope_theta(hf, 10000.0), n_experts=int(field(hf, "num_experts")),
                       top_k=int(field(hf, "num_experts_per_tok")),
                       expert_hidden=int(field(hf, "moe_intermediate_size")),
                       ffn_hidden=int(field(hf, "intermediate_size")),
                       renormalize=bool(hf.get("norm_topk_prob", False)), qkv_bias=bool(hf.get("qkv_bias", True)),
                       n_shared_experts=1, shared_expert_hidden=int(field(hf, "shared_expert_intermediate_size")),
                       shared_expert_gate=True, dense_layers=dense_layers(hf, fields["n_layers"]))


def pieces(config: ModelConfig, available) -> list[Piece]:
    def block(i, available):
        if not config.is_moe_layer(i):
            return swiglu_ffn(f"model.layers.{i}.mlp", f"blocks.{i}.ffn")
        shared, target = f"model.layers.{i}.mlp.shared_expert", f"blocks.{i}.ffn.shared"
        return [*moe_pieces(config, i, available),
                *(Piece(f"{shared}.{role}_proj.weight", f"{target}.{name}", expert=0)
                  for role, name in (("gate", "w_gate"), ("up", "w_in"), ("down", "w_out"))),
                Piece(f"model.layers.{i}.mlp.shared_expert_gate.weight", f"blocks.{i}.ffn.shared_gate")]

    return llama_pieces(config, block, available)


def export_problems_of(config: ModelConfig) -> list[str]:
    problems = export_problems(config, norm="rms", positions="rotary", activation="swiglu", ffn_bias=False,
                               out_bias=False, qk_norm=False, router="topk", n_shared_experts=1,
                               shared_expert_gate=True, moe_every=1)
    return problems


def config_to_hf(config: ModelConfig) -> dict:
    return dict(common_to_hf(config), num_experts=config.n_experts, num_experts_per_tok=config.top_k,
                moe_intermediate_size=config.expert_hidden, intermediate_size=config.dense_hidden,
                shared_expert_intermediate_size=config.moe_config().shared_hidden,
                norm_topk_prob=config.renormalize, qkv_bias=config.qkv_bias, decoder_sparse_step=1,
                mlp_only_layers=list(config.dense_layers), use_sliding_window=False, sliding_window=None,
                router_aux_loss_coef=config.balance_coef)
