"""Parameters, FLOPs and memory of a decoder-only Transformer with optional MoE FFNs.

An MoE model stores every expert but runs only the top-k of them per token, so it has two sizes:
the *total* parameters (what memory must hold) and the *active* parameters (what each token's
compute touches). This module counts both, from a plain description of the architecture, and is
checked in the tests against published models: Mixtral 8x7B (46.7B total / 12.9B active) and
DeepSeek-V3 (671B / 37B). Pure Python integers: no arrays, no engine. Used by lesson 09 and by the
training code (FLOPs for loss-against-compute plots).

Counting follows the reference implementations module by module (the Hugging Face
`MixtralForCausalLM` and DeepSeek-V3's `modeling_deepseek.py`), so each projection below names the
weight it stands for.
"""
from __future__ import annotations

from dataclasses import dataclass

ATTENTION_KINDS = ("mha", "gqa", "mla")
FFN_KINDS = ("gelu", "swiglu")
NORM_KINDS = ("layernorm", "rmsnorm")
POSITION_KINDS = ("learned", "rotary")


@dataclass(frozen=True)
class TransformerSpec:
    """The shapes of a decoder-only Transformer: pre-norm blocks of attention then FFN.

    A block's FFN is dense, or an MoE layer of `n_routed_experts` experts of which `top_k` run per
    token, plus `n_shared_experts` that always run (DeepSeekMoE, arXiv 2401.06066 §3.2). The first
    `n_dense_layers` blocks stay dense (DeepSeek-V3: 3), then every `moe_every`-th block is MoE
    (1: all of them; 2: every other block, as in GShard and Switch).
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int                      # query heads
    attention: str = "mha"            # "mha", "gqa" or "mla" (DeepSeek-V2/V3 multi-head latent attention)
    n_kv_heads: int | None = None     # gqa: key/value heads, each shared by n_heads // n_kv_heads query heads
    head_dim: int | None = None       # mha/gqa; None means d_model // n_heads
    attention_bias: bool = False      # biases on the attention projections
    q_lora_rank: int | None = None    # mla: rank of the query compression; None: one d -> heads projection
    kv_lora_rank: int = 0             # mla: width of the compressed key/value latent (the KV cache)
    qk_nope_head_dim: int = 0         # mla: per-head query/key width without rotary positions
    qk_rope_head_dim: int = 0         # mla: per-head query/key width carrying rotary positions
    v_head_dim: int = 0               # mla: per-head value width
    ffn: str = "swiglu"               # "gelu" (up, down) or "swiglu" (gate, up, down)
    ffn_bias: bool = False            # biases on the FFN projections, dense and experts alike
    dense_hidden: int = 0             # hidden width of the dense FFN blocks
    n_dense_layers: int = 0           # leading blocks kept dense in an MoE model
    moe_every: int = 1                # after those, every moe_every-th block is MoE
    n_routed_experts: int = 0         # 0: a dense model
    top_k: int = 0                    # routed experts run per token
    expert_hidden: int = 0            # hidden width of one routed expert
    n_shared_experts: int = 0         # always-on experts, held as one FFN of n_shared * expert_hidden
    router_bias: bool = False         # E more values: a Linear bias, or DeepSeek-V3's e_score_correction_bias
    norm: str = "rmsnorm"             # "layernorm" (scale and bias) or "rmsnorm" (scale)
    tied_embeddings: bool = False     # the LM head reuses the input embedding matrix
    positions: str = "rotary"         # "learned" (a context_length x d_model table) or "rotary" (none)
    context_length: int = 0           # longest sequence; required for learned positions

    def __post_init__(self):
        _check_kinds(self)
        _check_attention(self)
        _check_ffn(self)
        if self.positions == "learned":
            _require_positive("context_length", self.context_length, "learned positions need a table size")
        else:
            _require_non_negative("context_length", self.context_length)

    @property
    def is_moe(self) -> bool:
        return self.n_routed_experts > 0

    def is_moe_layer(self, layer: int) -> bool:
        """Whether block `layer` (0-based) has an MoE FFN; every other block has a dense one."""
        offset = layer - self.n_dense_layers
        return self.is_moe and offset >= 0 and offset % self.moe_every == 0

    @property
    def n_moe_layers(self) -> int:
        return sum(self.is_moe_layer(layer) for layer in range(self.n_layers))

    @property
    def qk_head_dim(self) -> int:
        """Per-head width of queries and keys (what the attention scores are summed over)."""
        if self.attention == "mla":
            return self.qk_nope_head_dim + self.qk_rope_head_dim
        return self.head_dim or self.d_model // self.n_heads

    @property
    def value_head_dim(self) -> int:
        return self.v_head_dim if self.attention == "mla" else self.qk_head_dim


# ---- checks: a wrong spec fails here, with the field and the fix in the message -----------------

def _require_int(name, value):
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")


def _require_positive(name, value, why="sizes must be at least 1"):
    _require_int(name, value)
    if value <= 0:
        raise ValueError(f"{name} must be positive ({why}), got {value}")


def _require_non_negative(name, value):
    _require_int(name, value)
    if value < 0:
        raise ValueError(f"{name} must be 0 or more, got {value}")


def _require_kind(name, value, kinds):
    if value not in kinds:
        raise ValueError(f"{name} must be one of {kinds}, got {value!r}")


def _check_kinds(spec):
    _require_kind("attention", spec.attention, ATTENTION_KINDS)
    _require_kind("ffn", spec.ffn, FFN_KINDS)
    _require_kind("norm", spec.norm, NORM_KINDS)
    _require_kind("positions", spec.positions, POSITION_KINDS)
    for name in ("vocab_size", "d_model", "n_layers", "n_heads", "moe_every"):
        _require_positive(name, getattr(spec, name))


def _check_attention(spec):
    mla_fields = ("q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
    if spec.attention == "mla":
        for name in mla_fields[1:]:
            _require_positive(name, getattr(spec, name), "attention='mla' needs every MLA width")
        if spec.q_lora_rank is not None:
            _require_positive("q_lora_rank", spec.q_lora_rank, "or None for an uncompressed query")
        return
    given = [name for name in mla_fields if getattr(spec, name)]
    if given:
        raise ValueError(f"{given} apply only to attention='mla', got attention={spec.attention!r}")
    if spec.head_dim is None and spec.d_model % spec.n_heads:
        raise ValueError(f"d_model={spec.d_model} is not divisible by n_heads={spec.n_heads}; set head_dim")
    if spec.head_dim is not None:
        _require_positive("head_dim", spec.head_dim)
    if spec.attention == "gqa":
        if spec.n_kv_heads is None:
            raise ValueError("attention='gqa' needs n_kv_heads (the number of key/value heads)")
        _require_positive("n_kv_heads", spec.n_kv_heads)
        if spec.n_heads % spec.n_kv_heads:
            raise ValueError(f"n_heads={spec.n_heads} must be a multiple of n_kv_heads={spec.n_kv_heads}")
    elif spec.n_kv_heads not in (None, spec.n_heads):
        raise ValueError(f"attention='mha' has n_kv_heads == n_heads; "
                         f"for n_kv_heads={spec.n_kv_heads} use attention='gqa'")


def _check_ffn(spec):
    for name in ("dense_hidden", "n_dense_layers", "n_routed_experts", "top_k", "expert_hidden",
                 "n_shared_experts"):
        _require_non_negative(name, getattr(spec, name))
    if spec.n_dense_layers > spec.n_layers:
        raise ValueError(f"n_dense_layers={spec.n_dense_layers} exceeds n_layers={spec.n_layers}")
    if spec.n_moe_layers < spec.n_layers:
        _require_positive("dense_hidden", spec.dense_hidden, "the model has dense FFN blocks")
    if not spec.is_moe:
        moe_fields = [name for name in ("top_k", "expert_hidden", "n_shared_experts") if getattr(spec, name)]
        if moe_fields or spec.router_bias:
            raise ValueError(f"{moe_fields or ['router_bias']} need n_routed_experts > 0")
        return
    _require_positive("top_k", spec.top_k, "an MoE layer runs at least one routed expert")
    _require_positive("expert_hidden", spec.expert_hidden)
    if spec.top_k > spec.n_routed_experts:
        raise ValueError(
            f"top_k={spec.top_k} is larger than n_routed_experts={spec.n_routed_experts}; "
            f"choose top_k <= n_routed_experts")


# ---- parameters, one function per component -------------------------------------------------

def attention_projections(spec: TransformerSpec) -> dict[str, tuple[int, int]]:
    """(in, out) of each attention weight matrix in one block, named as in the reference code.

    mha/gqa (Mixtral's `MixtralAttention`): q and o are d x heads*head_dim; k and v have only
    n_kv_heads heads. mla (DeepSeek-V3's `DeepseekV3Attention`, arXiv 2412.19437 §2.1.1): queries
    go through a low-rank bottleneck; keys and values come from one compressed latent of width
    kv_lora_rank plus a shared rotary key of width qk_rope_head_dim ("with_mqa").
    """
    d, heads = spec.d_model, spec.n_heads
    if spec.attention != "mla":
        kv_heads = spec.n_kv_heads or heads
        return {"q_proj": (d, heads * spec.qk_head_dim), "k_proj": (d, kv_heads * spec.qk_head_dim),
                "v_proj": (d, kv_heads * spec.qk_head_dim), "o_proj": (heads * spec.qk_head_dim, d)}
    query_width = heads * spec.qk_head_dim
    if spec.q_lora_rank is None:
        query = {"q_proj": (d, query_width)}
    else:
        query = {"q_a_proj": (d, spec.q_lora_rank), "q_b_proj": (spec.q_lora_rank, query_width)}
    return {**query,
            "kv_a_proj_with_mqa": (d, spec.kv_lora_rank + spec.qk_rope_head_dim),
            "kv_b_proj": (spec.kv_lora_rank, heads * (spec.qk_nope_head_dim + spec.v_head_dim)),
            "o_proj": (heads * spec.v_head_dim, d)}


def ffn_projections(spec: TransformerSpec, hidden: int) -> dict[str, tuple[int, int]]:
    """(in, out) of each FFN weight matrix: GELU has up and down; SwiGLU adds a gate (Shazeer 2020)."""
    d = spec.d_model
    gate = {"gate_proj": (d, hidden)} if spec.ffn == "swiglu" else {}
    return {**gate, "up_proj": (d, hidden), "down_proj": (hidden, d)}


def _weights(projections) -> int:
    return sum(n_in * n_out for n_in, n_out in projections.values())


def _biases(projections) -> int:
    return sum(n_out for _, n_out in projections.values())


def norm_params(spec: TransformerSpec, width: int) -> int:
    """A LayerNorm learns a scale and a bias per feature; an RMSNorm only a scale."""
    return 2 * width if spec.norm == "layernorm" else width


def attention_params(spec: TransformerSpec) -> int:
    """One block's attention: the projections, their biases and, for MLA, the RMSNorms on the
    two compressed latents (`q_a_layernorm`, `kv_a_layernorm`), which DeepSeek-V3 counts here."""
    projections = attention_projections(spec)
    count = _weights(projections) + (_biases(projections) if spec.attention_bias else 0)
    if spec.attention == "mla":
        count += norm_params(spec, spec.kv_lora_rank)
        count += norm_params(spec, spec.q_lora_rank) if spec.q_lora_rank else 0
    return count


def ffn_params(spec: TransformerSpec, hidden: int) -> int:
    """One FFN of the given hidden width: a dense block, one expert, or the shared experts."""
    projections = ffn_projections(spec, hidden)
    return _weights(projections) + (_biases(projections) if spec.ffn_bias else 0)


def shared_expert_params(spec: TransformerSpec) -> int:
    """DeepSeek holds its shared experts as one FFN of width n_shared * expert_hidden."""
    return ffn_params(spec, spec.n_shared_experts * spec.expert_hidden) if spec.n_shared_experts else 0


def router_params(spec: TransformerSpec) -> int:
    """The gate is a d x E matrix (Mixtral's `gate`, DeepSeek-V3's `MoEGate.weight`), plus E values
    for a router bias (DeepSeek-V3's `e_score_correction_bias`, arXiv 2412.19437 eq. 16)."""
    return spec.d_model * spec.n_routed_experts + (spec.n_routed_experts if spec.router_bias else 0)


def embedding_params(spec: TransformerSpec) -> int:
    return spec.vocab_size * spec.d_model


def position_params(spec: TransformerSpec) -> int:
    """A learned table has one row per position (GPT-2); rotary positions (RoPE) have no weights."""
    return spec.context_length * spec.d_model if spec.positions == "learned" else 0


def head_params(spec: TransformerSpec) -> int:
    """The LM head's d x vocab matrix; zero extra parameters when tied to the embedding."""
    return 0 if spec.tied_embeddings else spec.vocab_size * spec.d_model


@dataclass(frozen=True)
class ParamCount:
    """Total and per-token active parameters, with both split by component.

    Active counts every parameter a token's forward pass uses, embedding and LM head included
    (the convention of the Mixtral and DeepSeek-V3 releases); only the routed experts differ from
    the total, top_k of n_routed_experts instead of all of them.
    """

    total: int
    active: int
    breakdown: dict[str, int]
    active_breakdown: dict[str, int]


def count_parameters(spec: TransformerSpec) -> ParamCount:
    """Every parameter of the model, by component, in total and as used by one token."""
    n_moe = spec.n_moe_layers
    breakdown = {
        "embedding": embedding_params(spec),
        "positions": position_params(spec),
        "attention": spec.n_layers * attention_params(spec),
        "dense_ffn": (spec.n_layers - n_moe) * ffn_params(spec, spec.dense_hidden),
        "routed_experts": n_moe * spec.n_routed_experts * ffn_params(spec, spec.expert_hidden),
        "shared_experts": n_moe * shared_expert_params(spec),
        "router": n_moe * router_params(spec),
        "norms": (2 * spec.n_layers + 1) * norm_params(spec, spec.d_model),  # 2 per block + final
        "head": head_params(spec),
    }
    active = dict(breakdown, routed_experts=n_moe * spec.top_k * ffn_params(spec, spec.expert_hidden))
    return ParamCount(sum(breakdown.values()), sum(active.values()), breakdown, active)


# ---- FLOPs ------------------------------------------------------------------------------------

def matmul_params_per_token(spec: TransformerSpec) -> int:
    """Weight-matrix entries one token is multiplied through: attention, the dense or active FFN
    matrices, the router and the LM head (counted even when tied). The embedding is a lookup, and
    biases and norms are element-wise, so none of them is here."""
    n_moe = spec.n_moe_layers
    moe_ffn = (spec.top_k * _weights(ffn_projections(spec, spec.expert_hidden))
               + _weights(ffn_projections(spec, spec.n_shared_experts * spec.expert_hidden))
               + spec.d_model * spec.n_routed_experts)
    return (spec.n_layers * _weights(attention_projections(spec))
            + (spec.n_layers - n_moe) * _weights(ffn_projections(spec, spec.dense_hidden))
            + n_moe * moe_ffn
            + spec.vocab_size * spec.d_model)


def flops_per_token(spec: TransformerSpec, seq_len: int) -> float:
    """Forward-pass matmul FLOPs per token, for a sequence of `seq_len` tokens.

    Convention (Kaplan et al. 2020 §2.1; Chinchilla, Hoffmann et al. 2022, App. F): a
    multiply-add is 2 FLOPs, so each weight matrix costs 2 * (its entries) per token, and attention
    adds, per block, 2 * seq_len * heads * qk_head_dim for the scores QK^T and
    2 * seq_len * heads * value_head_dim for the weighted sum of values; for standard attention
    with heads * head_dim = d this is 2 * 2 * seq_len * d. The causal mask is not used to halve
    the attention term, and softmax, norms, activations and biases are left out.
    """
    _require_positive("seq_len", seq_len)
    if spec.positions == "learned" and seq_len > spec.context_length:
        raise ValueError(f"seq_len={seq_len} exceeds the learned position table (context_length="
                         f"{spec.context_length}); use a shorter sequence")
    per_block = 2 * seq_len * spec.n_heads * (spec.qk_head_dim + spec.value_head_dim)
    return float(2 * matmul_params_per_token(spec) + spec.n_layers * per_block)


def training_flops_per_token(spec: TransformerSpec, seq_len: int) -> float:
    """Forward plus backward: the backward pass costs about twice the forward (Kaplan et al. 2020
    §2.1), giving the familiar 6 * N FLOPs per token for a dense model of N matmul parameters."""
    return 3 * flops_per_token(spec, seq_len)


# ---- memory ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes for the model state; activations and the KV cache are not included."""

    weights: float
    gradients: float
    master_weights: float
    adam_state: float

    @property
    def total(self) -> float:
        return self.weights + self.gradients + self.master_weights + self.adam_state


def memory_bytes(spec: TransformerSpec, bytes_per_param: float = 2, *, training: bool = False,
                 master_weights: bool = False, adam_bytes_per_value: float = 4) -> MemoryEstimate:
    """Memory for the weights and, when `training`, gradients and Adam's two moments.

    Every expert must be held, so memory follows the *total* count while compute follows the
    active one. `bytes_per_param` is the width of weights and gradients (4 fp32, 2 bf16, 0.5 for
    4-bit quantised weights). Mixed-precision training keeps an fp32 `master_weights` copy; with
    bf16 weights that gives 2 + 2 + 4 + 4 + 4 = 16 bytes per parameter (ZeRO, Rajbhandari et al.
    2020 §3.1).
    """
    for name, value in (("bytes_per_param", bytes_per_param), ("adam_bytes_per_value", adam_bytes_per_value)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number of bytes, got {value!r}")
    n = count_parameters(spec).total
    if not training:
        return MemoryEstimate(n * bytes_per_param, 0, 0, 0)
    return MemoryEstimate(weights=n * bytes_per_param, gradients=n * bytes_per_param,
                          master_weights=n * 4 if master_weights else 0,
                          adam_state=2 * n * adam_bytes_per_value)


# ---- published models ----------------------------------------------------------------------------

def mixtral_8x7b() -> TransformerSpec:
    """Mixtral 8x7B: arXiv 2401.04088 Table 1 and the `config.json` of mistralai/Mixtral-8x7B-v0.1
    (hidden_size 4096, 32 layers, 32 query / 8 key-value heads of 128, intermediate_size 14336,
    8 experts, top-2, vocab 32000, untied head, RoPE, max_position_embeddings 32768)."""
    return TransformerSpec(
        vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, attention="gqa", n_kv_heads=8,
        head_dim=128, ffn="swiglu", n_routed_experts=8, top_k=2, expert_hidden=14336,
        norm="rmsnorm", positions="rotary", context_length=32768)


def deepseek_v3() -> TransformerSpec:
    """DeepSeek-V3, main model without the multi-token-prediction module: arXiv 2412.19437 §4.2 and
    the `config.json` of deepseek-ai/DeepSeek-V3 (hidden_size 7168, 61 layers, first_k_dense_replace
    3 with intermediate_size 18432, 256 routed experts of moe_intermediate_size 2048, top-8,
    1 shared, MLA with 128 heads, q_lora_rank 1536, kv_lora_rank 512, qk_nope 128, qk_rope 64,
    v_head 128, vocab 129280, untied head, max_position_embeddings 163840)."""
    return TransformerSpec(
        vocab_size=129280, d_model=7168, n_layers=61, n_heads=128, attention="mla",
        q_lora_rank=1536, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
        ffn="swiglu", dense_hidden=18432, n_dense_layers=3, n_routed_experts=256, top_k=8,
        expert_hidden=2048, n_shared_experts=1, router_bias=True, norm="rmsnorm",
        positions="rotary", context_length=163840)
