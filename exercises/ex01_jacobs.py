"""Lesson 01, adaptive mixtures of local experts (Jacobs, Jordan, Nowlan & Hinton 1991; Jordan &
Jacobs 1994): exercises.

Replace each `raise NotImplementedError(...)` with your answer, then grade:
    python -m minimoe.grade ex01
Each docstring is the contract the grader checks; the reference answers are in
`solutions/ex01_jacobs.py` (look there only when stuck).
"""
# ruff: noqa: F401  (the imports are there for your answers)
import numpy as np

import minimoe.functional as F


def softmax(x, axis=-1):
    """The softmax of an ndarray along one axis, safe for any finite input.

    x: float ndarray of any shape and float dtype. axis: the axis to normalise over.
    Returns an ndarray of x's shape and dtype (float32 in, float32 out), non-negative, summing to 1
    along `axis`, with no NaN or inf even for logits like 1000 or -1000.

    Hint: subtract the maximum along `axis` (keepdims=True) before exp; softmax does not change.
    """
    raise NotImplementedError(
        'ex01: subtract the maximum along `axis` (keepdims=True) before exp; softmax does not '
        'change.')


def log_softmax(x, axis=-1):
    """log(softmax(x)) along one axis, computed without taking the log of a rounded-off 0.

    x: float ndarray of any shape and float dtype. axis: the axis to normalise over.
    Returns an ndarray of x's shape and dtype, finite wherever x is (log_softmax([0, -1000]) =
    [0, -1000]).

    Hint: x - logsumexp(x), where logsumexp(x) = m + log(sum(exp(x - m))) and m is the max.
    """
    raise NotImplementedError(
        'ex01: x - logsumexp(x), where logsumexp(x) = m + log(sum(exp(x - m))) and m is the max.')


def competitive_loss(gate_logits, expert_outputs, targets):
    """The 1991 competitive loss (Jacobs et al. 1991, eq. 1.3), averaged over cases, on the engine.

    gate_logits:    Tensor (N, E), the gating network's outputs s; the gate is p = softmax(s).
    expert_outputs: Tensor (N, E, D), expert i's output o_i for each case.
    targets:        Tensor (N, D), the desired output d.
    Returns a scalar Tensor: mean over the N cases of -log sum_i p_i exp(-1/2 ||d - o_i||^2),
    differentiable in all three inputs, and finite even when every expert is far off
    (||d - o||^2 = 2000).

    Hint: -F.logsumexp over experts of F.log_softmax(s) - 1/2 ||d - o_i||^2, then the mean.
    """
    raise NotImplementedError(
        'ex01: -F.logsumexp over experts of F.log_softmax(s) - 1/2 ||d - o_i||^2, then the mean.')


def gate_posterior(gate_logits, expert_outputs, targets):
    """The posterior h of Jacobs et al. 1991 (eq. 1.5): how much each expert explains each case.

    gate_logits: ndarray (N, E); expert_outputs: ndarray (N, E, D); targets: ndarray (N, D).
    Returns an ndarray (N, E): h_i = p_i exp(-1/2 ||d - o_i||^2) / sum_j p_j exp(-1/2 ||d - o_j||^2)
    with p = softmax(gate_logits); rows sum to 1, no NaN even when every expert is far off.
    You may call `softmax` and `log_softmax` from this module.

    Hint: prior times likelihood, in logs: softmax over experts of log p_i - 1/2 ||d - o_i||^2.
    """
    raise NotImplementedError(
        'ex01: prior times likelihood, in logs: softmax over experts of log p_i - 1/2 ||d - '
        'o_i||^2.')


def em_step(x, y, weights, prior, noise_var=1.0):
    """One EM step for a mixture of linear experts (Jordan & Jacobs 1994), with a gate that is a
    fixed prior over experts (an input-dependent gate needs a further fit in the M-step).

    Model: y_n ~ sum_i prior_i N(x_n . weights_i, noise_var).
    x:       ndarray (N, D), the inputs (a column of ones gives each expert a bias).
    y:       ndarray (N,), the targets.
    weights: ndarray (E, D); expert i predicts x @ weights[i].
    prior:   ndarray (E,), the mixing proportions (sum to 1).
    noise_var: float, the variance of every expert's Gaussian noise (held fixed).
    Returns (new_weights (E, D), new_prior (E,), responsibilities (N, E)):
      E-step: responsibilities h_ni = posterior of expert i for case n under the *given* parameters;
      M-step: new_weights[i] solves the weighted least squares min sum_n h_ni (y_n - x_n . w)^2,
              new_prior = mean of h over cases.
    The log-likelihood never decreases from one step to the next.

    Hint: h = softmax of log prior_i - (y - x w_i)^2 / (2 noise_var); solve X^T H_i X w = X^T H_i y.
    """
    raise NotImplementedError(
        'ex01: h = softmax of log prior_i - (y - x w_i)^2 / (2 noise_var); solve X^T H_i X w = '
        'X^T H_i y.')
