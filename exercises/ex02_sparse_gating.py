"""Lesson 02, sparse gating (Shazeer et al. 2017): exercises.

Replace each `raise NotImplementedError(...)` with your answer, then grade:
    python -m minimoe.grade ex02
Each docstring is the contract the grader checks; the reference answers are in
`solutions/ex02_sparse_gating.py` (look there only when stuck).
"""
# ruff: noqa: F401  (the imports are there for your answers)
import math

import numpy as np

import minimoe.functional as F


def topk_gating(logits, k):
    """Top-k gating in Mixtral's order: softmax over all experts, keep the k largest, renormalise.

    logits: Tensor (T, E), router logits, of any float dtype. k: int, 1 <= k <= E (else ValueError).
    Returns (gates, indices):
      gates:   Tensor (T, E) of logits' dtype, differentiable in `logits`: zero outside each row's
               top k, rows sum to 1;
      indices: int ndarray (T, k), the kept experts of each row, largest gate first; among equal
               probabilities the lower expert index comes first (and is the one kept).

    Hint: F.softmax; np.argsort(-probs.data, kind="stable")[:, :k]; a 0/1 mask; divide by the sum.
    """
    raise NotImplementedError(
        'ex02: F.softmax; np.argsort(-probs.data, kind="stable")[:, :k]; a 0/1 mask; divide by '
        'the sum.')


def noisy_topk_gating(x, w_gate, w_noise, noise, k):
    """Noisy top-k gating (Shazeer et al. 2017, eqs. 3-5) for a given noise sample.

    x: ndarray (T, d). w_gate, w_noise: ndarrays (d, E). noise: ndarray (T, E), the standard-normal
    sample (given, so the answer is deterministic). k: int, 1 <= k <= E (ValueError otherwise,
    naming k and E).
    H = x @ w_gate + noise * softplus(x @ w_noise); G = softmax(KeepTopK(H, k)), where KeepTopK sets
    all but the k largest entries of each row to -inf; among equal entries of H the lower expert
    index is kept.
    Returns an ndarray (T, E): zero outside each row's top k of H; rows sum to 1; always finite.

    Hint: softplus(z) = np.logaddexp(0, z); -inf outside the top k of H; then a stable softmax.
    """
    raise NotImplementedError(
        'ex02: softplus(z) = np.logaddexp(0, z); -inf outside the top k of H; then a stable '
        'softmax.')


def importance_loss(gates):
    """The importance loss of Shazeer et al. 2017 (eqs. 6-7), without its weight: CV(importance)^2.

    gates: Tensor (T, E), each token's gate values. Importance_i = sum over tokens of gates[:, i].
    Returns a scalar Tensor, differentiable: variance / mean^2 of the importance vector, with the
    *population* variance (divide by E, not E - 1; the convention of vmoe, this course's choice).

    Hint: importance = gates.sum(axis=0); ((importance - mean) ** 2).mean() / mean**2.
    """
    raise NotImplementedError(
        'ex02: importance = gates.sum(axis=0); ((importance - mean) ** 2).mean() / mean**2.')


def load_loss(clean_logits, noisy_logits, noise_std, k):
    """The smooth load estimator and load loss of Shazeer et al. 2017 (Appendix A, eqs. 8-11).

    clean_logits: ndarray (T, E), x @ w_gate. noisy_logits: ndarray (T, E), H (the clean logits plus
    scaled noise). noise_std: ndarray (T, E), softplus(x @ w_noise), positive. k: int, 1 <= k < E.
    P(x, i) = Phi((clean_i - kth_excluding(H, k, i)) / noise_std_i), where kth_excluding(H, k, i) is
    the k-th largest entry of the token's H among the experts other than i: the probability that
    expert i would still be in the top k with a fresh noise sample on i alone.
    Load_i = sum over tokens of P(x, i).
    Returns (loss, load): loss = CV(Load)^2 as a float (population variance, as in
    importance_loss), and load, an ndarray (E,).

    Hint: sort each row of H descending: the top k's threshold is entry k+1, the others' entry k.
    """
    raise NotImplementedError(
        "ex02: sort each row of H descending: the top k's threshold is entry k+1, the others' "
        'entry k.')
