"""Lesson 10, scaling with experts, sparse upcycling and fine-tuning an MoE: exercises.

Replace each `raise NotImplementedError(...)` with your answer, then grade:
    python -m minimoe.grade ex10
Each docstring is the contract the grader checks; the reference answers are in
`solutions/ex10_scaling.py` (look there only when stuck).
"""
# ruff: noqa: F401  (the imports are there for your answers)
import dataclasses
import numbers

import numpy as np

from minimoe.models import Transformer


def fit_power_law(n_experts, losses):
    """Least-squares fit of a power law in the number of experts, in log space.

    loss ≈ c * E**alpha, fitted as the straight line log(loss) = log(c) + alpha * log(E) (natural
    logs; the slope and c do not depend on the base). n_experts: 1-D array of positive numbers with
    at least two distinct values; losses: positive numbers of the same length.
    Returns (c, alpha) as Python floats. alpha < 0 when the loss falls as experts are added: each
    doubling of E multiplies the loss by 2**alpha. ValueError for lengths that differ, fewer than two
    distinct E, or any value <= 0.

    Hint: fit a straight line to the points (log E, log loss): its slope is alpha, and c comes
    from its intercept.
    """
    raise NotImplementedError(
        'ex10: fit a straight line to the points (log E, log loss): its slope is alpha, and c '
        'comes from its intercept.')


def upcycle(dense_model, n_experts, top_k):
    """Sparse upcycling (Komatsuzaki et al. 2022): an MoE Transformer started from a dense one.

    dense_model: a minimoe `Transformer` whose config has dense=True (ValueError otherwise).
    n_experts, top_k: ints with 1 <= top_k <= n_experts (ValueError otherwise).
    Returns a new `Transformer` whose config is dense_model.config with dense=False,
    n_experts=n_experts, top_k=top_k, expert_hidden and ffn_hidden both the dense FFN's width
    (config.dense_hidden), router="topk", renormalize=True and n_shared_experts=0, and whose weights are:
      - every parameter whose name both models have: a copy of the dense model's value;
      - in each MoE block i, the n_experts experts: copies of block i's dense FFN
        (blocks.i.ffn.experts.w_in[e] = blocks.i.ffn.fc1.weight, b_in[e] = fc1.bias,
        w_out[e] = fc2.weight, b_out[e] = fc2.bias, for every expert e);
      - each router (blocks.i.ffn.router.weight): as the new Transformer drew it, a fresh router.
    The parameters keep dense_model's dtype (a float64 model gives a float64 one), and dense_model
    itself is not changed (the new weights are copies, not views). Because the experts are
    identical and each token's gates sum to one, the result computes exactly the dense model's
    logits until it is trained.

    Hint: Transformer(dataclasses.replace(config, ...)), then load_state_dict a dict built from both
    models' state_dict(); np.broadcast_to(w, (n_experts,) + w.shape).copy() stacks the copies.
    """
    raise NotImplementedError(
        'ex10: Transformer(dataclasses.replace(config, ...)), then load_state_dict a dict built '
        "from both models' state_dict(); np.broadcast_to(w, (n_experts,) + w.shape).copy() stacks "
        'the copies.')


def routing_drift(ids_before, ids_after, first_only=True):
    """How much of the routing changed between two checkpoints, e.g. before and after fine-tuning.

    ids_before, ids_after: int arrays of the same shape (..., k), k >= 1: the experts each token
    chose, best first, as `RoutingReport.expert_index` holds them (any leading shape, (T, k) or
    (B, T, k)); a token's k choices are distinct experts.
    first_only=True: the fraction of tokens whose first choice (index 0 of the last axis) differs.
    first_only=False: the mean over tokens of the share of the token's k choices before that are
    not among its k choices after, 1 - |before ∩ after| / k (the order within the k is ignored).
    Returns a Python float in [0, 1]. ValueError when the shapes differ, an array has no last
    axis, or there are no tokens.

    Hint: the set version compares every choice before with every choice after by broadcasting,
    (..., k, 1) == (..., 1, k), then asks which choices before found any match.
    """
    raise NotImplementedError(
        'ex10: the set version compares every choice before with every choice after by '
        'broadcasting, (..., k, 1) == (..., 1, k), then asks which choices before found any match.')
