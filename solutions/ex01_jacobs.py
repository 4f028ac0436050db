"""Lesson 01, adaptive mixtures of local experts (Jacobs, Jordan, Nowlan & Hinton 1991; Jordan &
Jacobs 1994): reference answers.

Try the exercise first (`exercises/ex01_jacobs.py`); grade it with
`python -m minimoe.grade ex01`.
"""
import numpy as np

import minimoe.functional as F


def softmax(x, axis=-1):
    """The softmax of an ndarray along one axis, safe for any finite input.

    x: float ndarray of any shape and float dtype. axis: the axis to normalise over.
    Returns an ndarray of x's shape and dtype (float32 in, float32 out), non-negative, summing to 1
    along `axis`, with no NaN or inf even for logits like 1000 or -1000.

    Hint: subtract the maximum along `axis` (keepdims=True) before exp; softmax does not change.
    """
    shifted = x - x.max(axis=axis, keepdims=True)  # the largest becomes exp(0) = 1: no overflow
    e = np.exp(shifted)
    return e / e.sum(axis=axis, keepdims=True)


def log_softmax(x, axis=-1):
    """log(softmax(x)) along one axis, computed without taking the log of a rounded-off 0.

    x: float ndarray of any shape and float dtype. axis: the axis to normalise over.
    Returns an ndarray of x's shape and dtype, finite wherever x is (log_softmax([0, -1000]) =
    [0, -1000]).

    Hint: x - logsumexp(x), where logsumexp(x) = m + log(sum(exp(x - m))) and m is the max.
    """
    m = x.max(axis=axis, keepdims=True)
    logsumexp = m + np.log(np.exp(x - m).sum(axis=axis, keepdims=True))
    return x - logsumexp


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
    n, _, d = expert_outputs.shape
    error = expert_outputs - targets.reshape(n, 1, d)  # (N, E, D)
    half_squared = (error * error).sum(axis=-1) * 0.5  # (N, E)
    log_joint = F.log_softmax(gate_logits, axis=-1) - half_squared  # log p_i + log likelihood_i
    return -F.logsumexp(log_joint, axis=-1).mean()


def gate_posterior(gate_logits, expert_outputs, targets):
    """The posterior h of Jacobs et al. 1991 (eq. 1.5): how much each expert explains each case.

    gate_logits: ndarray (N, E); expert_outputs: ndarray (N, E, D); targets: ndarray (N, D).
    Returns an ndarray (N, E): h_i = p_i exp(-1/2 ||d - o_i||^2) / sum_j p_j exp(-1/2 ||d - o_j||^2)
    with p = softmax(gate_logits); rows sum to 1, no NaN even when every expert is far off.
    You may call `softmax` and `log_softmax` from this module.

    Hint: prior times likelihood, in logs: softmax over experts of log p_i - 1/2 ||d - o_i||^2.
    """
    half_squared = 0.5 * ((expert_outputs - targets[:, None, :]) ** 2).sum(axis=-1)  # (N, E)
    return softmax(log_softmax(gate_logits) - half_squared)  # normalised in log space


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
    residual = y[:, None] - x @ weights.T  # (N, E)
    log_joint = np.log(prior) - residual**2 / (2 * noise_var)  # (N, E), shared constants dropped
    h = np.exp(log_joint - log_joint.max(axis=1, keepdims=True))
    h /= h.sum(axis=1, keepdims=True)  # (N, E) responsibilities

    weighted_xt = x.T[None, :, :] * h.T[:, None, :]  # (E, D, N): X^T diag(h_i) for every expert
    normal_matrix = weighted_xt @ x  # (E, D, D)
    right_side = weighted_xt @ y  # (E, D)
    new_weights = np.linalg.solve(normal_matrix, right_side[..., None])[..., 0]  # (E, D)
    return new_weights, h.mean(axis=0), h


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
    log_nested = log_softmax(nested_logits, axis=2)  # log g_{j|i}, (N, I, J)
    log_branch_joint = log_nested + log_likelihoods  # log g_{j|i} P_ij
    h_nested = softmax(log_branch_joint, axis=2)  # normalised within each branch
    m = log_branch_joint.max(axis=2, keepdims=True)
    evidence = (m + np.log(np.exp(log_branch_joint - m).sum(axis=2, keepdims=True)))[..., 0]  # (N, I)
    h_top = softmax(log_softmax(top_logits, axis=1) + evidence, axis=1)  # (N, I)
    return h_top, h_nested, h_top[:, :, None] * h_nested


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
    n, d = x.shape
    _, n_branches, n_experts = experts.shape
    means = np.einsum("nd,dij->nij", x, experts)  # (N, I, J)
    log_likelihoods = -0.5 * (np.log(2 * np.pi * variances) + (y[:, None, None] - means) ** 2 / variances)
    h_top, _, h_leaf = hme_posteriors(x @ top_gate, np.einsum("nd,dij->nij", x, nested_gates), log_likelihoods)

    h = h_leaf.reshape(n, -1)  # (N, K): one column per leaf
    weighted_xt = x.T[None, :, :] * h.T[:, None, :]  # (K, D, N): X^T H_k for every leaf
    w = np.linalg.solve(weighted_xt @ x, (weighted_xt @ y)[..., None])[..., 0]  # (K, D)
    residual = y[:, None] - x @ w.T  # (N, K)
    new_variances = np.maximum((h * residual**2).sum(axis=0) / h.sum(axis=0), min_variance)

    new_top_gate = fit_gate(x, h_top, top_gate)
    new_nested_gates = np.stack([fit_gate(x, h_leaf[:, i], nested_gates[:, i]) for i in range(n_branches)], axis=1)
    new_experts = w.T.reshape(d, n_branches, n_experts)
    return new_top_gate, new_nested_gates, new_experts, new_variances.reshape(n_branches, n_experts)
