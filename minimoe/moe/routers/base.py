"""What every router returns, and the linear scoring they share."""
from __future__ import annotations

import math
from dataclasses import dataclass

from ...nn import Module, Parameter
from ...tensor import Tensor


@dataclass
class Routing:
    """A token-choice routing decision for T tokens over E experts, k experts each.

    expert_index (T, k) int array: the chosen experts, best first.
    gates        (T, k) Tensor: the weight of each chosen expert's output in the combination.
    probs        (T, E) Tensor: the router's distribution over all experts (balance losses, entropy).
    logits       (T, E) Tensor: the raw scores (z-loss, logit growth).
    keep         (T, k) bool array or None: False where the router chose not to dispatch at all.
    """

    expert_index: object
    gates: Tensor
    probs: Tensor
    logits: Tensor
    keep: object = None


class Router(Module):
    """Scores tokens against experts with one bias-free linear map, logits = x W (W: d x E).

    Initialised small: std sqrt(0.1 / d), the reduced scale of the Switch Transformer (Fedus et al.
    2021, §2.4), so routing starts near uniform and the experts break symmetry gradually. Switch
    reduces the scale of *all* its weights; applying it to the router alone is minimoe's choice.
    """

    def __init__(self, d_model: int, n_experts: int, k: int):
        if not 1 <= k <= n_experts:
            raise ValueError(f"top-k must be between 1 and the number of experts ({n_experts}), got k={k}")
        self.d_model, self.n_experts, self.k = d_model, n_experts, k
        self.weight = Parameter.normal((d_model, n_experts), math.sqrt(0.1 / d_model))

    def logits(self, x: Tensor) -> Tensor:
        return check_finite(x @ self.weight)  # (T, E)

    def forward(self, x: Tensor, token_ids=None) -> Routing:
        raise NotImplementedError


def check_finite(logits: Tensor) -> Tensor:
    """Stops at NaN or infinite router logits, which would otherwise be routed silently (a NaN row
    sorts as if its experts were ranked in order) and spread NaN through the layer."""
    if not bool(logits.xp.isfinite(logits.data).all()):
        raise ValueError(
            "router logits contain NaN or infinity: the layer's input is not finite "
            "(check the previous layers, lower the learning rate, or add the router z-loss)"
        )
    return logits
