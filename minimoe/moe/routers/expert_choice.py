"""Expert-choice routing (Zhou et al. 2022, §3.2): experts pick tokens instead of tokens picking experts."""
import math
from dataclasses import dataclass

from ... import functional as F
from ...tensor import Tensor
from .base import Router


@dataclass
class ExpertChoiceRouting:
    """token_index (E, C) int array: the tokens each expert took; gates (E, C) Tensor: their weights."""

    token_index: object
    gates: Tensor
    probs: Tensor
    logits: Tensor


class ExpertChoiceRouter(Router):
    """S = softmax(X W) over experts (eq. 2); each expert takes the C tokens with the highest S in
    its column, C = ceil(T * c / E) with c the average experts per token (eq. 1; c = 2 matches
    top-2's compute). Every expert is exactly full -- perfect balance by construction -- while a
    token may get several experts or none. Not causal: whether token t is taken depends on the
    scores of later tokens in the batch, so a decoder can read the future through it."""

    def __init__(self, d_model, n_experts, capacity_factor: float = 2.0):
        super().__init__(d_model, n_experts, 1)
        if not capacity_factor > 0:
            raise ValueError(f"capacity_factor must be > 0, got {capacity_factor}")
        self.capacity_factor = capacity_factor

    def capacity(self, n_tokens: int) -> int:
        return min(n_tokens, math.ceil(round(n_tokens * self.capacity_factor / self.n_experts, 9)))

    def forward(self, x, token_ids=None):
        logits = self.logits(x)  # (T, E)
        probs = F.softmax(logits)  # (T, E)
        gates, token_index = F.topk(probs.T, self.capacity(x.shape[0]))  # (E, C) each
        return ExpertChoiceRouting(token_index, gates, probs, logits)
