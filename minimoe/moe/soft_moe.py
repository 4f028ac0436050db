"""Soft MoE (Puigcerver et al. 2023, §2.1, Algorithm 1): every slot is a weighted average of all tokens.

No token is routed anywhere: each of the E * p slots reads a softmax-over-tokens mixture of the
inputs (dispatch weights D), the experts process slots, and each token reads a softmax-over-slots
mixture of the slot outputs (combine weights C). Nothing is dropped and nothing needs balancing --
but a slot mixes the whole sequence, so a decoder using it sees the future (not causal).
"""
import math

from .. import functional as F
from ..nn import Module, Parameter
from ..tensor import Tensor
from .experts import Experts
from .routers.base import check_finite


def l2_normalize(x: Tensor, axis: int, eps: float = 1e-6) -> Tensor:
    return x / ((x * x).sum(axis=axis, keepdims=True) + eps).sqrt()


class SoftMoE(Module):
    """Logits L = l2norm(X) (scale * l2norm(Phi)) (§2.3 "Normalization"); D = softmax of L over
    tokens, C = softmax of L over slots; slots = D^T X; Y = C f(slots).

    Works per sequence on (B, T, d) inputs (a (T, d) input is one sequence)."""

    def __init__(self, d_model, n_experts, expert_hidden, slots_per_expert=1, activation="gelu"):
        self.n_experts, self.slots_per_expert = n_experts, slots_per_expert
        self.phi = Parameter.normal((d_model, n_experts * slots_per_expert), 1 / math.sqrt(d_model))
        self.scale = Parameter.constant((1,), 1.0)
        self.experts = Experts(n_experts, d_model, expert_hidden, activation)

    def weights(self, x: Tensor):
        """(dispatch D, combine C), each (B, T, S): D's columns sum to 1 over tokens, C's rows over slots."""
        logits = check_finite(l2_normalize(x, -1) @ (l2_normalize(self.phi, 0) * self.scale))  # (B, T, S)
        return F.softmax(logits, axis=-2), F.softmax(logits, axis=-1), logits

    def forward(self, x: Tensor):
        b, t, d = x.shape
        dispatch, combine, logits = self.weights(x)  # (B, T, S)
        slots = dispatch.transpose(0, 2, 1) @ x  # (B, S, d)
        e, p = self.n_experts, self.slots_per_expert
        by_expert = slots.reshape(b, e, p, d).transpose(1, 0, 2, 3).reshape(e * b * p, d)  # expert-major rows
        out = self.experts(by_expert, [b * p] * e)  # (E*B*p, d)
        out = out.reshape(e, b, p, d).transpose(1, 0, 2, 3).reshape(b, e * p, d)  # (B, S, d)
        self.last_logits = logits
        return combine @ out  # (B, T, d)
