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


def hme_posteriors(top_logits, nested_logits, log_likelihoods):
    """The E-step of a two-level hierarchical mixture of experts (Jordan & Jacobs 1994): the
    posteriors at each level of the tree of I branches with J experts each.

    top_logits:      ndarray (N, I), the top gate's logits; g_i = softmax over i.
    nested_logits:   ndarray (N, I, J), the logits of branch i's gate; g_{j|i} = softmax over j.
    log_likelihoods: ndarray (N, I, J), log P_ij: expert (i, j)'s log-density of the case's target.
    Returns (h_top (N, I), h_nested (N, I, J), h_leaf (N, I, J)), float ndarrays:
      h_leaf[n, i, j]   = g_i g_{j|i} P_ij / (the same summed over every leaf (i', j'));
      h_top[n, i]       = sum_j h_leaf[n, i, j];
      h_nested[n, i, j] = g_{j|i} P_ij / sum_j' g_{j'|i} P_ij', the posterior within branch i,
                          defined even where h_top[n, i] rounds to 0.
    Each row of h_top, each h_nested[n, i] and each h_leaf[n] sums to 1, with no NaN or inf for
    logits or log-likelihoods like -1000. You may call `softmax` and `log_softmax` from this module.

    Hint: in logs, branch i's evidence is logsumexp_j(log g_{j|i} + log P_ij), and
    h_top = softmax_i(log g_i + evidence_i).
    """
    raise NotImplementedError(
        "ex01: in logs, branch i's evidence is logsumexp_j(log g_{j|i} + log P_ij), and h_top = "
        "softmax_i(log g_i + evidence_i).")


def hme_em_step(x, y, top_gate, nested_gates, experts, variances, fit_gate, min_variance=1e-6):
    """One EM step for a two-level hierarchical mixture of linear experts (Jordan & Jacobs 1994).

    Model: y_n ~ sum_i g_i sum_j g_{j|i} N(x_n . experts[:, i, j], variances[i, j]) with
    g_i = softmax_i(x_n @ top_gate) and g_{j|i} = softmax_j(x_n @ nested_gates[:, i]).
    x: ndarray (N, D), the features (a column of ones gives a bias); y: ndarray (N,), the targets.
    top_gate (D, I), nested_gates (D, I, J), experts (D, I, J), variances (I, J): float ndarrays.
    fit_gate(x, targets, weights) -> new weights (D, K): the M-step of one softmax gate, given to
      you (the lesson passes minimoe's IRLS); it raises sum_n sum_k targets[n, k] log
      softmax(x_n @ W)_k starting from W = weights, for targets (N, K) and weights (D, K).
    min_variance: float, the smallest variance an expert may get.
    Returns (new_top_gate (D, I), new_nested_gates (D, I, J), new_experts (D, I, J),
    new_variances (I, J)):
      E-step: h_top, h_nested, h_leaf as in `hme_posteriors`, under the *given* parameters, with
              log P_ij = log N(y_n; x_n . experts[:, i, j], variances[i, j]);
      M-step: new_experts[:, i, j] solves min_w sum_n h_leaf[n, i, j] (y_n - x_n . w)^2;
              new_variances[i, j] = sum_n h_leaf[n, i, j] (y_n - x_n . new_experts[:, i, j])^2
                                    / sum_n h_leaf[n, i, j], but at least min_variance;
              new_top_gate = fit_gate(x, h_top, top_gate);
              new_nested_gates[:, i] = fit_gate(x, h_leaf[:, i], nested_gates[:, i]): the targets
              h_i h_{j|i} weight each case by how much branch i owns it.
    The log-likelihood never decreases from one step to the next. You may call `hme_posteriors`.

    Hint: log N(y; m, v) = -(log(2 pi v) + (y - m)^2 / v) / 2; per leaf, solve X^T H X w = X^T H y.
    """
    raise NotImplementedError(
        "ex01: log N(y; m, v) = -(log(2 pi v) + (y - m)^2 / v) / 2; per leaf, solve X^T H X w = X^T H "
        "y.")
