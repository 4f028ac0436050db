"""Hash routing (Roller et al. 2021): a fixed, random map from token id to expert."""
import numpy as np

from ...backend import asarray
from ...tensor import Tensor
from .base import Routing


class HashRouter:
    """expert(t) = table[token_id]: no router parameters, no balancing loss. The table is balanced
    (a shuffled round-robin over the vocabulary, the paper's "balanced" variant), so every expert
    owns about V/E token types. k = 1 and the gate is 1. The table comes from a fixed seed, so it
    is the same in every run and needs no place in a checkpoint."""

    def __init__(self, vocab_size: int, n_experts: int, seed: int = 42):
        self.n_experts, self.k = n_experts, 1
        self.table = np.random.default_rng(seed).permutation(np.arange(vocab_size) % n_experts)  # (V,)

    def __call__(self, x, token_ids=None):
        if token_ids is None:
            raise ValueError("hash routing needs the token ids: call the layer as layer(x, token_ids=ids)")
        ids = token_ids.data if isinstance(token_ids, Tensor) else token_ids
        table = asarray(self.table, backend=x.backend)
        index = table[ids.reshape(-1)][:, None]  # (T, 1)
        xp = x.xp
        ones = Tensor(xp.ones(index.shape, dtype=x.dtype))
        uniform = Tensor(xp.full((index.shape[0], self.n_experts), 1.0 / self.n_experts, dtype=x.dtype))
        logits = Tensor(xp.zeros((index.shape[0], self.n_experts), dtype=x.dtype))
        return Routing(index, ones, uniform, logits)
