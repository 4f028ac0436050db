"""Every router of the course, one small class each (see each file's docstring for its paper)."""
from .base import Router, Routing
from .deepseek import DeepSeekV3Router
from .expert_choice import ExpertChoiceRouter, ExpertChoiceRouting
from .gshard import GShardRouter
from .hash import HashRouter
from .noisy import NoisyTopKRouter
from .softmax import DenseRouter, SwitchRouter, TopKRouter

__all__ = [
    "DeepSeekV3Router", "DenseRouter", "ExpertChoiceRouter", "ExpertChoiceRouting", "GShardRouter",
    "HashRouter", "NoisyTopKRouter", "Router", "Routing", "SwitchRouter", "TopKRouter", "make_router",
]


def make_router(cfg):
    """The router named by `cfg.router` (a MoEConfig); Soft MoE has none (it is its own layer)."""
    d, e = cfg.d_model, cfg.n_experts
    builders = {
        "dense": lambda: DenseRouter(d, e),
        "topk": lambda: TopKRouter(d, e, cfg.top_k, "softmax_then_topk", cfg.renormalize),
        "topk_then_softmax": lambda: TopKRouter(d, e, cfg.top_k, "topk_then_softmax"),
        "noisy_topk": lambda: NoisyTopKRouter(d, e, cfg.top_k),
        "switch": lambda: SwitchRouter(d, e, cfg.router_jitter),
        "gshard": lambda: GShardRouter(d, e),
        "expert_choice": lambda: ExpertChoiceRouter(d, e, cfg.capacity_factor or 2.0),
        "hash": lambda: HashRouter(cfg.vocab_size, e),
        "deepseek": lambda: DeepSeekV3Router(d, e, cfg.top_k, cfg.n_groups, cfg.topk_groups, cfg.routed_scaling),
    }
    return builders[cfg.router]()
