"""The Mixture-of-Experts library: experts, routers, losses, dispatch and the layer.

    from minimoe.moe import MoE, MoEConfig
    layer = MoE(MoEConfig(d_model=128, n_experts=8, top_k=2, expert_hidden=512))
    y = layer(x); layer.aux_loss; layer.report
"""
from . import losses, routers
from .config import MoEConfig
from .dispatch import DispatchPlan, expert_capacity, plan_dispatch
from .experts import Experts, GroupedFFN
from .layer import MoE
from .report import RoutingReport
from .soft_moe import SoftMoE

__all__ = [
    "DispatchPlan", "Experts", "GroupedFFN", "MoE", "MoEConfig", "RoutingReport", "SoftMoE",
    "expert_capacity", "losses", "plan_dispatch", "routers",
]
