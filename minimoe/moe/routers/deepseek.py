"""DeepSeek-V3 routing: sigmoid affinities, a bias that only steers the choice, normalised gates,
group-limited top-k, and the auxiliary-loss-free balancing step (Liu et al. 2024, §2.1.2)."""
from ... import functional as F
from ...nn import Parameter
from ..losses import aux_free_bias_update
from .base import Router, Routing


class DeepSeekV3Router(Router):
    """s = sigmoid(x e) (eq. 15); experts are chosen by top-k of s + b (eq. 16) but weighted by the
    unbiased s, normalised over the chosen ones (eq. 13) and multiplied by `scaling` (the released
    code's routed_scaling_factor, 2.5 for V3; 1 here by default).

    At k = 1 eq. 13 makes every gate s / s = 1, a constant: the task loss then sends the router no
    gradient (the top-1 trap). So by default minimoe departs from the paper at k = 1 and keeps the
    gate s unnormalised, as Switch does; `normalize_top1=True` follows eq. 13 literally.

    Group-limited routing: experts are split into `n_groups` groups, each group scored by the sum of
    its two best s + b, and only the best `topk_groups` groups are eligible (V3 limits each token to
    4 of 8 nodes this way). The bias `expert_bias` is a parameter only so checkpoints keep it: it
    never gets a gradient; `update_bias` moves it (see losses.aux_free_bias_update).
    """

    def __init__(self, d_model, n_experts, k, n_groups=1, topk_groups=1, scaling=1.0, normalize_top1=False):
        super().__init__(d_model, n_experts, k)
        if n_experts % n_groups:
            raise ValueError(f"{n_experts} experts do not split into {n_groups} equal groups")
        if not 1 <= topk_groups <= n_groups or k > topk_groups * n_experts // n_groups:
            raise ValueError(f"topk_groups={topk_groups} of {n_groups} groups leaves fewer than k={k} experts to choose from")
        self.n_groups, self.topk_groups, self.scaling = n_groups, topk_groups, scaling
        self.normalize_top1 = bool(normalize_top1)
        self.expert_bias = Parameter.constant((n_experts,), 0.0)

    def forward(self, x, token_ids=None):
        logits = self.logits(x)  # (T, E)
        scores = F.sigmoid(logits)  # (T, E) affinities, each in (0, 1) on its own
        choice = scores.data + self.expert_bias.data  # (T, E) the bias steers the choice only
        if self.n_groups > 1:
            choice = self._mask_groups(choice)
        xp = logits.xp
        index = xp.argsort(-choice, axis=-1, kind="stable")[:, : self.k]  # (T, k)
        chosen = F.gather(scores, index)  # (T, k) unbiased affinities
        if self.k > 1 or self.normalize_top1:  # at k = 1, eq. 13 makes every gate 1 (see the class docstring)
            chosen = chosen / chosen.sum(axis=-1, keepdims=True)
        gates = chosen * self.scaling
        probs = scores / scores.sum(axis=-1, keepdims=True)  # s' of eq. 19, for the sequence-wise loss
        return Routing(index, gates, probs, logits)

    def _mask_groups(self, choice):
        xp = self.weight.xp
        t, e = choice.shape
        grouped = choice.reshape(t, self.n_groups, e // self.n_groups)  # (T, G, E/G)
        group_score = xp.sort(grouped, axis=-1)[:, :, -2:].sum(axis=-1)  # (T, G) sum of the best two
        best_groups = xp.argsort(-group_score, axis=-1, kind="stable")[:, : self.topk_groups]  # (T, topk_groups)
        allowed = xp.zeros((t, self.n_groups), dtype=bool)
        allowed[xp.arange(t)[:, None], best_groups] = True
        allowed = xp.repeat(allowed, e // self.n_groups, axis=1)  # (T, E)
        return xp.where(allowed, choice, -xp.inf)

    def update_bias(self, load, rate: float) -> None:
        """b_i += rate * sign(mean load - load_i): the auxiliary-loss-free balancing step."""
        self.expert_bias.data = aux_free_bias_update(self.expert_bias.data, load, rate)
