"""How a minimoe parameter is read from (or written to) a Hugging Face checkpoint tensor.

A `Piece` names one tensor of the checkpoint and where it goes in one minimoe parameter: the
whole parameter, or one expert's slice of the stacked (E, ...) expert weights. `nn.Linear`
stores its weight as (out, in) and the engine multiplies x @ W with W (in, out), so most pieces
are transposed. Transformers 5 can also write a layer's experts fused, `experts.gate_up_proj`
(E, 2h, d) with the gate half first and `experts.down_proj` (E, d, h): a piece may take one half
of such a tensor (`half`). The expected shape of every checkpoint tensor follows from the minimoe
parameter's, so a tensor of the wrong shape is found before anything is read.

`llama_pieces` lists the pieces shared by the Llama-style architectures (Mixtral, OLMoE,
Qwen2-MoE, DeepSeek-V3); each architecture's file names its own spellings of the MoE block (and
DeepSeek-V3 of its latent attention).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Piece:
    source: str                 # the checkpoint tensor's name
    target: str                 # the minimoe parameter's name
    expert: int | None = None   # the index along the parameter's first axis, or None for all of it
    transpose: bool = True      # swap the last two axes (nn.Linear's (out, in) against x @ W)
    half: int | None = None     # fused gate_up_proj: 0 the gate half, 1 the up half, of axis 1

    def checkpoint_shape(self, target_shape: tuple) -> tuple:
        """The shape the checkpoint tensor must have for a parameter of `target_shape`."""
        shape = list(target_shape[1:] if self.expert is not None else target_shape)
        if self.transpose and len(shape) >= 2:
            shape[-2], shape[-1] = shape[-1], shape[-2]
        if self.half is not None:
            shape[1] *= 2
        return tuple(shape)

    def to_engine(self, array):
        """The checkpoint tensor as the engine stores it (its slice of the parameter)."""
        if self.half is not None:
            width = array.shape[1] // 2
            array = array[:, self.half * width:(self.half + 1) * width]
        return array.swapaxes(-1, -2) if self.transpose and array.ndim >= 2 else array

    def from_engine(self, parameter):
        """The checkpoint tensor from the engine's parameter (the per-expert layout only)."""
        array = parameter if self.expert is None else parameter[self.expert]
        return array.swapaxes(-1, -2) if self.transpose and array.ndim >= 2 else array


def linear(source: str, target: str, bias: bool = False) -> list[Piece]:
    """A Linear layer's weight (transposed) and, if it has one, its bias."""
    pieces = [Piece(f"{source}.weight", f"{target}.weight")]
    if bias:
        pieces.append(Piece(f"{source}.bias", f"{target}.bias", transpose=False))
    return pieces


def norm(source: str, target: str) -> Piece:
    return Piece(f"{source}.weight", f"{target}.weight", transpose=False)


def swiglu_experts(config, prefix: str, target: str, spelling: dict, available) -> list[Piece]:
    """The routed experts of one MoE block: one (gate, up, down) triple per expert, named
    `{prefix}.experts.{e}.{spelling[...]}.weight`, or the fused layout if the checkpoint has it."""
    if f"{prefix}.experts.gate_up_proj" in available:
        return [Piece(f"{prefix}.experts.gate_up_proj", f"{target}.w_gate", half=0),
                Piece(f"{prefix}.experts.gate_up_proj", f"{target}.w_in", half=1),
                Piece(f"{prefix}.experts.down_proj", f"{target}.w_out")]
    return [Piece(f"{prefix}.experts.{e}.{spelling[role]}.weight", f"{target}.{name}", expert=e)
            for e in range(config.n_experts)
            for role, name in (("gate", "w_gate"), ("up", "w_in"), ("down", "w_out"))]


def swiglu_ffn(source: str, target: str) -> list[Piece]:
    """A dense SwiGLU FFN (gate_proj, up_proj, down_proj) as a minimoe GatedMLP."""
    return [piece for role in ("gate", "up", "down") for piece in linear(f"{source}.{role}_proj", f"{target}.{role}")]


def attention_pieces(config, source: str, target: str) -> list[Piece]:
    """q, k, v, o projections (with their biases if the config has them) and OLMoE's QK-norm."""
    pieces = []
    for name, own in (("q_proj", "query"), ("k_proj", "key"), ("v_proj", "value")):
        pieces += linear(f"{source}.{name}", f"{target}.{own}", config.qkv_bias)
    pieces += linear(f"{source}.o_proj", f"{target}.out", config.out_bias)
    if config.qk_norm:
        pieces += [norm(f"{source}.q_norm", f"{target}.query_norm"), norm(f"{source}.k_norm", f"{target}.key_norm")]
    return pieces


def llama_pieces(config, moe_block, available, attention=attention_pieces) -> list[Piece]:
    """Every piece of a Llama-style decoder: embeddings, attention, norms, head; the FFN of each
    block from `moe_block(layer, available)` (the architecture's own spelling), the attention
    from `attention(config, source, target)`."""
    pieces = [Piece("model.embed_tokens.weight", "token_embedding.weight", transpose=False)]
    for i in range(config.n_layers):
        layer, block = f"model.layers.{i}", f"blocks.{i}"
        pieces.append(norm(f"{layer}.input_layernorm", f"{block}.attention_norm"))
        pieces += attention(config, f"{layer}.self_attn", f"{block}.attention")
        pieces.append(norm(f"{layer}.post_attention_layernorm", f"{block}.ffn_norm"))
        pieces += moe_block(i, available)
    pieces.append(norm("model.norm", "final_norm"))
    if not config.tie_weights:
        pieces.append(Piece("lm_head.weight", "head.weight"))
    return pieces
