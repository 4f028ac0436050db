"""Hierarchical mixtures of experts fitted by EM (Jordan & Jacobs 1994), with linear-Gaussian
experts and softmax gates: a two-level tree of I branches with J experts each.

    P(y | x) = sum_i g_i(x) sum_j g_{j|i}(x) N(y; x . w_ij, sigma_ij^2)

The top gate g_i = softmax_i(x @ V) and the nested gates g_{j|i} = softmax_j(x @ V_i) are linear in
the features x (give x a column of ones for a bias), like the experts. A flat mixture of E experts
is the tree with one branch (I = 1, J = E): the same code fits both.

EM as Jordan & Jacobs (1994, Neural Computation 6:181-214) derive it for the tree:
* E-step, posteriors at each level of the tree, under the current parameters:
  h_ij = g_i g_{j|i} P_ij / sum_kl g_k g_{l|k} P_kl (a leaf), h_i = sum_j h_ij (a branch) and
  h_{j|i} = g_{j|i} P_ij / sum_l g_{l|i} P_il (a leaf within its branch).
* M-step, experts: weighted least squares with weights h_ij, then sigma_ij^2 the weighted mean
  squared residual -- the exact maximiser of the expected complete-data log-likelihood Q.
* M-step, gates: the top gate maximises sum_t sum_i h_i log g_i, branch i's gate
  sum_t h_i sum_j h_{j|i} log g_{j|i}: softmax regressions on soft targets, which the paper solves
  by IRLS. Here each gate takes a few IRLS (Newton) steps, each halved until Q does not fall. That
  raises Q without always maximising it: a generalised EM step (Dempster, Laird & Rubin 1977), which
  keeps the guarantee that the log-likelihood never decreases.

Introduced in lesson 01, section "A hierarchy of experts".
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import functional as F
from ..tensor import Tensor, no_grad, tensor

LOG_2PI = float(np.log(2 * np.pi))


@dataclass(frozen=True)
class HME:
    """The parameters of a two-level tree: NumPy arrays for EM, or engine Tensors for gradient
    descent on the same likelihood. D features, I branches, J experts per branch."""

    top_gate: object  # (D, I): g_i(x) = softmax_i(x @ top_gate)
    nested_gates: object  # (D, I, J): g_{j|i}(x) = softmax_j(x @ nested_gates[:, i])
    experts: object  # (D, I, J): expert (i, j) predicts x @ experts[:, i, j]
    variances: object  # (I, J): sigma_ij^2, the noise variance of each expert


def init(n_branches: int, n_experts: int, n_features: int, rng: np.random.Generator, scale: float = 1.0) -> HME:
    """Uniform gates (zero weights), experts drawn N(0, scale^2), unit variances."""
    shape = (n_features, n_branches, n_experts)
    return HME(np.zeros((n_features, n_branches)), np.zeros(shape),
               scale * rng.standard_normal(shape), np.ones((n_branches, n_experts)))


def _tensor(value):
    return value if isinstance(value, Tensor) else tensor(value, dtype=np.float64)


def check_shapes(model: HME, x, y=None) -> None:
    """Raises ValueError naming the first array whose shape does not fit the tree and the data."""
    d, i, j = np.shape(model.experts)
    expected = {"top_gate": (d, i), "nested_gates": (d, i, j), "variances": (i, j)}
    for name, shape in expected.items():
        if tuple(np.shape(getattr(model, name))) != shape:
            raise ValueError(f"HME.{name} has shape {tuple(np.shape(getattr(model, name)))}, but experts of shape "
                             f"{(d, i, j)} (D, I, J) need {shape}")
    if len(np.shape(x)) != 2 or np.shape(x)[1] != d:
        raise ValueError(f"x has shape {tuple(np.shape(x))}; the model expects (N, {d}): N cases of D = {d} "
                         "features (add the column of ones if the model has a bias)")
    if y is not None and tuple(np.shape(y)) != (np.shape(x)[0],):
        raise ValueError(f"y has shape {tuple(np.shape(y))}; expected ({np.shape(x)[0]},), one target per row of x")


def log_gates(model: HME, x):
    """log g_i (N, I) and log g_{j|i} (N, I, J) as Tensors."""
    d, i, j = np.shape(model.experts)
    x = _tensor(x)
    log_top = F.log_softmax(x @ _tensor(model.top_gate), axis=-1)  # (N, I)
    nested_logits = (x @ _tensor(model.nested_gates).reshape(d, i * j)).reshape(x.shape[0], i, j)
    return log_top, F.log_softmax(nested_logits, axis=-1)  # (N, I, J)


def expert_log_likelihoods(model: HME, x, y):
    """log N(y_n; x_n . w_ij, sigma_ij^2) for every case and expert: a (N, I, J) Tensor."""
    d, i, j = np.shape(model.experts)
    x, y = _tensor(x), _tensor(y)
    means = (x @ _tensor(model.experts).reshape(d, i * j)).reshape(x.shape[0], i, j)  # (N, I, J)
    residual = y.reshape(-1, 1, 1) - means
    variances = _tensor(model.variances)
    return (residual * residual / variances + variances.log() + LOG_2PI) * -0.5


def log_likelihood(model: HME, x, y):
    """sum_n log P(y_n | x_n), a scalar Tensor (differentiable when the parameters are Tensors)."""
    check_shapes(model, x, y)
    n, (_, i, j) = np.shape(x)[0], np.shape(model.experts)
    log_top, log_nested = log_gates(model, x)
    log_leaf = log_top.reshape(n, i, 1) + log_nested + expert_log_likelihoods(model, x, y)  # (N, I, J)
    return F.logsumexp(log_leaf.reshape(n, i * j), axis=-1).sum()


@dataclass(frozen=True)
class Posteriors:
    """The E-step's posteriors: each row of `top` and of `leaf` (over i, j) sums to 1, and so does
    each branch's row of `nested`."""

    top: np.ndarray  # (N, I): h_i
    nested: np.ndarray  # (N, I, J): h_{j|i}
    leaf: np.ndarray  # (N, I, J): h_ij = h_i h_{j|i}


