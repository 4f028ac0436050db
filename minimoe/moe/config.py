"""The MoE layer's configuration: one frozen dataclass, checked when it is made."""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, replace

from ..config_checks import flag, real_number, whole_number

ROUTERS = ("dense", "topk", "topk_then_softmax", "noisy_topk", "switch", "gshard", "expert_choice", "hash", "soft", "deepseek")
BALANCE_LOSSES = ("switch", "gshard", "importance_load", "deepseek_sequence", None)


@dataclass(frozen=True)
class MoEConfig:
    d_model: int
    n_experts: int = 8
    top_k: int = 2  # experts per token (ignored by "dense", "switch", "gshard", "hash", "expert_choice", "soft")
    expert_hidden: int = 512  # hidden width of each expert; fine-grained = more experts, smaller hidden
    activation: str = "gelu"  # "gelu" or "swiglu"
    router: str = "topk"  # one of ROUTERS
    renormalize: bool = True  # top-k: renormalise the kept probabilities to sum to 1 (Mixtral's Hugging Face code) or not (Qwen2-MoE)
    capacity_factor: float | None = None  # None = dropless; else C = ceil(k*T/E*cf). Expert choice: c (default 2)
    n_shared_experts: int = 0  # DeepSeekMoE always-on experts, each of width expert_hidden
    balance_loss: str | None = "switch"  # one of BALANCE_LOSSES; "gshard": first choices only, GShard's Alg. 1
    balance_coef: float = 0.01  # Switch alpha; Shazeer w_importance = w_load; DeepSeek-V3 alpha
    z_loss_coef: float = 0.0  # ST-MoE uses 1e-3
    expert_dropout: float = 0.0  # dropout on the experts' hidden units in training (Switch §2.4 uses 0.4 to fine-tune)
    router_jitter: float = 0.0  # Switch multiplicative input jitter
    vocab_size: int = 96  # hash routing maps token ids, so it needs the vocabulary size
    n_groups: int = 1  # DeepSeek-V3 group-limited routing: groups of experts ...
    topk_groups: int = 1  # ... of which each token may use this many
    routed_scaling: float = 1.0  # DeepSeek-V3's routed_scaling_factor (2.5 in the released model)
    bias_update_rate: float = 0.001  # DeepSeek-V3 gamma for the aux-loss-free bias update
    slots_per_expert: int = 1  # Soft MoE
    expert_bias: bool = True  # b_in and b_out in every expert (Mixtral, OLMoE, Qwen2-MoE and DeepSeek have none)
    shared_expert_hidden: int | None = None  # width of the shared experts together; None: n_shared_experts * expert_hidden
    shared_expert_gate: bool = False  # Qwen2-MoE: the shared experts' output times sigmoid(x w), w of shape (d, 1)

    def __post_init__(self):
        if self.router not in ROUTERS:
            raise ValueError(f"unknown router {self.router!r}; choose one of {', '.join(ROUTERS)}")
        if self.balance_loss not in BALANCE_LOSSES:
            raise ValueError(f"unknown balance_loss {self.balance_loss!r}; choose one of {BALANCE_LOSSES}")
        for name in ("d_model", "n_experts", "expert_hidden", "vocab_size", "n_groups", "topk_groups",
                     "slots_per_expert"):
            whole_number(self, name, at_least=1)
        whole_number(self, "n_shared_experts", at_least=0)
        flag(self, "renormalize")
        for name in ("expert_bias", "shared_expert_gate"):
            flag(self, name)
        if self.shared_expert_hidden is not None:
            whole_number(self, "shared_expert_hidden", at_least=1)
        if not self.expert_bias and self.router == "soft":
            raise ValueError("expert_bias=False is not implemented for Soft MoE's experts; use a token-choice router")
        if (self.shared_expert_hidden is not None or self.shared_expert_gate) and not self.n_shared_experts:
            raise ValueError("shared_expert_hidden and shared_expert_gate describe shared experts: "
                             "set n_shared_experts >= 1 as well")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, numbers.Integral):
            raise ValueError(f"MoEConfig.top_k must be a whole number, got {self.top_k!r}")
        object.__setattr__(self, "top_k", int(self.top_k))  # a NumPy integer would not go into JSON
        if self.router in ("topk", "topk_then_softmax", "noisy_topk", "deepseek") and not 1 <= self.top_k <= self.n_experts:
            raise ValueError(f"top_k must be between 1 and n_experts ({self.n_experts}), got {self.top_k}")
        if self.topk_groups > self.n_groups:
            raise ValueError(f"topk_groups ({self.topk_groups}) cannot exceed n_groups ({self.n_groups})")
        cf = self.capacity_factor
        if cf is not None and (isinstance(cf, bool) or not isinstance(cf, numbers.Real) or not 0 < cf < math.inf):
            raise ValueError(f"capacity_factor must be > 0, got {cf!r} (use None for dropless routing)")
        for name in ("balance_coef", "z_loss_coef", "bias_update_rate"):
            real_number(self, name, low=0)
        for name in ("expert_dropout", "router_jitter"):
            real_number(self, name, low=0, high=1, high_open=True)
        real_number(self, "routed_scaling", low=0, low_open=True)
        if self.router == "gshard" and self.n_experts < 2:
            raise ValueError("GShard top-2 routing needs at least 2 experts")
        if self.balance_loss == "importance_load" and self.router not in ("noisy_topk", "topk", "topk_then_softmax"):
            raise ValueError("the importance and load losses belong to top-k gating; use router='noisy_topk' (Shazeer et al. 2017)")

    @property
    def shared_hidden(self) -> int:
        """Hidden width of the shared experts held as one FFN (0 without shared experts)."""
        if self.shared_expert_hidden is not None:
            return self.shared_expert_hidden
        return self.n_shared_experts * self.expert_hidden

    @property
    def k(self) -> int:
        """Experts per token as the router uses them."""
        return {"dense": self.n_experts, "switch": 1, "gshard": 2, "hash": 1}.get(self.router, self.top_k)

    def segmented(self, m: int, n_shared: int = 0) -> MoEConfig:
        """Fine-grained expert segmentation (DeepSeekMoE, Dai et al. 2024, §3.1): each expert split
        into m experts of 1/m the hidden width, m times as many chosen per token, so parameters and
        FLOPs stay the same while the number of possible expert combinations grows. With
        `n_shared`, that many of the chosen experts become always-on shared ones (§3.2)."""
        if m < 1 or self.expert_hidden % m:
            raise ValueError(f"cannot split experts of hidden {self.expert_hidden} into {m} equal segments")
        if not 0 <= n_shared < self.top_k * m:
            raise ValueError(f"n_shared must leave at least one routed expert per token (top_k * m = {self.top_k * m})")
        return replace(self, n_experts=self.n_experts * m - n_shared, expert_hidden=self.expert_hidden // m,
                       top_k=self.top_k * m - n_shared, n_shared_experts=self.n_shared_experts + n_shared)

    def to_dict(self) -> dict:
        return asdict(self)
