"""Locality of routing: how often a token and the one after it go to the same expert.

Mixtral (Jiang et al. 2024, §5 and Table 5) measures, per layer, "the proportion of times the same
expert is assigned to a token i and its following token i+1", in two forms: the first choices are
equal, or the two tokens' top-2 sets share an expert ("first or second choice"). Against random
assignment, 1/8 = 12.5% and 1 - (6/8)(5/7) ≈ 46%. Lesson 08 measures both on the tiny model
(docs/formulas.md §18).
"""
from math import comb

import numpy as np


def consecutive_same_expert_rate(expert_index) -> float:
    """The share of consecutive token pairs (t, t+1) of a sequence that share an expert.

    expert_index: integer array (B, T) of first-choice experts, or (B, T, k) of each token's k
    experts (the RoutingReport's `expert_index`); B sequences of T tokens. With (B, T) a pair
    counts when the two experts are equal; with (B, T, k) when the two tokens' sets of experts
    share at least one (Mixtral's "first or second choice" at k = 2; k = 1 is the first-choice
    rate). Only pairs inside a sequence count, B * (T - 1) of them: the last token of one row and
    the first of the next are not neighbours. -1 (an assignment dropped by a capacity limit) is no
    expert: it matches nothing, and its pairs still count.
    """
    index = np.asarray(expert_index)
    if index.ndim not in (2, 3):
        raise ValueError(f"expert_index must be (B, T) first choices or (B, T, k) top-k experts, got shape "
                         f"{index.shape}; for one sequence of T tokens pass index[None]")
    if not np.issubdtype(index.dtype, np.integer):
        raise TypeError(f"expert_index must hold integer expert ids, got dtype {index.dtype}; "
                        "convert with .astype(np.int64) if the values are whole numbers")
    batch, length = index.shape[:2]
    if length < 2 or batch == 0:
        raise ValueError(f"no consecutive pairs in expert_index of shape {index.shape}: the rate needs B >= 1 "
                         "sequences of T >= 2 tokens (it is undefined, not 0, without pairs)")
    if index.ndim == 2:
        index = index[:, :, None]  # (B, T, 1): one expert per token
    now, after = index[:, :-1, :, None], index[:, 1:, None, :]  # (B, T-1, k, 1), (B, T-1, 1, k)
    shared = ((now == after) & (now >= 0)).any(axis=(2, 3))  # (B, T-1): the pair shares an expert
    return float(shared.mean())


def random_repeat_rate(n_experts: int, k: int = 1) -> float:
    """The rate above when every token's k experts are drawn uniformly at random, independently:
    1 - C(E - k, k) / C(E, k), the chance that two random k-sets of E experts meet (1/E at k = 1;
    13/28 ≈ 0.464 at E = 8, k = 2, Mixtral Table 5's "≈ 46%")."""
    if not (isinstance(n_experts, (int, np.integer)) and isinstance(k, (int, np.integer)) and 1 <= k <= n_experts):
        raise ValueError(f"need whole numbers 1 <= k <= n_experts, got n_experts={n_experts!r}, k={k!r}")
    return 1.0 - comb(int(n_experts) - int(k), int(k)) / comb(int(n_experts), int(k))


def shuffle_positions(expert_index, rng: np.random.Generator) -> np.ndarray:
    """`expert_index` (B, T) or (B, T, k) with each row's tokens in a random order: every token keeps
    its experts and every sequence its load, only which token follows which is lost. The repeat rate
    of the result is the baseline that locality must beat."""
    index = np.asarray(expert_index)
    if index.ndim not in (2, 3):
        raise ValueError(f"expert_index must be (B, T) or (B, T, k), got shape {index.shape}")
    order = np.argsort(rng.random(index.shape[:2]), axis=1)  # (B, T): a random permutation per row
    return np.take_along_axis(index, order.reshape(order.shape + (1,) * (index.ndim - 2)), axis=1)