def _log_normalise(a, axis):
    top = a.max(axis=axis, keepdims=True)
    return a - top - np.log(np.exp(a - top).sum(axis=axis, keepdims=True))


def posteriors(top_logits, nested_logits, log_likelihoods) -> Posteriors:
    """The E-step from the gates' logits (N, I), (N, I, J) and the experts' log-likelihoods of the
    targets (N, I, J), all in log space (log-gates give the same result as logits: a constant per
    row cancels). h_{j|i} is computed within its branch, so it stays defined where h_i underflows."""
    log_nested = _log_normalise(np.asarray(nested_logits, dtype=float), axis=2)  # log g_{j|i}
    log_branch_joint = log_nested + log_likelihoods  # log g_{j|i} P_ij, (N, I, J)
    nested = np.exp(_log_normalise(log_branch_joint, axis=2))  # h_{j|i}
    branch_evidence = np.logaddexp.reduce(log_branch_joint, axis=2)  # log sum_j g_{j|i} P_ij, (N, I)
    top = np.exp(_log_normalise(np.asarray(top_logits, dtype=float) + branch_evidence, axis=1))  # h_i
    return Posteriors(top, nested, top[:, :, None] * nested)


def fit_linear_experts(x, y, responsibilities, min_variance: float = 1e-6):
    """M-step for K linear-Gaussian experts: expert k solves min_w sum_n r_nk (y_n - x_n . w)^2
    (the normal equations X^T R_k X w = X^T R_k y) and sigma_k^2 is its weighted mean squared
    residual, floored at `min_variance` (an expert that owns fewer than D cases would otherwise fit
    them exactly and send the likelihood to infinity).

    x (N, D), y (N,), responsibilities (N, K) -> weights (D, K), variances (K,)."""
    weighted_xt = x.T[None, :, :] * responsibilities.T[:, None, :]  # (K, D, N): X^T R_k
    try:
        weights = np.linalg.solve(weighted_xt @ x, (weighted_xt @ y)[..., None])[..., 0]  # (K, D)
    except np.linalg.LinAlgError:
        owned = responsibilities.sum(axis=0)
        raise ValueError(f"an expert's weighted least squares is singular (responsibility per expert "
                         f"{np.round(owned, 3).tolist()}): an expert owns too few cases; use fewer "
                         f"experts or another start") from None
    residual = y[:, None] - x @ weights.T  # (N, K)
    variances = (responsibilities * residual**2).sum(axis=0) / responsibilities.sum(axis=0)
    return weights.T, np.maximum(variances, min_variance)


