"""Hash routing (Roller et al. 2021): a fixed map from token id to expert, no learned router.

Two tables. `frequency_balanced_table` is the paper's "balanced assignment" (§3): it reads how often
each token occurs in the training text and fills the experts so that each carries about the same
share of that text. `shuffled_round_robin_table` needs no text: every expert owns the same number of
token *types*, which balances the vocabulary but not the text (frequent tokens still pile up).
"""
import numpy as np

from ...backend import asarray
from ...tensor import Tensor
from .base import Routing


def frequency_balanced_table(token_counts, n_experts: int) -> np.ndarray:
    """(V,) expert of each token id: the tokens, most frequent first, each go to the expert whose
    share of the text is smallest so far (ties: the expert with fewer token types, then the lower
    index), so that the experts' loads on the counted text come out as even as a greedy fill allows.

    `token_counts` (V,) holds how often each id occurs in the training text (zeros allowed).
    """
    counts = np.asarray(token_counts)
    if counts.ndim != 1 or counts.size == 0:
        raise ValueError(f"token_counts must be a non-empty 1-D array (one count per token id), got shape {counts.shape}")
    if not np.issubdtype(counts.dtype, np.number) or not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise ValueError("token_counts must be finite counts >= 0, one per token id "
                         "(for example np.bincount(train_ids, minlength=vocab_size))")
    check_n_experts(n_experts)
    load = np.zeros(n_experts)  # (E,) text each expert carries so far
    types = np.zeros(n_experts, dtype=np.int64)  # (E,) token ids each expert owns so far
    table = np.empty(counts.size, dtype=np.int64)
    for token in np.argsort(-counts, kind="stable"):  # most frequent first; equal counts by id
        expert = min(range(n_experts), key=lambda e: (load[e], types[e], e))
        table[token] = expert
        load[expert] += counts[token]
        types[expert] += 1
    return table


def shuffled_round_robin_table(vocab_size: int, n_experts: int, seed: int = 42) -> np.ndarray:
    """(V,) expert of each token id: ids dealt round-robin, then shuffled with a fixed seed. Every
    expert owns V/E token types (give or take one); the text they carry is left to chance."""
    check_n_experts(n_experts)
    if not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise ValueError(f"vocab_size must be a whole number >= 1, got {vocab_size!r}")
    return np.random.default_rng(seed).permutation(np.arange(vocab_size) % n_experts)


def check_n_experts(n_experts) -> None:
    if not isinstance(n_experts, (int, np.integer)) or n_experts < 1:
        raise ValueError(f"n_experts must be a whole number >= 1, got {n_experts!r}")


class HashRouter:
    """expert(t) = table[token_id]: no router parameters, no balancing loss; k = 1 and the gate is 1.

    Pass `token_counts` (how often each id occurs in the training text) for the paper's
    frequency-balanced table. Without it -- a model built from its config alone knows no text --
    the table is the shuffled round-robin from a fixed seed. Either way the table is a function of
    its inputs only, the same in every run, so it needs no place in a checkpoint.
    """

    def __init__(self, vocab_size: int, n_experts: int, seed: int = 42, token_counts=None):
        self.n_experts, self.k = n_experts, 1
        if token_counts is None:
            self.table = shuffled_round_robin_table(vocab_size, n_experts, seed)  # (V,)
        else:
            if len(token_counts) != vocab_size:
                raise ValueError(f"token_counts has {len(token_counts)} entries for a vocabulary of {vocab_size}: "
                                 "count every token id, for example np.bincount(ids, minlength=vocab_size)")
            self.table = frequency_balanced_table(token_counts, n_experts)  # (V,)

    def __call__(self, x, token_ids=None):
        if token_ids is None:
            raise ValueError("hash routing needs the token ids: call the layer as layer(x, token_ids=ids)")
        if not bool(x.xp.isfinite(x.data).all()):
            raise ValueError("hash router input contains NaN or infinity: the layer's input is not finite "
                             "(check the previous layers, or lower the learning rate)")
        ids = token_ids.data if isinstance(token_ids, Tensor) else token_ids
        table = asarray(self.table, backend=x.backend)
        index = table[ids.reshape(-1)][:, None]  # (T, 1)
        xp = x.xp
        ones = Tensor(xp.ones(index.shape, dtype=x.dtype))
        uniform = Tensor(xp.full((index.shape[0], self.n_experts), 1.0 / self.n_experts, dtype=x.dtype))
        logits = Tensor(xp.zeros((index.shape[0], self.n_experts), dtype=x.dtype))
        return Routing(index, ones, uniform, logits)
