"""Softmax routers: the dense mixture of Jacobs et al. (1991) and top-k gating in both orders."""
from ... import functional as F
from ...rng import device_rng
from .base import Router, Routing


class DenseRouter(Router):
    """Every expert on every token, weighted by softmax(x W) (Jacobs, Jordan, Nowlan & Hinton
    1991, the gating network of eq. 1.1): the mixture the sparse routers are approximations of."""

    def __init__(self, d_model: int, n_experts: int):
        super().__init__(d_model, n_experts, n_experts)

    def forward(self, x, token_ids=None):
        logits = self.logits(x)
        probs = F.softmax(logits)  # (T, E)
        xp = logits.xp
        index = xp.broadcast_to(xp.arange(self.n_experts), logits.shape).copy()  # (T, E): expert j in column j
        return Routing(index, probs, probs, logits)


class TopKRouter(Router):
    """Top-k gating, in either order:

    * "softmax_then_topk": p = softmax(x W) over all experts, keep the k largest, renormalise them
      to sum to one (the Hugging Face Mixtral code). With `renormalize=False` the kept probabilities
      are used as they are (Qwen2-MoE's code, DeepSeekMoE §2; they sum to < 1).
    * "topk_then_softmax": keep the k largest logits and softmax over them (Shazeer et al. 2017
      without noise; the Mixtral paper's Softmax(TopK(x W))). The same values as the renormalised
      first order -- but with k = 1 the gate is always exactly 1, so the router gets no gradient
      from the task loss (the "top-1 trap" of lesson 03).
    """

    ORDERS = ("softmax_then_topk", "topk_then_softmax")

    def __init__(self, d_model, n_experts, k, order="softmax_then_topk", renormalize=True):
        super().__init__(d_model, n_experts, k)
        if order not in self.ORDERS:
            raise ValueError(f"unknown top-k order {order!r}; choose one of {self.ORDERS}")
        self.order, self.renormalize = order, renormalize

    def forward(self, x, token_ids=None):
        logits = self.logits(x)  # (T, E)
        probs = F.softmax(logits)  # (T, E)
        if self.order == "softmax_then_topk":
            top, index = F.topk(probs, self.k)  # (T, k)
            gates = top / top.sum(axis=-1, keepdims=True) if self.renormalize else top
        else:
            top_logits, index = F.topk(logits, self.k)
            gates = F.softmax(top_logits)
        return Routing(index, gates, probs, logits)


class SwitchRouter(TopKRouter):
    """Switch Transformer top-1 (Fedus et al. 2021, §2.1): y = p_i(x) E_i(x) with i = argmax p.
    The gate is the *unrenormalised* probability p_i, so the router is trained by the task loss
    (the top-1 trap avoided). Optional multiplicative input jitter in training (§2.4, App. C)."""

    def __init__(self, d_model, n_experts, jitter: float = 0.0):
        super().__init__(d_model, n_experts, 1, order="softmax_then_topk", renormalize=False)
        self.jitter = jitter

    def forward(self, x, token_ids=None):
        if self.training and self.jitter:
            noise = device_rng(x.xp).uniform(1 - self.jitter, 1 + self.jitter, size=x.shape).astype(x.dtype)
            x = x * noise
        return super().forward(x)
