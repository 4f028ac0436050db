"""Noisy top-k gating (Shazeer et al. 2017, §2.1 and App. A)."""
from ... import functional as F
from ...nn import Parameter
from ...rng import device_rng
from ...tensor import Tensor
from .base import Router, Routing


class NoisyTopKRouter(Router):
    """G(x) = softmax(KeepTopK(H(x), k)), H(x) = x W_g + eps * softplus(x W_noise), eps ~ N(0, 1)
    (eqs. 3-5). The noise, in training only, lets experts that would never be chosen win sometimes
    and so get gradient. Both weight matrices start at zero (App. A), so early routing is decided by
    the noise alone and is balanced.

    After a forward, `smooth_load` (T, E) holds P(x, i) of eq. 9: the probability that expert i
    would still be in the top k if its noise were redrawn. Its column sums are the differentiable
    load estimate of the load loss (eq. 10).
    """

    def __init__(self, d_model, n_experts, k):
        super().__init__(d_model, n_experts, k)
        if k >= n_experts:
            raise ValueError(f"noisy top-k needs k < number of experts (got k={k}, {n_experts} experts): "
                             "the load estimate compares with the (k+1)-th largest score")
        self.weight = Parameter.constant((d_model, n_experts), 0.0)
        self.noise_weight = Parameter.constant((d_model, n_experts), 0.0)
        self.smooth_load = None

    def forward(self, x, token_ids=None):
        clean = self.logits(x)  # (T, E)
        if not self.training:
            self.smooth_load = None
            top, index = F.topk(clean, self.k)
            return Routing(index, F.softmax(top), F.softmax(clean), clean)
        noise_std = F.softplus(x @ self.noise_weight)  # (T, E)
        eps = Tensor(device_rng(x.xp).standard_normal(clean.shape, dtype=clean.dtype))
        noisy = clean + eps * noise_std  # H(x)
        top, index = F.topk(noisy, self.k + 1)  # the extra one is the threshold for the experts in the top k
        self.smooth_load = self._load_probability(clean, noisy, noise_std, top)
        gates = F.softmax(top[:, : self.k])
        return Routing(index[:, : self.k], gates, F.softmax(clean), clean)

    def _load_probability(self, clean, noisy, noise_std, top):
        """P(x, i) = Phi((clean_i - kth_excluding(H, k, i)) / std_i) (eq. 9). For an expert inside the
        top k, the k-th largest *excluding* it is the (k+1)-th overall; for one outside, the k-th."""
        kth, k_plus_1 = top[:, self.k - 1 : self.k], top[:, self.k : self.k + 1]  # (T, 1) each
        in_top = noisy.data >= kth.data  # (T, E)
        threshold = F.where(in_top, k_plus_1, kth)  # (T, E) by broadcasting
        return F.normal_cdf((clean - threshold) / noise_std)
