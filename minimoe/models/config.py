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
    balance_loss: str | None = "switch"   # "switch", "importance_load", "deepseek_sequence" or None
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
        # The FFN fields are MoEConfig's, which checks them and names the one that is wrong (for the
        # dense twin too: its hidden width comes from them unless ffn_hidden is given).
        self.moe_config()

    # ---- derived sizes -------------------------------------------------------------------------
    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

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
        return (self.experts_per_token + self.n_shared_experts) * self.expert_hidden

    def is_moe_layer(self, layer: int) -> bool:
        """Whether block `layer` (0-based) has an MoE FFN (the calculator's convention)."""
        return not self.dense and layer % self.moe_every == 0

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
            expert_hidden=self.expert_hidden, activation="gelu", router=self.router,
            capacity_factor=self.capacity_factor, n_shared_experts=self.n_shared_experts,
            balance_loss=self.balance_loss, balance_coef=self.balance_coef,
            z_loss_coef=self.z_loss_coef, expert_dropout=self.expert_dropout,
            bias_update_rate=self.bias_update_rate, renormalize=self.renormalize,
            router_jitter=self.router_jitter, n_groups=self.n_groups, topk_groups=self.topk_groups,
            routed_scaling=self.routed_scaling, slots_per_expert=self.slots_per_expert,
            vocab_size=self.vocab_size)

    def transformer_spec(self) -> TransformerSpec:
        """The calculator's description of this model (for parameters and FLOPs per token)."""
        moe = {} if self.dense else dict(
            n_routed_experts=self.n_experts, top_k=self.experts_per_token,
            expert_hidden=self.expert_hidden, n_shared_experts=self.n_shared_experts,
            moe_every=self.moe_every, router_bias=self.router == "deepseek")
        return TransformerSpec(
            vocab_size=self.vocab_size, d_model=self.d_model, n_layers=self.n_layers,
            n_heads=self.n_heads, ffn="gelu", ffn_bias=True, dense_hidden=self.dense_hidden,
            norm="layernorm", tied_embeddings=self.tie_weights, positions=self.positions,
            context_length=self.context, **moe)

    # ---- JSON ------------------------------------------------------------------------------------
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

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
