"""The tiny Transformer's configuration: plain, frozen data with a comment per field.

One `ModelConfig` describes both the MoE model and its dense twin (`dense=True`), so the two are
built by the same code and differ only where they should: the FFN. Configs round-trip through JSON
(`to_dict` / `from_dict`), which is how a run folder and a checkpoint remember their model.
Introduced in lesson 04 (a tiny MoE Transformer).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..calculator import TransformerSpec
from ..config_checks import flag, real_number, whole_number

POSITION_KINDS = ("learned", "rotary")
NORM_KINDS = ("layer", "rms")
FFN_ACTIVATIONS = ("gelu", "swiglu")
ATTENTION_KINDS = ("mha", "mla")
CHECKPOINT_OPTIONS = ("norm", "norm_eps", "n_kv_heads", "rope_theta", "qk_norm", "qkv_bias", "out_bias", "activation",
                      "ffn_bias", "shared_expert_hidden", "shared_expert_gate", "dense_layers", "attention",
                      "q_lora_rank", "kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim",
                      "rope_interleave")


@dataclass(frozen=True)
class ModelConfig:
    # ---- the Transformer ---------------------------------------------------------------------
    vocab_size: int = 96            # CharTokenizer: newline + printable ASCII
    d_model: int = 128              # width of the residual stream
    n_layers: int = 4               # Transformer blocks
    n_heads: int = 4                # attention heads; d_model must divide by it
    context: int = 128              # longest sequence the model reads
    positions: str = "learned"      # "learned" (a position table, GPT-2) or "rotary" (RoPE, Su et al. 2021)
    tie_weights: bool = False       # the output head reuses the token embedding (Press & Wolf 2017)
    dropout: float = 0.0            # on the embeddings and on each residual branch
    # ---- the FFN: dense, or MoE in every `moe_every`-th block --------------------------------
    dense: bool = False             # True: every FFN is a dense GELU MLP (the baseline)
    ffn_hidden: int | None = None   # hidden width of the dense FFNs; None: matched to the MoE's active width
    moe_every: int = 1              # 1: every block is MoE; 2: blocks 0, 2, ... (GShard, Switch)
    n_experts: int = 8              # routed experts per MoE layer
    top_k: int = 2                  # routed experts run per token
    expert_hidden: int = 256        # hidden width of one expert
    router: str = "topk"            # see minimoe.moe.MoEConfig for the routers
    capacity_factor: float | None = None  # None: dropless; else tokens over capacity are dropped
    n_shared_experts: int = 0       # always-on experts (DeepSeekMoE)
    balance_loss: str | None = "switch"   # "switch", "gshard", "importance_load", "deepseek_sequence" or None
    balance_coef: float = 0.01      # alpha of the balancing loss
    z_loss_coef: float = 0.0        # router z-loss (ST-MoE)
    expert_dropout: float = 0.0     # dropout inside the experts
    bias_update_rate: float = 0.001  # router="deepseek": the aux-loss-free bias step
    renormalize: bool = True        # router="topk": renormalise the kept probabilities (Mixtral) or not
    router_jitter: float = 0.0      # router="switch": multiplicative input jitter in training
    n_groups: int = 1               # router="deepseek": group-limited routing over this many groups ...
    topk_groups: int = 1            # ... of which each token may use this many
    routed_scaling: float = 1.0     # router="deepseek": routed_scaling_factor
    slots_per_expert: int = 1       # router="soft": slots per expert
    # ---- the options of Llama-style checkpoints (Mixtral, OLMoE, Qwen2-MoE; see minimoe.hub) --------
    # The defaults are the course's model above; every option at its default changes nothing.
    norm: str = "layer"             # "layer" (LayerNorm, scale and bias) or "rms" (RMSNorm, Zhang & Sennrich 2019)
    norm_eps: float = 1e-5          # eps of every norm (a checkpoint's rms_norm_eps)
    n_kv_heads: int | None = None   # grouped-query attention (Ainslie et al. 2023): key/value heads; None: n_heads
    rope_theta: float = 10000.0     # positions="rotary": theta of the angles (RoFormer: 10000; Mixtral: 1e6)
    qk_norm: bool = False           # OLMoE: RMSNorm over the whole query and the whole key projection
    qkv_bias: bool = False          # biases on the query, key and value projections (Qwen2-MoE)
    out_bias: bool = False          # a bias on the attention's output projection (OLMoE's attention_bias)
    activation: str = "gelu"        # FFNs and experts: "gelu" (up, down) or "swiglu" (gate, up, down; Shazeer 2020)
    ffn_bias: bool = True           # biases in the experts and dense FFNs (False: Mixtral; needs "swiglu" when dense)
    shared_expert_hidden: int | None = None  # width of the shared experts together; None: n_shared * expert_hidden
    shared_expert_gate: bool = False  # Qwen2-MoE: the shared experts' output scaled by sigmoid(x w)
    dense_layers: tuple = ()        # blocks kept dense in an MoE model (DeepSeek-V3's first 3, Qwen2-MoE's mlp_only_layers)
    attention: str = "mha"          # "mha" (with n_kv_heads: grouped-query) or "mla" (DeepSeek's latent attention)
    q_lora_rank: int | None = None  # mla: rank of the query's low-rank path; None: one d -> heads projection
    kv_lora_rank: int = 0           # mla: width of the key/value latent (what a KV cache would hold)
    qk_nope_head_dim: int = 0       # mla: per-head query/key width without positions
    qk_rope_head_dim: int = 0       # mla: per-head query/key width with rotary positions
    v_head_dim: int = 0             # mla: per-head value width
    rope_interleave: bool = False   # rotary pairs (x0, x1), (x2, x3), ... instead of (x_i, x_{i+Dh/2}) (DeepSeek)

    def __post_init__(self):
        for name in ("vocab_size", "d_model", "n_layers", "n_heads", "context", "moe_every"):
            whole_number(self, name, at_least=1)
        for name in ("tie_weights", "dense"):
            flag(self, name)
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} must divide by n_heads={self.n_heads}; "
                             f"try n_heads={_largest_divisor(self.d_model, self.n_heads)}")
        if self.positions not in POSITION_KINDS:
            raise ValueError(f"positions must be one of {POSITION_KINDS}, got {self.positions!r}")
        if self.positions == "rotary" and self.head_dim % 2:
            raise ValueError(f"rotary positions rotate pairs of features: head_dim={self.head_dim} "
                             "must be even")
        real_number(self, "dropout", low=0, high=1, high_open=True)
        if self.ffn_hidden is not None:
            whole_number(self, "ffn_hidden", at_least=1)
        self._check_checkpoint_options()
        # The FFN fields are MoEConfig's, which checks them and names the one that is wrong (for the
        # dense twin too: its hidden width comes from them unless ffn_hidden is given).
        self.moe_config()

    def _check_checkpoint_options(self):
        for name in ("qk_norm", "qkv_bias", "out_bias", "ffn_bias", "shared_expert_gate"):
            flag(self, name)
        if self.norm not in NORM_KINDS:
            raise ValueError(f"norm must be one of {NORM_KINDS}, got {self.norm!r}")
        if self.activation not in FFN_ACTIVATIONS:
            raise ValueError(f"activation must be one of {FFN_ACTIVATIONS}, got {self.activation!r}")
        real_number(self, "norm_eps", low=0, low_open=True)
        real_number(self, "rope_theta", low=1, low_open=True)
        if self.n_kv_heads is not None:
            whole_number(self, "n_kv_heads", at_least=1)
            if self.n_heads % self.n_kv_heads:
                raise ValueError(f"n_heads={self.n_heads} must be a multiple of n_kv_heads={self.n_kv_heads} "
                                 "(each key/value head serves a whole group of query heads)")
        if not self.ffn_bias and self.activation == "gelu":
            raise ValueError("ffn_bias=False is for SwiGLU FFNs (the dense GELU MLP keeps its biases): "
                             "set activation='swiglu' or ffn_bias=True")
        flag(self, "rope_interleave")
        if self.attention not in ATTENTION_KINDS:
            raise ValueError(f"attention must be one of {ATTENTION_KINDS}, got {self.attention!r}")
        mla = ("kv_lora_rank", "qk_nope_head_dim", "qk_rope_head_dim", "v_head_dim")
        if self.attention == "mla":
            for name in mla:
                whole_number(self, name, at_least=1)
            if self.q_lora_rank is not None:
                whole_number(self, "q_lora_rank", at_least=1)
            if self.qk_rope_head_dim % 2 or self.positions != "rotary" or self.n_kv_heads not in (None, self.n_heads):
                raise ValueError("attention='mla' needs positions='rotary', an even qk_rope_head_dim and no n_kv_heads "
                                 "(its keys and values come from the latent, one per head)")
            if self.v_head_dim > self.qk_nope_head_dim + self.qk_rope_head_dim or self.qk_norm:
                raise ValueError("attention='mla' here needs v_head_dim <= qk_nope_head_dim + qk_rope_head_dim "
                                 "and qk_norm=False")
        elif any(getattr(self, name) for name in mla) or self.q_lora_rank is not None:
            raise ValueError(f"{', '.join(('q_lora_rank',) + mla)} apply only to attention='mla'")
        if isinstance(self.dense_layers, list):  # JSON gives a list back
            object.__setattr__(self, "dense_layers", tuple(self.dense_layers))
        if not isinstance(self.dense_layers, tuple) or not all(
                isinstance(i, int) and not isinstance(i, bool) and 0 <= i < self.n_layers for i in self.dense_layers):
            raise ValueError(f"dense_layers must be block numbers in [0, {self.n_layers}), got {self.dense_layers!r}")

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def kv_heads(self) -> int:
        """Key/value heads: n_kv_heads, or one per query head (plain multi-head attention)."""
        return self.n_kv_heads or self.n_heads

    @property
    def experts_per_token(self) -> int:
        """Routed experts one token runs through, as the router uses them (Switch: 1, GShard: 2,
        the dense 1991 router: all of them; otherwise top_k)."""
        return self.moe_config().k

    @property
    def dense_hidden(self) -> int:
        """Hidden width of the dense FFNs: by default the MoE's active width, so that a dense block
        costs what one token's routed plus shared experts cost."""
        if self.ffn_hidden is not None:
            return self.ffn_hidden
        return self.experts_per_token * self.expert_hidden + self.moe_config().shared_hidden

    def is_moe_layer(self, layer: int) -> bool:
        """Whether block `layer` (0-based) has an MoE FFN (the calculator's convention)."""
        return not self.dense and layer % self.moe_every == 0 and layer not in self.dense_layers

    # ---- related configs -----------------------------------------------------------------------
    def dense_twin(self) -> ModelConfig:
        """The dense baseline of matched *active* compute: every FFN a GELU MLP whose hidden width
        is the MoE's active width (top_k x expert_hidden, plus the shared experts)."""
        return dataclasses.replace(self, dense=True, ffn_hidden=self.dense_hidden)

    def moe_config(self):
        """The `minimoe.moe.MoEConfig` of this model's MoE layers."""
        from ..moe import MoEConfig  # here, not at the top: a dense model never needs the MoE package

        return MoEConfig(
            d_model=self.d_model, n_experts=self.n_experts, top_k=self.top_k,
            expert_hidden=self.expert_hidden, activation=self.activation, router=self.router,
            capacity_factor=self.capacity_factor, n_shared_experts=self.n_shared_experts,
            balance_loss=self.balance_loss, balance_coef=self.balance_coef,
            z_loss_coef=self.z_loss_coef, expert_dropout=self.expert_dropout,
            bias_update_rate=self.bias_update_rate, renormalize=self.renormalize,
            router_jitter=self.router_jitter, n_groups=self.n_groups, topk_groups=self.topk_groups,
            routed_scaling=self.routed_scaling, slots_per_expert=self.slots_per_expert,
            vocab_size=self.vocab_size, expert_bias=self.ffn_bias, shared_expert_hidden=self.shared_expert_hidden,
            shared_expert_gate=self.shared_expert_gate)

    def transformer_spec(self) -> TransformerSpec:
        """The calculator's description of this model (for parameters and FLOPs per token).

        The calculator has no field for a few checkpoint options, so its counts leave out the
        QK-norm scales, the shared-expert gate (d per MoE block) and attention biases unless every
        projection has one; shared experts count as n_shared_experts * expert_hidden wide unless
        shared_expert_hidden is a multiple of expert_hidden; `dense_layers` are counted as the
        leading blocks (the same count when moe_every is 1)."""
        n_dense = len(self.dense_layers)
        shared = self.moe_config().shared_hidden
        moe = {} if self.dense else dict(
            n_routed_experts=self.n_experts, top_k=self.experts_per_token,
            expert_hidden=self.expert_hidden, n_shared_experts=self.n_shared_experts,
            moe_every=self.moe_every, router_bias=self.router == "deepseek", n_dense_layers=n_dense)
        if not self.dense and self.n_shared_experts and shared % self.expert_hidden == 0:
            moe["n_shared_experts"] = shared // self.expert_hidden
        gqa = self.kv_heads != self.n_heads
        attention = dict(attention="gqa" if gqa else "mha", n_kv_heads=self.kv_heads if gqa else None)
        if self.attention == "mla":
            attention = dict(attention="mla", q_lora_rank=self.q_lora_rank, kv_lora_rank=self.kv_lora_rank,
                             qk_nope_head_dim=self.qk_nope_head_dim, qk_rope_head_dim=self.qk_rope_head_dim,
                             v_head_dim=self.v_head_dim)
        return TransformerSpec(
            vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers, n_heads=self.n_heads, **attention,
            attention_bias=self.qkv_bias and self.out_bias, ffn=self.activation, ffn_bias=self.ffn_bias,
            dense_hidden=self.dense_hidden, norm="layernorm" if self.norm == "layer" else "rmsnorm",
            tied_embeddings=self.tie_weights, positions=self.positions, context_length=self.context, **moe)

    # ---- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        """The fields as JSON values. The checkpoint options are written only where they differ
        from their defaults, so the course's configs (and the run folders and checkpoints made
        before the options existed) read exactly as they did."""
        data = dataclasses.asdict(self)
        for field in dataclasses.fields(self):
            if field.name in CHECKPOINT_OPTIONS and data[field.name] == field.default:
                del data[field.name]
        if "dense_layers" in data:
            data["dense_layers"] = list(self.dense_layers)  # what JSON gives back
        return data

    @classmethod
    def from_dict(cls, data: dict) -> ModelConfig:
        return config_from_dict(cls, data)


def config_from_dict(cls, data: dict):
    """`cls(**data)` for a frozen config dataclass, refusing keys it does not know (a typo in a
    JSON file should fail loudly, not be ignored)."""
    if not isinstance(data, dict):
        raise TypeError(f"{cls.__name__}.from_dict needs a dict, got {type(data).__name__}")
    known = {field.name for field in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} field(s) {unknown}; the known fields are {sorted(known)}")
    return cls(**data)


def _largest_divisor(n: int, at_most: int) -> int:
    return max(h for h in range(1, at_most + 1) if n % h == 0)
