"""What a forward pass of an MoE layer did: the numbers the lessons plot and the trainer logs."""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class RoutingReport:
    """load: fraction of the dispatched assignments each expert got (E,), sums to 1.
    dropped_fraction: assignments dropped by capacity / all assignments.
    router_entropy: mean over tokens of the entropy of the router's distribution (nats).
    expert_index: (T, k) or (B, T, k) chosen experts, -1 where nothing was dispatched.
    expert_gate: the gate weight of each choice in expert_index (0 where nothing was dispatched;
    expert choice: the largest gate a token got), None for Soft MoE, which routes no whole token.
    losses: each auxiliary loss's value, before its coefficient.
    max_logit: the largest |router logit|.
    mean_logsumexp: the mean over tokens of log sum_j exp(logit_j), what the z-loss squares (ST-MoE
    §3.3): the gauge of logit growth. The z-loss can hold it down while max_logit stays large,
    because it pushes every logit down and the least favoured experts' logits are large negatives."""

    load: np.ndarray
    dropped_fraction: float
    router_entropy: float
    expert_index: np.ndarray
    expert_gate: np.ndarray | None = None
    losses: dict = field(default_factory=dict)
    max_logit: float = 0.0
    mean_logsumexp: float = 0.0

    @property
    def tokens_per_expert(self) -> np.ndarray:
        """Counts of dispatched assignments per expert (from expert_index)."""
        valid = self.expert_index[self.expert_index >= 0]
        return np.bincount(valid, minlength=len(self.load))