def gate_objective(x, targets, weights) -> float:
    """Q for one softmax gate: sum_n sum_k targets_nk log softmax(x_n @ weights)_k."""
    return float((targets * _log_normalise(x @ weights, axis=1)).sum())


def fit_softmax_gate(x, targets, weights, steps: int = 3, max_halvings: int = 40):
    """M-step for one softmax gate: `steps` IRLS (Newton) steps on Q = sum targets log softmax(x W),
    each halved until Q does not fall (so Q never decreases).

    x (N, D); targets (N, K), non-negative soft targets whose row sums weight the cases;
    weights (D, K), the current gate -> new weights (D, K)."""
    n_features, k = weights.shape
    if k == 1:
        return weights  # a one-way gate is the constant 1
    case_weight = targets.sum(axis=1)  # (N,)
    for _ in range(steps):
        p = np.exp(_log_normalise(x @ weights, axis=1))  # (N, K)
        gradient = x.T @ (targets - case_weight[:, None] * p)  # (D, K)
        curvature = case_weight[:, None, None] * (p[:, :, None] * np.eye(k) - p[:, :, None] * p[:, None, :])
        hessian = np.einsum("nd,nkl,ne->dkel", x, curvature, x).reshape(n_features * k, n_features * k)
        # -Hessian is singular along "add the same vector to every class": lstsq takes the step
        # of least norm, which leaves that direction alone.
        direction = np.linalg.lstsq(hessian, gradient.reshape(-1), rcond=None)[0].reshape(n_features, k)
        current, step = gate_objective(x, targets, weights), 1.0
        for _ in range(max_halvings):
            candidate = weights + step * direction
            if gate_objective(x, targets, candidate) >= current:
                weights = candidate
                break
            step /= 2
        else:
            return weights  # no step raised Q: already at its maximum to rounding
    return weights


def em_step(model: HME, x, y, gate_steps: int = 3, min_variance: float = 1e-6) -> HME:
    """One generalised EM iteration (E-step, then the M-steps of the module docstring): the
    log-likelihood of (x, y) under the result is never lower than under `model`.

    model: HME of arrays; x (N, D) features; y (N,) targets."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    check_shapes(model, x, y)
    d, n_branches, n_experts = np.shape(model.experts)
    with no_grad():
        log_top, log_nested = log_gates(model, x)
        log_lik = expert_log_likelihoods(model, x, y)
    h = posteriors(log_top.numpy(), log_nested.numpy(), log_lik.numpy())
    weights, variances = fit_linear_experts(x, y, h.leaf.reshape(len(x), -1), min_variance)
    top = fit_softmax_gate(x, h.top, np.asarray(model.top_gate), gate_steps)
    nested = np.stack([fit_softmax_gate(x, h.leaf[:, i], np.asarray(model.nested_gates)[:, i], gate_steps)
                       for i in range(n_branches)], axis=1)  # branch i's targets h_i h_{j|i}
    return HME(top, nested, weights.reshape(d, n_branches, n_experts), variances.reshape(n_branches, n_experts))


def leaf_priors(model: HME, x) -> np.ndarray:
    """g_i(x) g_{j|i}(x), the prior weight of every leaf: (N, I, J), summing to 1 per case."""
    with no_grad():
        log_top, log_nested = log_gates(model, x)
    return np.exp(log_top.numpy()[:, :, None] + log_nested.numpy())


def predict(model: HME, x) -> np.ndarray:
    """The mixture's mean prediction sum_ij g_i g_{j|i} x . w_ij: (N,)."""
    d, i, j = np.shape(model.experts)
    means = (np.asarray(x) @ np.asarray(model.experts).reshape(d, i * j)).reshape(len(x), i, j)
    return (leaf_priors(model, x) * means).sum(axis=(1, 2))
