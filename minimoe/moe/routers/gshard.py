"""GShard top-2 gating with random second-expert dispatch (Lepikhin et al. 2020, §2.2, Alg. 1)."""
from ... import functional as F
from ...rng import device_rng
from .base import Router, Routing


class GShardRouter(Router):
    """Top-2 of g = softmax(x W), renormalised: g1 <- g1 / (g1 + g2), g2 <- g2 / (g1 + g2). In
    training the second expert is dispatched only if 2 * g2 > u, u ~ U(0, 1): a token whose second
    choice is weak mostly goes to one expert, saving capacity ("random routing", §2.2)."""

    def __init__(self, d_model, n_experts):
        super().__init__(d_model, n_experts, 2)

    def forward(self, x, token_ids=None):
        logits = self.logits(x)  # (T, E)
        probs = F.softmax(logits)
        top, index = F.topk(probs, 2)  # (T, 2)
        gates = top / top.sum(axis=-1, keepdims=True)
        keep = None
        if self.training:
            xp = logits.xp
            u = device_rng(xp).random(gates.shape[0], dtype=gates.dtype)  # (T,)
            keep = xp.ones(gates.shape, dtype=bool)
            keep[:, 1] = 2 * gates.data[:, 1] > u
        return Routing(index, gates, probs, logits, keep)
