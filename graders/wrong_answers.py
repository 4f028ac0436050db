"""Plausible wrong answers, stubs and shortcuts: every grader must reject its own.

Three kinds, each held to its own standard by the project's test suite, which runs
`python -m pytest graders --impl=wrong` (every entry handed to the graders of its exercise in place
of the reference) and reads the outcome of every test:
* "wrong": the mistake a learner is likely to make (the softmax without its max shift, the Switch
  loss without its factor N, a capacity rounded down, ...), written out in full. It must lose
  points: at least one of its exercise's tests fails.
* "stub": code that does nothing and hopes for credit (raises, returns zeros of the right shape, or
  uniform weights); generated below for every graded exercise. It must earn nothing: every test of
  its exercise fails.
* "shortcut": a call to the library's own version of the exercise. It must earn nothing either.
To try one by hand: `python -m pytest graders --impl=wrong:switch_loss/no_factor_n`.
"""
import math
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

import minimoe as mm
import minimoe.functional as F
from minimoe import calculator, optim, serving
from minimoe.models import hme, jacobs
from minimoe.moe import dispatch, losses
from minimoe.ops.arithmetic import Mul as EngineMul
from minimoe.ops.arithmetic import unbroadcast as engine_unbroadcast
from solutions import (ex00_autograd, ex01_jacobs, ex02_sparse_gating, ex03_switch_gshard, ex04_transformer,
                       ex05_stability, ex07_deepseek, ex08_specialisation, ex09_scale,
                       ex10_scaling)


@dataclass(frozen=True)
class WrongAnswer:
    id: str  # "exercise/what_is_wrong"
    module: str  # the exercise module, e.g. "ex02_sparse_gating"
    exercise: str  # the function or class it stands in for
    why: str  # the mistake, in words
    function: object
    kind: str = "wrong"  # "wrong" (must lose points), "stub" or "shortcut" (must earn none)


WRONG_ANSWERS: list[WrongAnswer] = []


def wrong(module, exercise, why, kind="wrong"):
    """Registers the decorated function (or class) as a wrong answer to `module.exercise`."""

    def register(function):
        WRONG_ANSWERS.append(WrongAnswer(f"{exercise}/{function.__name__}", module, exercise, why, function, kind))
        return function

    return register


def shortcut(module, exercise, why):
    """Registers the decorated function as a call to the library's own version of an exercise."""
    return wrong(module, exercise, why, kind="shortcut")


# ---- ex00: autograd ------------------------------------------------------------------------------

@wrong("ex00_autograd", "unbroadcast", "sums only the new leading axes, not the stretched size-1 ones")
def leading_axes_only(grad, shape):
    return grad.sum(axis=tuple(range(grad.ndim - len(shape))))


@wrong("ex00_autograd", "unbroadcast", "sums the stretched axes without keepdims, so (2, 1) comes back as (2,)")
def drops_size_one_axes(grad, shape):
    grad = grad.sum(axis=tuple(range(grad.ndim - len(shape))))
    return grad.sum(axis=tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1))


@shortcut("ex00_autograd", "unbroadcast", "calls the engine's own unbroadcast instead of writing it")
def calls_the_engine(grad, shape):
    return engine_unbroadcast(grad, shape)


@wrong("ex00_autograd", "Tanh", "differentiates with the input: 1 - x^2 instead of 1 - tanh(x)^2")
class derivative_from_input(mm.Function):  # noqa: N801  (named like the other wrong answers)
    def forward(self, x):
        self.x = x
        return self.xp.tanh(x)

    def backward(self, grad_output):
        return (grad_output * (1 - self.x**2),)


@wrong("ex00_autograd", "Tanh", "forgets the chain rule: returns 1 - y^2 without multiplying by grad_output")
class no_chain_rule(mm.Function):  # noqa: N801
    def forward(self, x):
        self.y = self.xp.tanh(x)
        return self.y

    def backward(self, grad_output):
        return (1 - self.y**2,)


@shortcut("ex00_autograd", "Tanh", "calls the engine's tanh inside forward")
class engine_tanh(mm.Function):  # noqa: N801
    def forward(self, x):
        self.y = F.tanh(mm.Tensor(x)).data
        return self.y

    def backward(self, grad_output):
        return (grad_output * (1 - self.y**2),)


@wrong("ex00_autograd", "Mul", "swaps the gradients: d(ab)/da = a")
class swapped_gradients(mm.Function):  # noqa: N801
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad_output):
        return (ex00_autograd.unbroadcast(grad_output * self.a, self.a.shape),
                ex00_autograd.unbroadcast(grad_output * self.b, self.b.shape))


@wrong("ex00_autograd", "Mul", "forgets to unbroadcast: gradients come back in the output's shape")
class no_unbroadcast(mm.Function):  # noqa: N801
    def forward(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, grad_output):
        return grad_output * self.b, grad_output * self.a


@shortcut("ex00_autograd", "Mul", "reuses the engine's Mul")
class engine_mul(EngineMul):  # noqa: N801
    pass


@wrong("ex00_autograd", "numerical_gradient", "one-sided differences (f(x + eps) - f(x)) / eps: error O(eps)")
def one_sided(f, x, eps=1e-6):
    grad, base = np.zeros(x.shape), f(x)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + eps
        grad[index] = (f(x) - base) / eps
        x[index] = original
    return grad


@wrong("ex00_autograd", "numerical_gradient", "leaves each entry nudged down instead of restoring it")
def leaves_x_nudged(f, x, eps=1e-6):
    grad = np.zeros(x.shape)
    for index in np.ndindex(x.shape):
        original = x[index]
        x[index] = original + eps
        up = f(x)
        x[index] = original - eps
        grad[index] = (up - f(x)) / (2 * eps)
    return grad


# ---- ex01: Jacobs et al. 1991 ---------------------------------------------------------------------

@wrong("ex01_jacobs", "softmax", "does not subtract the max: exp overflows to inf on large logits")
def no_max_shift(x, axis=-1):
    e = np.exp(x)
    return e / e.sum(axis=axis, keepdims=True)


@wrong("ex01_jacobs", "softmax", "subtracts the max of the whole array, not of each row: other rows underflow")
def global_max_shift(x, axis=-1):
    e = np.exp(x - x.max())
    return e / e.sum(axis=axis, keepdims=True)


@wrong("ex01_jacobs", "log_softmax", "log(softmax(x)): log of a probability rounded to 0 is -inf")
def log_of_softmax(x, axis=-1):
    return np.log(ex01_jacobs.softmax(x, axis=axis))


@wrong("ex01_jacobs", "log_softmax", "logsumexp without the max shift: overflows on large logits")
def unshifted_logsumexp(x, axis=-1):
    return x - np.log(np.exp(x).sum(axis=axis, keepdims=True))


def _half_squared_errors(expert_outputs, targets):
    n, _, d = expert_outputs.shape
    error = expert_outputs - targets.reshape(n, 1, d)
    return (error * error).sum(axis=-1) * 0.5  # (N, E)


@wrong("ex01_jacobs", "competitive_loss", "the cooperative loss: the error of the blended output ||d - sum p o||^2")
def cooperative_loss(gate_logits, expert_outputs, targets):
    n, e, d = expert_outputs.shape
    blended = (F.softmax(gate_logits).reshape(n, e, 1) * expert_outputs).sum(axis=1)  # (N, D)
    error = targets - blended
    return (error * error).sum(axis=-1).mean()


@wrong("ex01_jacobs", "competitive_loss", "eq. 1.2 instead of eq. 1.3: sum_i p_i ||d - o_i||^2")
def weighted_squared_errors(gate_logits, expert_outputs, targets):
    return (F.softmax(gate_logits) * _half_squared_errors(expert_outputs, targets) * 2.0).sum(axis=-1).mean()


@wrong("ex01_jacobs", "competitive_loss", "-log(sum p exp(-e)) computed directly: exp underflows, log(0) = inf")
def unstable_log_of_sum(gate_logits, expert_outputs, targets):
    likelihood = F.exp(-_half_squared_errors(expert_outputs, targets))
    return -F.log((F.softmax(gate_logits) * likelihood).sum(axis=-1)).mean()


@wrong("ex01_jacobs", "gate_posterior", "returns the prior p = softmax(s), ignoring how well each expert did")
def prior_not_posterior(gate_logits, expert_outputs, targets):
    return ex01_jacobs.softmax(gate_logits)


@wrong("ex01_jacobs", "gate_posterior", "normalises the likelihoods alone, forgetting the prior p")
def likelihood_only(gate_logits, expert_outputs, targets):
    half_squared = 0.5 * ((expert_outputs - targets[:, None, :]) ** 2).sum(axis=-1)
    return ex01_jacobs.softmax(-half_squared)


@wrong("ex01_jacobs", "gate_posterior", "p * exp(-e) / sum computed directly: 0 / 0 when every expert is far off")
def unstable_posterior(gate_logits, expert_outputs, targets):
    joint = ex01_jacobs.softmax(gate_logits) * np.exp(-0.5 * ((expert_outputs - targets[:, None, :]) ** 2).sum(axis=-1))
    return joint / joint.sum(axis=1, keepdims=True)


@wrong("ex01_jacobs", "em_step", "fits every expert to all the data (ordinary least squares, h ignored)")
def unweighted_least_squares(x, y, weights, prior, noise_var=1.0):
    _, new_prior, h = ex01_jacobs.em_step(x, y, weights, prior, noise_var)
    fit = np.linalg.lstsq(x, y, rcond=None)[0]
    return np.tile(fit, (len(prior), 1)), new_prior, h


@wrong("ex01_jacobs", "em_step", "hard EM: each case goes wholly to its most likely expert")
def hard_assignments(x, y, weights, prior, noise_var=1.0):
    _, _, soft = ex01_jacobs.em_step(x, y, weights, prior, noise_var)
    hard = (soft == soft.max(axis=1, keepdims=True)).astype(float)  # (N, E), one-hot rows
    weighted_xt = x.T[None] * hard.T[:, None, :]
    new_weights = np.linalg.solve(weighted_xt @ x, (weighted_xt @ y)[..., None])[..., 0]
    return new_weights, hard.mean(axis=0), hard


@shortcut("ex01_jacobs", "competitive_loss", "calls the library's competitive_loss")
def library_competitive_loss(gate_logits, expert_outputs, targets):
    return jacobs.competitive_loss(gate_logits, expert_outputs, targets)


@shortcut("ex01_jacobs", "gate_posterior", "calls the library's posterior")
def library_posterior(gate_logits, expert_outputs, targets):
    as_tensor = [mm.tensor(a, dtype=np.float64) for a in (gate_logits, expert_outputs, targets)]
    return jacobs.posterior(*as_tensor).numpy()


@shortcut("ex01_jacobs", "em_step", "writes the E-step, then calls the library's fit_linear_experts for the M-step")
def library_weighted_least_squares(x, y, weights, prior, noise_var=1.0):
    _, new_prior, h = ex01_jacobs.em_step(x, y, weights, prior, noise_var)
    new_weights, _ = hme.fit_linear_experts(x, y, h)
    return new_weights.T, new_prior, h


@wrong("ex01_jacobs", "hme_posteriors", "h_nested normalised over every leaf (it is h_leaf), not within its branch")
def nested_over_all_leaves(top_logits, nested_logits, log_likelihoods):
    h_top, _, h_leaf = ex01_jacobs.hme_posteriors(top_logits, nested_logits, log_likelihoods)
    return h_top, h_leaf, h_leaf


@wrong("ex01_jacobs", "hme_posteriors", "branch evidence from the raw nested logits, without log_softmax: "
       "each branch's own constant then shifts h_top")
def evidence_from_raw_logits(top_logits, nested_logits, log_likelihoods):
    joint = nested_logits + log_likelihoods  # (N, I, J)
    m = joint.max(axis=(1, 2), keepdims=True)
    evidence = m[..., 0] + np.log(np.exp(joint - m).sum(axis=2))
    h_top = ex01_jacobs.softmax(ex01_jacobs.log_softmax(top_logits) + evidence, axis=1)
    h_nested = ex01_jacobs.softmax(joint, axis=2)
    return h_top, h_nested, h_top[:, :, None] * h_nested


@wrong("ex01_jacobs", "hme_posteriors", "h_nested = h_leaf / h_top: 0 / 0 where the top gate rules a branch out")
def nested_by_division(top_logits, nested_logits, log_likelihoods):
    h_top, _, h_leaf = ex01_jacobs.hme_posteriors(top_logits, nested_logits, log_likelihoods)
    with np.errstate(invalid="ignore", divide="ignore"):
        return h_top, h_leaf / h_top[:, :, None], h_leaf


@wrong("ex01_jacobs", "hme_posteriors", "prior times likelihood with exp, then normalised: 0 / 0 when every "
       "log-likelihood is near -1000")
def posteriors_without_logs(top_logits, nested_logits, log_likelihoods):
    g_top, g_nested = ex01_jacobs.softmax(top_logits, axis=1), ex01_jacobs.softmax(nested_logits, axis=2)
    joint = g_top[:, :, None] * g_nested * np.exp(log_likelihoods)
    with np.errstate(invalid="ignore", divide="ignore"):
        leaf = joint / joint.sum(axis=(1, 2), keepdims=True)
        nested = g_nested * np.exp(log_likelihoods) / (g_nested * np.exp(log_likelihoods)).sum(axis=2, keepdims=True)
    return leaf.sum(axis=2), nested, leaf


@shortcut("ex01_jacobs", "hme_posteriors", "calls the library's posteriors")
def library_tree_posteriors(top_logits, nested_logits, log_likelihoods):
    h = hme.posteriors(top_logits, nested_logits, log_likelihoods)
    return h.top, h.nested, h.leaf


@wrong("ex01_jacobs", "hme_em_step", "fits branch i's gate to h_{j|i} alone, forgetting to weight each case by h_i")
def nested_gates_unweighted(x, y, top_gate, nested_gates, experts, variances, fit_gate, min_variance=1e-6):
    new_top, _, new_experts, new_variances = ex01_jacobs.hme_em_step(x, y, top_gate, nested_gates, experts,
                                                                     variances, fit_gate, min_variance)
    means = np.einsum("nd,dij->nij", x, experts)
    log_lik = -0.5 * (np.log(2 * np.pi * variances) + (y[:, None, None] - means) ** 2 / variances)
    _, h_nested, _ = ex01_jacobs.hme_posteriors(x @ top_gate, np.einsum("nd,dij->nij", x, nested_gates), log_lik)
    nested = np.stack([fit_gate(x, h_nested[:, i], nested_gates[:, i]) for i in range(experts.shape[1])], axis=1)
    return new_top, nested, new_experts, new_variances


@wrong("ex01_jacobs", "hme_em_step", "the new variances from the residuals of the old expert weights")
def variances_from_old_weights(x, y, top_gate, nested_gates, experts, variances, fit_gate, min_variance=1e-6):
    new_top, new_nested, new_experts, _ = ex01_jacobs.hme_em_step(x, y, top_gate, nested_gates, experts,
                                                                  variances, fit_gate, min_variance)
    means = np.einsum("nd,dij->nij", x, experts)
    log_lik = -0.5 * (np.log(2 * np.pi * variances) + (y[:, None, None] - means) ** 2 / variances)
    _, _, h_leaf = ex01_jacobs.hme_posteriors(x @ top_gate, np.einsum("nd,dij->nij", x, nested_gates), log_lik)
    old = (h_leaf * (y[:, None, None] - means) ** 2).sum(axis=0) / h_leaf.sum(axis=0)
    return new_top, new_nested, new_experts, np.maximum(old, min_variance)


@wrong("ex01_jacobs", "hme_em_step", "no variance floor: an expert that fits its cases exactly gets variance 0")
def no_variance_floor(x, y, top_gate, nested_gates, experts, variances, fit_gate, min_variance=1e-6):
    return ex01_jacobs.hme_em_step(x, y, top_gate, nested_gates, experts, variances, fit_gate, min_variance=0.0)


@wrong("ex01_jacobs", "hme_em_step", "the E-step with unit variances: the experts' noise levels ignored")
def e_step_with_unit_variances(x, y, top_gate, nested_gates, experts, variances, fit_gate, min_variance=1e-6):
    return ex01_jacobs.hme_em_step(x, y, top_gate, nested_gates, experts, np.ones_like(variances), fit_gate,
                                   min_variance)


@shortcut("ex01_jacobs", "hme_em_step", "writes the E-step, then calls the library's fit_linear_experts")
def library_tree_experts(x, y, top_gate, nested_gates, experts, variances, fit_gate, min_variance=1e-6):
    new_top, new_nested, _, _ = ex01_jacobs.hme_em_step(x, y, top_gate, nested_gates, experts, variances,
                                                        fit_gate, min_variance)
    means = np.einsum("nd,dij->nij", x, experts)
    log_lik = -0.5 * (np.log(2 * np.pi * variances) + (y[:, None, None] - means) ** 2 / variances)
    _, _, h_leaf = ex01_jacobs.hme_posteriors(x @ top_gate, np.einsum("nd,dij->nij", x, nested_gates), log_lik)
    weights, new_variances = hme.fit_linear_experts(x, y, h_leaf.reshape(len(x), -1), min_variance)
    return new_top, new_nested, weights.reshape(experts.shape), new_variances.reshape(variances.shape)


# ---- ex02: sparse gating --------------------------------------------------------------------------

def _top_k_mask(values, k):
    mask = np.zeros(values.shape)
    np.put_along_axis(mask, np.argsort(-values, axis=-1, kind="stable")[:, :k], 1.0, axis=-1)
    return mask


@wrong("ex02_sparse_gating", "topk_gating", "keeps the top-k softmax values without renormalising them")
def no_renormalisation(logits, k):
    probs = F.softmax(logits)
    indices = np.argsort(-probs.data, axis=-1, kind="stable")[:, :k]
    return probs * _top_k_mask(probs.data, k).astype(probs.dtype), indices


@wrong("ex02_sparse_gating", "topk_gating", "computes the gates in NumPy and wraps them: the graph is cut, no gradient")
def leaves_the_graph(logits, k):
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError("k must be between 1 and the number of experts")
    probs = np.exp(logits.data - logits.data.max(axis=-1, keepdims=True))
    kept = probs * _top_k_mask(probs, k)
    indices = np.argsort(-probs, axis=-1, kind="stable")[:, :k]
    return mm.Tensor(kept / kept.sum(axis=-1, keepdims=True)), indices


@wrong("ex02_sparse_gating", "noisy_topk_gating", "adds the noise unscaled (forgets softplus(x W_noise))")
def noise_not_scaled(x, w_gate, w_noise, noise, k):
    noisy = x @ w_gate + noise
    kept = np.where(_top_k_mask(noisy, k) > 0, noisy, -np.inf)
    e = np.exp(kept - kept.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@wrong("ex02_sparse_gating", "noisy_topk_gating", "softmax over all experts, then zeroes all but the top k")
def softmax_before_keep_top_k(x, w_gate, w_noise, noise, k):
    noisy = x @ w_gate + noise * np.logaddexp(0.0, x @ w_noise)
    return ex01_jacobs.softmax(noisy) * _top_k_mask(noisy, k)


def _cv_squared(values):
    return values.var() / values.mean() ** 2


@wrong("ex02_sparse_gating", "importance_loss", "the unbiased variance (divides by E - 1)")
def unbiased_variance(gates):
    importance = gates.sum(axis=0)
    mean = importance.mean()
    return ((importance - mean) ** 2).sum() * (1.0 / (importance.shape[0] - 1)) / (mean * mean)


@wrong("ex02_sparse_gating", "importance_loss", "the coefficient of variation, not its square")
def cv_not_squared(gates):
    importance = gates.sum(axis=0)
    mean = importance.mean()
    return ((importance - mean) ** 2).mean().sqrt() / mean


@wrong("ex02_sparse_gating", "load_loss", "counts how often each expert is in the noisy top k: no gradient would flow")
def hard_counts(clean_logits, noisy_logits, noise_std, k):
    load = _top_k_mask(noisy_logits, k).sum(axis=0)
    return float(_cv_squared(load)), load


@wrong("ex02_sparse_gating", "load_loss", "thresholds every expert at the k-th largest of H, itself included")
def threshold_including_self(clean_logits, noisy_logits, noise_std, k):
    kth = -np.sort(-noisy_logits, axis=-1)[:, k - 1:k]
    z = (clean_logits - kth) / noise_std
    load = (0.5 * (1.0 + np.vectorize(math.erf)(z / math.sqrt(2.0)))).sum(axis=0)
    return float(_cv_squared(load)), load


# ---- ex03: Switch and GShard ----------------------------------------------------------------------

@wrong("ex03_switch_gshard", "expert_capacity", "rounds down (int): a balanced batch with T/E = 2.5 loses tokens")
def rounded_down(n_tokens, n_experts, k, capacity_factor):
    if not capacity_factor > 0:
        raise ValueError("capacity_factor must be positive")
    return int(k * n_tokens / n_experts * capacity_factor)


@wrong("ex03_switch_gshard", "expert_capacity", "forgets k: top-2 routing gets the slots of top-1")
def without_k(n_tokens, n_experts, k, capacity_factor):
    if not capacity_factor > 0:
        raise ValueError("capacity_factor must be positive")
    return math.ceil(n_tokens / n_experts * capacity_factor)


@wrong("ex03_switch_gshard", "expert_capacity", "accepts a capacity factor of 0 or below")
def no_factor_check(n_tokens, n_experts, k, capacity_factor):
    return math.ceil(k * n_tokens / n_experts * capacity_factor)


def _slots(order, n_experts):
    one_hot = order[:, None] == np.arange(n_experts)
    return np.cumsum(one_hot, axis=0)[np.arange(len(order)), order] - 1


@wrong("ex03_switch_gshard", "dispatch_with_capacity",
       "token-major order: a token's second choice before the next token's first")
def token_major_order(expert_index, n_experts, capacity):
    slot = _slots(expert_index.reshape(-1), n_experts)
    return np.where(slot < capacity, slot, -1).reshape(expert_index.shape)


@wrong("ex03_switch_gshard", "dispatch_with_capacity", "off by one: keeps slot number `capacity` too")
def keeps_one_too_many(expert_index, n_experts, capacity):
    n_tokens, k = expert_index.shape
    slot = _slots(expert_index.T.reshape(-1), n_experts)
    return np.where(slot <= capacity, slot, -1).reshape(k, n_tokens).T


def _fraction_routed(router_probs):
    n_tokens, n_experts = router_probs.shape
    counts = np.bincount(np.argmax(router_probs.data, axis=-1), minlength=n_experts)
    return (counts / n_tokens).astype(router_probs.dtype)


@wrong("ex03_switch_gshard", "switch_loss", "forgets the factor N: the uniform value becomes alpha / N")
def no_factor_n(router_probs, alpha=0.01):
    return (router_probs.mean(axis=0) * _fraction_routed(router_probs)).sum() * alpha


@wrong("ex03_switch_gshard", "switch_loss", "uses P for f as well (alpha N sum P^2): smooth, but not the Switch loss")
def probabilities_for_f(router_probs, alpha=0.01):
    mean_prob = router_probs.mean(axis=0)
    return (mean_prob * mean_prob).sum() * (alpha * router_probs.shape[1])


@wrong("ex03_switch_gshard", "sort_by_expert", "np.bincount without minlength: an unused last expert has no group")
def no_minlength(expert_index, n_experts):
    flat = expert_index.reshape(-1)
    return np.argsort(flat, kind="stable"), np.bincount(flat)


@wrong("ex03_switch_gshard", "sort_by_expert", "sorts within each token's row instead of over all assignments")
def sorts_each_row(expert_index, n_experts):
    k = expert_index.shape[1]
    order = (np.argsort(expert_index, axis=1, kind="stable") + k * np.arange(len(expert_index))[:, None]).reshape(-1)
    return order, np.bincount(expert_index.reshape(-1), minlength=n_experts)


@wrong("ex03_switch_gshard", "combine_sorted", "applies the permutation again instead of inverting it")
def permutes_instead_of_inverting(sorted_outputs, order, gates):
    n_tokens, k = gates.shape
    return (sorted_outputs[order].reshape(n_tokens, k, -1) * gates[:, :, None]).sum(axis=1)


@wrong("ex03_switch_gshard", "combine_sorted", "unsorts correctly but forgets the gates")
def forgets_the_gates(sorted_outputs, order, gates):
    outputs = np.empty_like(sorted_outputs)
    outputs[order] = sorted_outputs
    return outputs.reshape(gates.shape[0], gates.shape[1], -1).sum(axis=1)


def _top2_gates(probs, stable=True):
    index = (np.argsort(-probs, axis=-1, kind="stable") if stable else np.argsort(probs, axis=-1)[:, ::-1])[:, :2]
    top2 = np.take_along_axis(probs, index, axis=-1)
    return index, top2 / top2.sum(axis=-1, keepdims=True), top2


@wrong("ex03_switch_gshard", "gshard_random_routing", "keeps the second expert with probability g2, not min(1, 2 g2)")
def keeps_with_probability_g2(probs, uniform):
    index, gates, _ = _top2_gates(probs)
    return index, gates, gates[:, 1] > uniform


@wrong("ex03_switch_gshard", "gshard_random_routing", "tests the raw probability p2 instead of the renormalised g2")
def tests_raw_p2(probs, uniform):
    index, gates, top2 = _top2_gates(probs)
    return index, gates, 2 * top2[:, 1] > uniform


@wrong("ex03_switch_gshard", "gshard_random_routing", "2 g2 >= u: keeps a second expert of gate 0 when u = 0")
def inclusive_comparison(probs, uniform):
    index, gates, _ = _top2_gates(probs)
    return index, gates, 2 * gates[:, 1] >= uniform


@wrong("ex03_switch_gshard", "gshard_random_routing", "mesh-TensorFlow's rule u < g2 / 0.2, not the paper's 2 g2 > u")
def mesh_threshold_rule(probs, uniform):
    index, gates, _ = _top2_gates(probs)
    return index, gates, uniform < gates[:, 1] / 0.2


@wrong("ex03_switch_gshard", "gshard_random_routing", "reverses an ascending sort: ties go to the higher index")
def ties_to_the_higher_index(probs, uniform):
    index, gates, _ = _top2_gates(probs, stable=False)
    return index, gates, 2 * gates[:, 1] > uniform


def _first_choice_fractions(router_probs):
    first = np.argmax(router_probs.data, axis=-1)
    return (first[..., None] == np.arange(router_probs.shape[-1])).mean(axis=-2).astype(router_probs.dtype)


@wrong("ex03_switch_gshard", "gshard_aux_loss", "multiplies by E^2 as the reference code does: uniform gives 1")
def times_e_squared(router_probs):
    n_experts = router_probs.shape[-1]
    return (router_probs.mean(axis=1) * _first_choice_fractions(router_probs)).mean() * float(n_experts**2)


@wrong("ex03_switch_gshard", "gshard_aux_loss", "pools the groups: c and m over all G*S tokens at once")
def pools_the_groups(router_probs):
    flat = router_probs.reshape(-1, router_probs.shape[-1])
    return (flat.mean(axis=0) * _first_choice_fractions(flat)).mean()


@wrong("ex03_switch_gshard", "gshard_aux_loss", "counts both top-2 choices (over 2S), not the first choice only")
def counts_both_choices(router_probs):
    n_experts = router_probs.shape[-1]
    top2 = np.argsort(-router_probs.data, axis=-1, kind="stable")[..., :2]
    fraction = (top2[..., None] == np.arange(n_experts)).mean(axis=(-3, -2)).astype(router_probs.dtype)
    return (router_probs.mean(axis=1) * fraction).mean()


@shortcut("ex03_switch_gshard", "gshard_aux_loss", "calls the library's gshard_balance_loss on each group")
def library_gshard_loss(router_probs):
    n_groups, _, n_experts = router_probs.shape
    total = None
    for g in range(n_groups):
        group = router_probs[g]
        value = losses.gshard_balance_loss(group, np.argmax(group.data, axis=-1)[:, None], n_experts)
        total = value if total is None else total + value
    return total * (1.0 / n_groups)


# ---- ex04: the Transformer ------------------------------------------------------------------------

@wrong("ex04_transformer", "causal_mask", "the upper triangle: every query sees the future")
def upper_triangle(n_tokens):
    return np.triu(np.ones((n_tokens, n_tokens), dtype=bool))


@wrong("ex04_transformer", "causal_mask", "strictly lower: a token cannot see itself, and token 0 sees nothing")
def excludes_itself(n_tokens):
    return np.tril(np.ones((n_tokens, n_tokens), dtype=bool), k=-1)


@wrong("ex04_transformer", "masked_softmax", "multiplies scores by the mask: masked positions score 0, keep weight")
def multiplies_by_mask(scores, mask):
    return ex01_jacobs.softmax(scores * mask)


@wrong("ex04_transformer", "masked_softmax", "fills with -inf and takes a softmax: a row with nothing allowed is NaN")
def minus_inf_fill(scores, mask):
    return ex01_jacobs.softmax(np.where(mask, scores, -np.inf))


@wrong("ex04_transformer", "causal_attention", "forgets to divide the scores by sqrt(d_head)")
def unscaled_scores(q, k, v):
    n = q.shape[0]
    weights = ex01_jacobs.softmax(np.where(np.tril(np.ones((n, n), dtype=bool)), q @ k.T, -np.inf))
    return weights @ v


@wrong("ex04_transformer", "causal_attention", "forgets the mask: every token attends to the future too")
def no_mask(q, k, v):
    return ex01_jacobs.softmax(q @ k.T / math.sqrt(q.shape[-1])) @ v


# ---- ex05: stability ------------------------------------------------------------------------------

@wrong("ex05_stability", "z_loss", "forgets the square: mean of log-partitions")
def no_square(logits):
    return F.logsumexp(logits, axis=-1).mean()


@wrong("ex05_stability", "z_loss", "log(sum(exp)) without the max shift: overflows at logits of 1000")
def unstable_logsumexp(logits):
    log_partition = F.log(F.exp(logits).sum(axis=-1))
    return (log_partition * log_partition).mean()


@wrong("ex05_stability", "z_loss", "sums over tokens instead of averaging")
def sum_over_tokens(logits):
    log_partition = F.logsumexp(logits, axis=-1)
    return (log_partition * log_partition).sum()


@wrong("ex05_stability", "round_to_bfloat16", "truncates (clears the low 16 bits) instead of rounding")
def truncates(x):
    return (np.asarray(x, dtype=np.float32).view(np.uint32) & np.uint32(0xFFFF0000)).view(np.float32)


@wrong("ex05_stability", "round_to_bfloat16", "rounds halfway cases up instead of to even")
def ties_away(x):
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x8000)) & np.uint32(0xFFFF0000)).view(np.float32)


def _global_norm(grads):
    return math.sqrt(sum(float(np.square(g, dtype=np.float64).sum()) for g in grads))


@wrong("ex05_stability", "clip_grad_norm", "clips each array by its own norm instead of one global norm")
def per_tensor_clipping(grads, max_norm):
    if not max_norm > 0:
        raise ValueError("max_norm must be positive")
    clipped = [g * (max_norm / (np.linalg.norm(g) + 1e-6)) if np.linalg.norm(g) > max_norm else g.copy() for g in grads]
    return clipped, _global_norm(grads)


@wrong("ex05_stability", "clip_grad_norm", "returns the norm after clipping, not before")
def norm_after_clipping(grads, max_norm):
    clipped, _ = ex05_stability.clip_grad_norm(grads, max_norm)
    return clipped, _global_norm(clipped)


@wrong("ex05_stability", "clip_grad_norm", "scales the caller's arrays in place (g *= scale)")
def clips_in_place(grads, max_norm):
    clipped, norm = ex05_stability.clip_grad_norm(grads, max_norm)
    for g, c in zip(grads, clipped):
        g[...] = c
    return grads, norm


@wrong("ex05_stability", "clip_grad_norm", "a NumPy float64 factor: float32 and float16 gradients come back float64")
def float64_factor(grads, max_norm):
    clipped, norm = ex05_stability.clip_grad_norm(grads, max_norm)
    scale = np.float64(max_norm) / (norm + 1e-6) if math.isfinite(norm) and norm > max_norm else np.float64(1.0)
    return [np.asarray(g) * scale for g in grads], norm


@wrong("ex05_stability", "clip_grad_norm", "rescales to max_norm always, so small gradients are scaled up")
def always_rescales(grads, max_norm):
    norm = _global_norm(grads)
    if not max_norm > 0:
        raise ValueError("max_norm must be positive")
    with np.errstate(invalid="ignore"):
        return [g * (max_norm / (norm + 1e-6)) for g in grads], norm


@wrong("ex05_stability", "clip_grad_norm", "scales a non-finite norm too: max_norm / inf = 0 turns inf into NaN")
def scales_non_finite(grads, max_norm):
    norm = _global_norm(grads)
    if not max_norm > 0:
        raise ValueError("max_norm must be positive")
    with np.errstate(invalid="ignore"):
        return [g * (max_norm / (norm + 1e-6)) if norm > max_norm else g.copy() for g in grads], norm


def _checked_schedule(step, total_steps, peak_lr, warmup_steps, min_lr):
    """Raises where the reference does; the wrong schedules below differ only in the formula."""
    ex05_stability.warmup_cosine_lr(step, total_steps, peak_lr, warmup_steps, min_lr)
    return np.asarray(step)


@wrong("ex05_stability", "warmup_cosine_lr", "warm-up as step / warmup_steps: the first update gets a rate of 0")
def warmup_from_zero(step, total_steps, peak_lr, warmup_steps, min_lr):
    step = _checked_schedule(step, total_steps, peak_lr, warmup_steps, min_lr)
    rate = ex05_stability.warmup_cosine_lr(step, total_steps, peak_lr, warmup_steps, min_lr)
    return np.where(step < warmup_steps, peak_lr * step / max(warmup_steps, 1), rate)


@wrong("ex05_stability", "warmup_cosine_lr", "step <= warmup_steps in the warm-up: above the peak at step warmup_steps")
def warmup_one_step_too_long(step, total_steps, peak_lr, warmup_steps, min_lr):
    step = _checked_schedule(step, total_steps, peak_lr, warmup_steps, min_lr)
    rate = ex05_stability.warmup_cosine_lr(step, total_steps, peak_lr, warmup_steps, min_lr)
    return np.where(step <= warmup_steps, peak_lr * (step + 1) / max(warmup_steps, 1), rate)


@wrong("ex05_stability", "warmup_cosine_lr", "cosine progress step / total_steps, not counted from the warm-up's end")
def progress_from_step_zero(step, total_steps, peak_lr, warmup_steps, min_lr):
    step = _checked_schedule(step, total_steps, peak_lr, warmup_steps, min_lr)
    progress = np.minimum(1.0, step / total_steps)
    cosine = min_lr + (peak_lr - min_lr) * 0.5 * (1 + np.cos(np.pi * progress))
    return np.where(step < warmup_steps, peak_lr * (step + 1) / max(warmup_steps, 1), cosine)


@wrong("ex05_stability", "warmup_cosine_lr", "no clamp after total_steps: the cosine climbs back up")
def cosine_not_clamped(step, total_steps, peak_lr, warmup_steps, min_lr):
    step = _checked_schedule(step, total_steps, peak_lr, warmup_steps, min_lr)
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    cosine = min_lr + (peak_lr - min_lr) * 0.5 * (1 + np.cos(np.pi * progress))
    return np.where(step < warmup_steps, peak_lr * (step + 1) / max(warmup_steps, 1), cosine)


@wrong("ex05_stability", "warmup_cosine_lr", "decays to 0 and ignores min_lr")
def decays_to_zero(step, total_steps, peak_lr, warmup_steps, min_lr):
    step = _checked_schedule(step, total_steps, peak_lr, warmup_steps, min_lr)
    return ex05_stability.warmup_cosine_lr(step, total_steps, peak_lr, warmup_steps, 0.0)


@wrong("ex05_stability", "warmup_cosine_lr", "an if on the step: works for an int, fails on an array of steps")
def scalar_if(step, total_steps, peak_lr, warmup_steps, min_lr):
    if step < warmup_steps:
        return np.float64(peak_lr * (step + 1) / warmup_steps)
    return ex05_stability.warmup_cosine_lr(step, total_steps, peak_lr, warmup_steps, min_lr)


# ---- ex06: the routing zoo ------------------------------------------------------------------------

@wrong("ex06_routing_zoo", "expert_choice", "tokens choose experts: the top-C experts of each token")
def tokens_choose(router_probs, capacity):
    index = np.argsort(-router_probs, axis=-1, kind="stable")[:, :capacity]
    return index, np.take_along_axis(router_probs, index, axis=-1)


@wrong("ex06_routing_zoo", "expert_choice", "sorts ascending: each expert takes its C *least* likely tokens")
def lowest_scores(router_probs, capacity):
    if capacity > router_probs.shape[0]:
        raise ValueError("capacity larger than the number of tokens")
    index = np.argsort(router_probs.T, axis=-1, kind="stable")[:, :capacity]
    return index, np.take_along_axis(router_probs.T, index, axis=-1)


@wrong("ex06_routing_zoo", "hash_routing", "np.bincount without minlength, and no check of the ids")
def bincount_without_minlength(token_ids, table, n_experts):
    expert_index = table[token_ids]
    return expert_index, np.bincount(expert_index)


@wrong("ex06_routing_zoo", "hash_routing", "hashes the position in the batch, not the token id")
def hashes_positions(token_ids, table, n_experts):
    if np.any((token_ids < 0) | (token_ids >= len(table))):
        raise ValueError("token id outside the table")
    expert_index = table[np.arange(len(token_ids)) % len(table)]
    return expert_index, np.bincount(expert_index, minlength=n_experts)


def _stable_softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


@wrong("ex06_routing_zoo", "soft_moe_weights", "swaps the axes: dispatch normalised over slots, combine over tokens")
def swapped_axes(x, slot_params):
    logits = x @ slot_params
    return _stable_softmax(logits, axis=1), _stable_softmax(logits, axis=0)


@wrong("ex06_routing_zoo", "soft_moe_weights", "one softmax (over slots) used for both dispatch and combine")
def one_softmax_for_both(x, slot_params):
    weights = _stable_softmax(x @ slot_params, axis=1)
    return weights, weights


# ---- ex07: DeepSeek -------------------------------------------------------------------------------

@wrong("ex07_deepseek", "segment_experts", "reshapes w_in straight to (E*m, d, h/m), mixing rows of d into the split")
def naive_reshape(w_in, w_out, m):
    n_experts, d, hidden = w_in.shape
    if hidden % m:
        raise ValueError("m must divide the hidden size")
    return w_in.reshape(n_experts * m, d, hidden // m), w_out.reshape(n_experts * m, hidden // m, d)


@wrong("ex07_deepseek", "moe_with_shared_experts", "averages the shared experts instead of adding them")
def averages_shared(x, gates, routed_weights, shared_weights):
    routed = np.einsum("te,td,edf->tf", gates, x, routed_weights)
    return routed + np.einsum("td,sdf->tf", x, shared_weights) / len(shared_weights)


@wrong("ex07_deepseek", "moe_with_shared_experts", "adds the residual x as well (the block does that)")
def adds_residual(x, gates, routed_weights, shared_weights):
    return x + np.einsum("te,td,edf->tf", gates, x, routed_weights) + np.einsum("td,sdf->tf", x, shared_weights)


def _sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * x))


@wrong("ex07_deepseek", "deepseek_v3_gate", "takes the gate values from s + b: the bias leaks into the weights")
def biased_gate_values(logits, bias, k, scaling=1.0):
    biased = _sigmoid(logits) + bias
    index = np.argsort(-biased, axis=-1, kind="stable")[:, :k]
    chosen = np.take_along_axis(biased, index, axis=-1)
    return index, chosen / chosen.sum(axis=-1, keepdims=True) * scaling


@wrong("ex07_deepseek", "deepseek_v3_gate", "does not normalise the chosen sigmoid scores")
def not_normalised(logits, bias, k, scaling=1.0):
    scores = _sigmoid(logits)
    index = np.argsort(-(scores + bias), axis=-1, kind="stable")[:, :k]
    return index, np.take_along_axis(scores, index, axis=-1) * scaling


@wrong("ex07_deepseek", "deepseek_v3_gate", "softmax affinities (DeepSeek-V2) instead of sigmoid")
def softmax_affinity(logits, bias, k, scaling=1.0):
    scores = ex01_jacobs.softmax(logits)
    index = np.argsort(-(scores + bias), axis=-1, kind="stable")[:, :k]
    chosen = np.take_along_axis(scores, index, axis=-1)
    return index, chosen / chosen.sum(axis=-1, keepdims=True) * scaling


@wrong("ex07_deepseek", "update_expert_bias", "the sign flipped: overloaded experts get *more* attractive")
def sign_flipped(bias, load, rate):
    return bias + rate * np.sign(load - load.mean())


@wrong("ex07_deepseek", "update_expert_bias", "a step proportional to the imbalance instead of its sign")
def proportional_step(bias, load, rate):
    return bias + rate * (load.mean() - load)


def _sequence_counts(topk_idx, n_experts):
    return (topk_idx[..., None] == np.arange(n_experts)).sum(axis=(1, 2))  # (B, E)


@wrong("ex07_deepseek", "sequence_balance_loss", "f and P over the whole batch: the batch-wise loss, not per sequence")
def batch_wise(scores, topk_idx, n_experts, k, alpha):
    n_seq, length, _ = scores.shape
    return ex07_deepseek.sequence_balance_loss(scores.reshape(1, n_seq * length, n_experts),
                                               topk_idx.reshape(1, n_seq * length, k), n_experts, k, alpha)


@wrong("ex07_deepseek", "sequence_balance_loss", "P from the raw sigmoid scores s, not s' = s / sum_j s")
def unnormalised_affinities(scores, topk_idx, n_experts, k, alpha):
    f = _sequence_counts(topk_idx, n_experts) * n_experts / (k * scores.shape[1])
    return float(alpha * (f * scores.mean(axis=1)).sum(axis=1).mean())


@wrong("ex07_deepseek", "sequence_balance_loss", "f = count / (k T) without the factor N_r: uniform routing gives alpha / E")
def no_factor_n_r(scores, topk_idx, n_experts, k, alpha):
    f = _sequence_counts(topk_idx, n_experts) / (k * scores.shape[1])
    p = (scores / scores.sum(axis=-1, keepdims=True)).mean(axis=1)
    return float(alpha * (f * p).sum(axis=1).mean())


@shortcut("ex07_deepseek", "sequence_balance_loss", "calls the library's deepseek_sequence_loss")
def library_sequence_loss(scores, topk_idx, n_experts, k, alpha):
    probs = mm.tensor(scores / scores.sum(axis=-1, keepdims=True), dtype=np.float64)
    return alpha * losses.deepseek_sequence_loss(probs, np.asarray(topk_idx), n_experts, k).item()


def _limited_topk(scores, group_score, topk_groups, k, fill=-np.inf):
    """Top-k among the experts of the `topk_groups` best groups by `group_score` (T, G)."""
    n_tokens, n_groups = group_score.shape
    best = np.argsort(-group_score, axis=-1, kind="stable")[:, :topk_groups]
    allowed = np.zeros((n_tokens, n_groups), dtype=bool)
    np.put_along_axis(allowed, best, True, axis=1)
    masked = np.where(np.repeat(allowed, scores.shape[1] // n_groups, axis=1), scores, fill)
    return np.argsort(-masked, axis=-1, kind="stable")[:, :k]


@wrong("ex07_deepseek", "group_limited_topk", "scores each group by its best expert (the max), not the best two")
def group_by_max(scores, n_groups, topk_groups, k):
    grouped = scores.reshape(len(scores), n_groups, -1)
    return _limited_topk(scores, grouped.max(axis=-1), topk_groups, k)


@wrong("ex07_deepseek", "group_limited_topk", "scores each group by the sum of all its experts")
def group_by_sum(scores, n_groups, topk_groups, k):
    grouped = scores.reshape(len(scores), n_groups, -1)
    return _limited_topk(scores, grouped.sum(axis=-1), topk_groups, k)


@wrong("ex07_deepseek", "group_limited_topk", "masks the other groups with 0: they win when s + b is negative")
def masks_with_zero(scores, n_groups, topk_groups, k):
    grouped = scores.reshape(len(scores), n_groups, -1)
    return _limited_topk(scores, np.sort(grouped, axis=-1)[..., -2:].sum(axis=-1), topk_groups, k, fill=0.0)


@wrong("ex07_deepseek", "group_limited_topk", "returns the chosen experts in index order, not by decreasing score")
def sorted_by_index(scores, n_groups, topk_groups, k):
    return np.sort(ex07_deepseek.group_limited_topk(scores, n_groups, topk_groups, k), axis=-1)


@shortcut("ex07_deepseek", "group_limited_topk", "masks the groups with the library's DeepSeekV3Router")
def library_group_mask(scores, n_groups, topk_groups, k):
    from minimoe.moe.routers import DeepSeekV3Router

    router = DeepSeekV3Router(1, scores.shape[1], k, n_groups=n_groups, topk_groups=topk_groups)
    return np.argsort(-router._mask_groups(scores), axis=-1, kind="stable")[:, :k]


# ---- ex08: specialisation -------------------------------------------------------------------------

@wrong("ex08_specialisation", "domain_expert_counts", "counts[d, e] += 1 (fancy indexing): repeats count once")
def fancy_index_increment(domains, expert_index, n_domains, n_experts):
    rows = np.broadcast_to(domains[:, None], expert_index.shape)
    kept = expert_index >= 0
    counts = np.zeros((n_domains, n_experts), dtype=np.int64)
    counts[rows[kept], expert_index[kept]] += 1
    return counts


@wrong("ex08_specialisation", "domain_expert_counts", "counts only each token's first choice")
def first_choice_only(domains, expert_index, n_domains, n_experts):
    counts = np.zeros((n_domains, n_experts), dtype=np.int64)
    kept = expert_index[:, 0] >= 0
    np.add.at(counts, (domains[kept], expert_index[kept, 0]), 1)
    return counts


@wrong("ex08_specialisation", "mutual_information", "in bits (log2) instead of nats")
def in_bits(counts):
    joint = counts / counts.sum()
    independent = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    nonzero = joint > 0
    return float((joint[nonzero] * np.log2(joint[nonzero] / independent[nonzero])).sum())


@wrong("ex08_specialisation", "mutual_information", "sums over every cell: 0 * log 0 gives NaN")
def nan_on_empty_cells(counts):
    joint = counts / counts.sum()
    independent = joint.sum(axis=1, keepdims=True) * joint.sum(axis=0, keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        return float((joint * np.log(joint / independent)).sum())


@wrong("ex08_specialisation", "mutual_information", "the entropy of expert use H(E), not I(D; E)")
def expert_entropy(counts):
    p = counts.sum(axis=0) / counts.sum()
    p = p[p > 0]
    return float(-(p * np.log(p)).sum())


def _neighbour_sets(ids):
    """(now, after) of a learner-style rate: every token's experts as a set, broadcast for pairs."""
    ids = np.asarray(ids)
    ids = ids[:, :, None] if ids.ndim == 2 else ids
    return ids[:, :-1, :, None], ids[:, 1:, None, :]


@wrong("ex08_specialisation", "consecutive_same_expert_rate", "flattens the rows: counts the pair (last token of "
       "one sequence, first of the next)")
def counts_across_rows(expert_ids):
    ids = np.asarray(expert_ids)
    if ids.shape[0] == 0 or ids.shape[1] < 2:
        raise ValueError("no consecutive pairs")
    return ex08_specialisation.consecutive_same_expert_rate(ids.reshape((1, -1) + ids.shape[2:]))


@wrong("ex08_specialisation", "consecutive_same_expert_rate", "divides the repeats by B * T tokens, not the "
       "B * (T - 1) pairs")
def divides_by_tokens(expert_ids):
    ids = np.asarray(expert_ids)
    if ids.shape[0] == 0 or ids.shape[1] < 2:
        raise ValueError("no consecutive pairs")
    rate = ex08_specialisation.consecutive_same_expert_rate(ids)
    return rate * (ids.shape[1] - 1) / ids.shape[1]


@wrong("ex08_specialisation", "consecutive_same_expert_rate", "counts -1 == -1 (two dropped assignments) as a repeat")
def dropped_ones_match(expert_ids):
    ids = np.asarray(expert_ids)
    if ids.shape[0] == 0 or ids.shape[1] < 2:
        raise ValueError("no consecutive pairs")
    now, after = _neighbour_sets(ids)
    return float((now == after).any(axis=(2, 3)).mean())


@wrong("ex08_specialisation", "consecutive_same_expert_rate", "compares the sets position by position (first with "
       "first, second with second)")
def same_slot_only(expert_ids):
    ids = np.asarray(expert_ids)
    if ids.shape[0] == 0 or ids.shape[1] < 2:
        raise ValueError("no consecutive pairs")
    ids = ids[:, :, None] if ids.ndim == 2 else ids
    return float(((ids[:, :-1] == ids[:, 1:]) & (ids[:, 1:] >= 0)).any(axis=2).mean())


@wrong("ex08_specialisation", "consecutive_same_expert_rate", "compares only the first choices of (B, T, k) ids")
def first_choices_of_sets(expert_ids):
    ids = np.asarray(expert_ids)
    return ex08_specialisation.consecutive_same_expert_rate(ids[:, :, 0] if ids.ndim == 3 else ids)


@wrong("ex08_specialisation", "consecutive_same_expert_rate", "integer division: repeats // pairs")
def integer_division(expert_ids):
    ids = np.asarray(expert_ids)
    if ids.shape[0] == 0 or ids.shape[1] < 2:
        raise ValueError("no consecutive pairs")
    now, after = _neighbour_sets(ids)
    shared = ((now == after) & (now >= 0)).any(axis=(2, 3))
    return int(shared.sum()) // shared.size


@wrong("ex08_specialisation", "consecutive_same_expert_rate", "no check for T = 1: the mean of no pairs (NaN)")
def nan_without_pairs(expert_ids):
    now, after = _neighbour_sets(expert_ids)
    shared = ((now == after) & (now >= 0)).any(axis=(2, 3))
    return float(shared.sum() / shared.size) if shared.size else float("nan")


@shortcut("ex08_specialisation", "consecutive_same_expert_rate", "calls minimoe.moe.locality's own rate")
def library_repeat_rate(expert_ids):
    from minimoe.moe.locality import consecutive_same_expert_rate

    return consecutive_same_expert_rate(expert_ids)


# ---- ex09: scale and systems ----------------------------------------------------------------------

@wrong("ex09_scale", "moe_param_count", "active parameters count every expert, as if the model were dense")
def active_counts_all_experts(shape):
    total, _ = ex09_scale.moe_param_count(shape)
    return total, total


@wrong("ex09_scale", "moe_param_count", "forgets the router (d x E per layer)")
def forgets_router(shape):
    total, active = ex09_scale.moe_param_count(shape)
    router = shape.n_layers * shape.d_model * shape.n_experts
    return total - router, active - router


@wrong("ex09_scale", "moe_param_count", "k and v with n_heads instead of n_kv_heads (ignores grouped-query attention)")
def ignores_kv_heads(shape):
    total, active = ex09_scale.moe_param_count(shape)
    extra = shape.n_layers * 2 * shape.d_model * (shape.n_heads - shape.n_kv_heads) * shape.head_dim
    return total + extra, active + extra


@wrong("ex09_scale", "moe_flops_per_token", "counts every expert's weights, not the top-k a token runs")
def all_experts_flops(shape, seq_len):
    extra = shape.n_layers * (shape.n_experts - shape.top_k) * 3 * shape.d_model * shape.expert_hidden
    return ex09_scale.moe_flops_per_token(shape, seq_len) + 2 * extra


@wrong("ex09_scale", "moe_flops_per_token", "leaves out attention's own work (scores and weighted values)")
def no_attention_scores(shape, seq_len):
    attention = shape.n_layers * 4 * seq_len * shape.n_heads * shape.head_dim
    return ex09_scale.moe_flops_per_token(shape, seq_len) - attention


@wrong("ex09_scale", "moe_flops_per_token", "1 FLOP per multiply-add instead of 2")
def one_flop_per_multiply_add(shape, seq_len):
    return ex09_scale.moe_flops_per_token(shape, seq_len) // 2


@wrong("ex09_scale", "all_to_all_send_counts", "places experts round-robin (expert % R), not in contiguous blocks")
def round_robin_placement(expert_index, n_experts, n_ranks):
    if n_experts % n_ranks:
        raise ValueError("n_experts must be divisible by n_ranks")
    return np.bincount(expert_index[expert_index >= 0] % n_ranks, minlength=n_ranks)


@wrong("ex09_scale", "all_to_all_send_counts", "sends a token once per rank even when two of its experts live there")
def one_row_per_token_and_rank(expert_index, n_experts, n_ranks):
    if n_experts % n_ranks:
        raise ValueError("n_experts must be divisible by n_ranks")
    ranks = np.where(expert_index >= 0, expert_index // (n_experts // n_ranks), -1)
    sends = np.zeros((len(ranks), n_ranks), dtype=bool)
    rows = np.broadcast_to(np.arange(len(ranks))[:, None], ranks.shape)
    sends[rows[ranks >= 0], ranks[ranks >= 0]] = True
    return sends.sum(axis=0)


@wrong("ex09_scale", "all_to_all_send_counts", "counts dropped assignments (-1) as sent")
def counts_dropped(expert_index, n_experts, n_ranks):
    if n_experts % n_ranks:
        raise ValueError("n_experts must be divisible by n_ranks")
    destination = np.clip(expert_index, 0, None) // (n_experts // n_ranks)
    return np.bincount(destination.reshape(-1), minlength=n_ranks)


# ---- more, one or more per class of miss: properties where they differ, edge values, fixed inputs,
# contracts, dtypes -------------------------------------------------------------------------------

@wrong("ex00_autograd", "unbroadcast", "recognises a new leading axis by its size: misses one sized like a kept axis")
def leading_axes_by_size(grad, shape):
    while grad.ndim > len(shape) and (not shape or grad.shape[0] != shape[0]):
        grad = grad.sum(axis=0)
    if grad.ndim != len(shape):
        return grad
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(axis=stretched, keepdims=True)


@wrong("ex00_autograd", "unbroadcast", "casts the result to float64: a float32 gradient must stay float32")
def casts_to_float64(grad, shape):
    return ex00_autograd.unbroadcast(grad, shape).astype(np.float64)


@wrong("ex00_autograd", "Tanh", "computes in float64 whatever the input dtype")
class float64_inside(mm.Function):  # noqa: N801
    def forward(self, x):
        self.y = np.tanh(np.asarray(x, dtype=np.float64))
        return self.y

    def backward(self, grad_output):
        return (grad_output * (1 - self.y**2),)


@wrong("ex00_autograd", "numerical_gradient", "hard-codes the derivative of the graded cubic, 3 x^2 + eps^2")
def fits_the_visible_case(f, x, eps=1e-6):
    return 3 * x**2 + eps**2


@wrong("ex00_autograd", "numerical_gradient", "nudges x[i] for i in range(len(x)): a whole row at a time")
def whole_rows(f, x, eps=1e-6):
    grad = np.zeros(x.shape)
    for i in range(len(x)):
        original = x[i].copy()
        x[i] = original + eps
        up = f(x)
        x[i] = original - eps
        down = f(x)
        x[i] = original
        grad[i] = (up - down) / (2 * eps)
    return grad


@wrong("ex01_jacobs", "softmax", "computes in float64: a float32 input must give float32")
def float64_softmax(x, axis=-1):
    return ex01_jacobs.softmax(np.asarray(x, dtype=np.float64), axis=axis)


@shortcut("ex01_jacobs", "softmax", "calls the engine's softmax")
def engine_softmax(x, axis=-1):
    return F.softmax(mm.tensor(x), axis=axis).numpy()


@shortcut("ex01_jacobs", "log_softmax", "calls the engine's log_softmax")
def engine_log_softmax(x, axis=-1):
    return F.log_softmax(mm.tensor(x), axis=axis).numpy()


@wrong("ex01_jacobs", "log_softmax", "computes in float64: a float32 input must give float32")
def float64_log_softmax(x, axis=-1):
    return ex01_jacobs.log_softmax(np.asarray(x, dtype=np.float64), axis=axis)


@wrong("ex01_jacobs", "competitive_loss", "forgets the 1/2: exp(-||d - o||^2) instead of exp(-||d - o||^2 / 2)")
def without_the_half(gate_logits, expert_outputs, targets):
    n, _, d = expert_outputs.shape
    error = expert_outputs - targets.reshape(n, 1, d)
    return -F.logsumexp(F.log_softmax(gate_logits, axis=-1) - (error * error).sum(axis=-1), axis=-1).mean()


@wrong("ex01_jacobs", "em_step", "forgets to update the prior: returns the old one")
def prior_not_updated(x, y, weights, prior, noise_var=1.0):
    new_weights, _, h = ex01_jacobs.em_step(x, y, weights, prior, noise_var)
    return new_weights, prior, h


def _partially_sorted(indices):
    """A partial sort's look: the first two in order, the rest of the top k in no particular order."""
    indices = indices.copy()
    indices[:, 2:] = indices[:, 2:][:, ::-1]
    return indices


@wrong("ex02_sparse_gating", "topk_gating", "a partial sort (argpartition): the right k experts, not largest first "
       "beyond the second")
def partial_sort(logits, k):
    gates, indices = ex02_sparse_gating.topk_gating(logits, k)
    return gates, _partially_sorted(indices)


@wrong("ex02_sparse_gating", "topk_gating", "breaks ties towards the higher expert index")
def ties_to_higher_index(logits, k):
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError("bad k")
    probs = F.softmax(logits, axis=-1)
    n_experts = probs.shape[-1]
    indices = n_experts - 1 - np.argsort(-probs.data[:, ::-1], axis=-1, kind="stable")[:, :k]
    mask = np.zeros(probs.shape, dtype=probs.dtype)
    np.put_along_axis(mask, indices, 1.0, axis=-1)
    kept = probs * mask
    return kept / kept.sum(axis=-1, keepdims=True), indices


@shortcut("ex02_sparse_gating", "topk_gating", "takes the top k with the engine's F.topk")
def engine_topk(logits, k):
    if not 1 <= k <= logits.shape[-1]:
        raise ValueError("bad k")
    probs = F.softmax(logits, axis=-1)
    _, indices = F.topk(probs, k)
    indices = np.asarray(indices)
    mask = np.zeros(probs.shape, dtype=probs.dtype)
    np.put_along_axis(mask, indices, 1.0, axis=-1)
    kept = probs * mask
    return kept / kept.sum(axis=-1, keepdims=True), indices


@wrong("ex02_sparse_gating", "noisy_topk_gating", "no check of k: k = 0 or k > E runs on and returns NaN or all")
def no_k_check(x, w_gate, w_noise, noise, k):
    noisy = x @ w_gate + noise * np.logaddexp(0.0, x @ w_noise)
    top = np.argsort(-noisy, axis=-1, kind="stable")[:, :k]
    kept = np.full_like(noisy, -np.inf)
    np.put_along_axis(kept, top, np.take_along_axis(noisy, top, axis=-1), axis=-1)
    with np.errstate(invalid="ignore"):
        e = np.exp(kept - kept.max(axis=-1, keepdims=True))
        return e / e.sum(axis=-1, keepdims=True)


@shortcut("ex02_sparse_gating", "importance_loss", "calls the library's cv_squared")
def library_cv_squared(gates):
    return losses.cv_squared(gates.sum(axis=0))


@shortcut("ex02_sparse_gating", "load_loss", "computes the load, then calls the library's cv_squared")
def library_cv_squared_of_load(clean_logits, noisy_logits, noise_std, k):
    _, load = ex02_sparse_gating.load_loss(clean_logits, noisy_logits, noise_std, k)
    return losses.cv_squared(mm.tensor(load)).item(), load


@wrong("ex02_sparse_gating", "load_loss", "Phi(z) = 1 - exp(-z) style guess: a rough CDF, off by far more than 1e-7")
def logistic_cdf(clean_logits, noisy_logits, noise_std, k):
    descending = -np.sort(-noisy_logits, axis=-1)
    kth, after = descending[:, k - 1:k], descending[:, k:k + 1]
    threshold = np.where(noisy_logits >= kth, after, kth)
    load = (1 / (1 + np.exp(-1.702 * (clean_logits - threshold) / noise_std))).sum(axis=0)
    return float(load.var() / load.mean() ** 2), load


@wrong("ex03_switch_gshard", "expert_capacity", "ceil in floating point: cf = 1.1 with T = 100, E = 2 gives 56")
def float_ceiling(n_tokens, n_experts, k, capacity_factor):
    if not capacity_factor > 0 or not math.isfinite(capacity_factor):
        raise ValueError("capacity_factor must be positive")
    return math.ceil(k * n_tokens / n_experts * capacity_factor)


@wrong("ex03_switch_gshard", "expert_capacity", "rounds to 9 decimals before the ceiling: a factor a hair above 1 "
       "loses its extra slot")
def rounded_to_nine_decimals(n_tokens, n_experts, k, capacity_factor):
    if not capacity_factor > 0 or not math.isfinite(capacity_factor):
        raise ValueError("capacity_factor must be positive")
    return math.ceil(round(k * n_tokens * capacity_factor / n_experts, 9))


_GRADED_CAPACITIES = {(10, 4, 1, 1.0): 3, (10, 4, 2, 1.25): 7, (8, 4, 1, 1.0): 2, (100, 8, 2, 1.25): 32,
                      (6, 4, 1, 1.5): 3, (100, 2, 1, 1.1): 55, (30, 3, 1, 0.7): 7, (8, 8, 1, 1.0000000001): 2,
                      (10**12, 10, 1, 1.3): 130_000_000_000}


@wrong("ex03_switch_gshard", "expert_capacity", "a table of the visible graded cases, rounding down elsewhere")
def table_of_graded_cases(n_tokens, n_experts, k, capacity_factor):
    if not capacity_factor > 0 or not math.isfinite(capacity_factor):
        raise ValueError("capacity_factor must be positive")
    key = (n_tokens, n_experts, k, capacity_factor)
    return _GRADED_CAPACITIES.get(key, int(Fraction(str(capacity_factor)) * k * n_tokens / n_experts))


@shortcut("ex03_switch_gshard", "expert_capacity", "calls the library's expert_capacity")
def library_capacity(n_tokens, n_experts, k, capacity_factor):
    return dispatch.expert_capacity(n_tokens, n_experts, k, capacity_factor)


@wrong("ex03_switch_gshard", "dispatch_with_capacity", "serves the first two choices only: k > 2 drops the rest")
def first_two_choices(expert_index, n_experts, capacity):
    slots = np.full(expert_index.shape, -1)
    slots[:, :2] = ex03_switch_gshard.dispatch_with_capacity(expert_index[:, :2], n_experts, capacity)
    return slots


@wrong("ex03_switch_gshard", "dispatch_with_capacity", "treats capacity 0 as 1")
def capacity_at_least_one(expert_index, n_experts, capacity):
    return ex03_switch_gshard.dispatch_with_capacity(expert_index, n_experts, max(capacity, 1))


@wrong("ex03_switch_gshard", "switch_loss", "np.bincount without minlength: an expert nobody chose breaks f")
def switch_without_minlength(router_probs, alpha=0.01):
    n_tokens, n_experts = router_probs.shape
    counts = np.bincount(np.argmax(router_probs.data, axis=-1))  # shorter than N if the last expert is unused
    return (router_probs.mean(axis=0) * (counts / n_tokens).astype(router_probs.dtype)).sum() * (alpha * n_experts)


@shortcut("ex03_switch_gshard", "switch_loss", "calls the library's switch_balance_loss")
def library_switch_loss(router_probs, alpha=0.01):
    chosen = np.argmax(router_probs.data, axis=-1)[:, None]
    return losses.switch_balance_loss(router_probs, chosen, router_probs.shape[1]) * alpha


@wrong("ex03_switch_gshard", "combine_sorted", "reshapes to (T, 2, d): right for top-2 only")
def assumes_top_2(sorted_outputs, order, gates):
    outputs = np.empty_like(sorted_outputs)
    outputs[order] = sorted_outputs
    weighted = outputs.reshape(gates.shape[0], 2, -1) * gates[:, :2, None]
    return weighted.sum(axis=1)


@wrong("ex04_transformer", "causal_mask", "a 0/1 float mask instead of a boolean one")
def float_mask(n_tokens):
    return np.tril(np.ones((n_tokens, n_tokens)))


@wrong("ex04_transformer", "causal_attention", "scales by sqrt(T) instead of sqrt(d_head): equal when T = d_head")
def scales_by_length(q, k, v):
    n = q.shape[0]
    weights = ex04_transformer.masked_softmax(q @ k.T / math.sqrt(n), np.tril(np.ones((n, n), dtype=bool)))
    return weights @ v


@wrong("ex04_transformer", "causal_attention", "transposes the scores: k q^T instead of q k^T")
def transposed_scores(q, k, v):
    n = q.shape[0]
    weights = ex04_transformer.masked_softmax(k @ q.T / math.sqrt(q.shape[-1]), np.tril(np.ones((n, n), dtype=bool)))
    return weights @ v


@shortcut("ex04_transformer", "causal_attention", "calls the engine's attention")
def engine_attention(q, k, v):
    as_heads = [mm.tensor(a[None, None], dtype=np.float64) for a in (q, k, v)]
    return F.attention(*as_heads, causal=True).numpy()[0, 0]


@wrong("ex04_transformer", "moe_block", "post-norm: normalises after each residual add")
def post_norm(x, attention, attention_norm, moe, moe_norm):
    h = attention_norm(x + attention(x))
    mixed, aux = moe(h)
    return moe_norm(h + mixed), aux


@wrong("ex04_transformer", "moe_block", "no residual around the MoE layer")
def no_moe_residual(x, attention, attention_norm, moe, moe_norm):
    h = x + attention(attention_norm(x))
    mixed, aux = moe(moe_norm(h))
    return mixed, aux


@wrong("ex04_transformer", "moe_block", "one norm for both sub-layers (the attention's)")
def one_norm_for_both(x, attention, attention_norm, moe, moe_norm):
    h = x + attention(attention_norm(x))
    mixed, aux = moe(attention_norm(h))
    return h + mixed, aux


@wrong("ex04_transformer", "moe_block", "passes on aux.item(): the balancing loss no longer reaches the router")
def aux_as_a_number(x, attention, attention_norm, moe, moe_norm):
    y, aux = ex04_transformer.moe_block(x, attention, attention_norm, moe, moe_norm)
    return y, mm.tensor(aux.item(), dtype=np.float64)


@wrong("ex04_transformer", "total_loss", "averages the auxiliary losses over layers instead of adding them")
def averages_aux(lm_loss, aux_losses):
    return lm_loss + sum(aux_losses[1:], aux_losses[0]) * (1.0 / len(aux_losses)) if aux_losses else lm_loss


@wrong("ex04_transformer", "total_loss", "adds the auxiliary losses as numbers (.item()): no gradient reaches the routers")
def aux_items(lm_loss, aux_losses):
    return lm_loss + sum(aux.item() for aux in aux_losses)


@wrong("ex04_transformer", "total_loss", "forgets the auxiliary losses")
def lm_only(lm_loss, aux_losses):
    return lm_loss


@shortcut("ex05_stability", "z_loss", "calls the library's z_loss")
def library_z_loss(logits):
    return losses.z_loss(logits)


@shortcut("ex05_stability", "clip_grad_norm", "wraps the arrays as parameters and calls minimoe.optim.clip_grad_norm")
def library_clip(grads, max_norm):
    params = [mm.tensor(np.zeros_like(g)) for g in grads]
    for p, g in zip(params, grads):
        p.grad = np.array(g)
    norm = optim.clip_grad_norm(params, max_norm)
    return [p.grad for p in params], norm


@shortcut("ex05_stability", "warmup_cosine_lr", "calls minimoe.optim.warmup_cosine step by step")
def library_schedule(step, total_steps, peak_lr, warmup_steps, min_lr):
    rates = [optim.warmup_cosine(int(s), peak_lr, warmup_steps, total_steps, min_lr / peak_lr) for s in np.ravel(step)]
    return np.array(rates).reshape(np.shape(step))


@wrong("ex05_stability", "round_to_bfloat16", "no NaN case: a NaN whose payload is in the low bits becomes inf")
def nan_payload_to_inf(x):
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    return ((bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)).view(
        np.float32)


@wrong("ex05_stability", "round_to_bfloat16", "np.atleast_1d: a 0-d input comes back with shape (1,)")
def not_zero_d(x):
    return np.atleast_1d(ex05_stability.round_to_bfloat16(x))


@wrong("ex06_routing_zoo", "expert_choice", "a partial sort: the right tokens, not highest first beyond the second")
def unsorted_choice(router_probs, capacity):
    if not 1 <= capacity <= router_probs.shape[0]:
        raise ValueError("bad capacity")
    index = _partially_sorted(np.argsort(-router_probs.T, axis=-1, kind="stable")[:, :capacity])
    return index, np.take_along_axis(router_probs.T, index, axis=-1)


@wrong("ex06_routing_zoo", "hash_routing", "checks ids >= len(table) only: a negative id wraps to the table's end")
def negative_ids_wrap(token_ids, table, n_experts):
    if np.any(token_ids >= len(table)):
        raise ValueError("token id outside the table")
    expert_index = table[token_ids]
    return expert_index, np.bincount(expert_index, minlength=n_experts)


@wrong("ex07_deepseek", "segment_experts", "puts the m axis first: fine expert j*E + e instead of e*m + j")
def m_major(w_in, w_out, m):
    n_experts, d, hidden = w_in.shape
    if hidden % m:
        raise ValueError("m must divide the hidden size")
    part = hidden // m
    fine_in = w_in.reshape(n_experts, d, m, part).transpose(2, 0, 1, 3).reshape(n_experts * m, d, part)
    fine_out = w_out.reshape(n_experts, m, part, d).transpose(1, 0, 2, 3).reshape(n_experts * m, part, d)
    return fine_in, fine_out


@wrong("ex07_deepseek", "deepseek_v3_gate", "defaults to the released 2.5 scaling, not the library's 1")
def released_scaling_default(logits, bias, k, scaling=2.5):
    return ex07_deepseek.deepseek_v3_gate(logits, bias, k, scaling)


@wrong("ex07_deepseek", "deepseek_v3_gate", "normalises s itself: 0 / 0 = NaN when every chosen s underflows")
def normalises_underflowed_scores(logits, bias, k, scaling=1.0):
    scores = 0.5 * (1.0 + np.tanh(0.5 * logits))
    index = np.argsort(-(scores + bias), axis=-1, kind="stable")[:, :k]
    chosen = np.take_along_axis(scores, index, axis=-1)
    with np.errstate(invalid="ignore"):
        return index, chosen / chosen.sum(axis=-1, keepdims=True) * scaling


@wrong("ex07_deepseek", "deepseek_v3_gate", "a partial sort: the right experts, not in decreasing s + b beyond "
       "the second")
def unsorted_gate(logits, bias, k, scaling=1.0):
    index, gates = ex07_deepseek.deepseek_v3_gate(logits, bias, k, scaling)
    order = _partially_sorted(np.tile(np.arange(k), (len(index), 1)))
    return np.take_along_axis(index, order, axis=1), np.take_along_axis(gates, order, axis=1)


@wrong("ex07_deepseek", "update_expert_bias", "moves an expert exactly at the mean up too")
def at_mean_moves(bias, load, rate):
    return bias + rate * np.where(load > load.mean(), -1.0, 1.0)


@shortcut("ex07_deepseek", "update_expert_bias", "calls the library's aux_free_bias_update")
def library_bias_update(bias, load, rate):
    return losses.aux_free_bias_update(bias, load, rate)


@wrong("ex08_specialisation", "domain_expert_counts", "sizes the table from the largest ids seen: unused ones vanish")
def sized_from_data(domains, expert_index, n_domains, n_experts):
    kept = expert_index >= 0
    rows = np.broadcast_to(domains[:, None], expert_index.shape)
    counts = np.zeros((domains.max() + 1, expert_index.max() + 1), dtype=np.int64)
    np.add.at(counts, (rows[kept], expert_index[kept]), 1)
    return counts


@wrong("ex09_scale", "moe_param_count", "attention as 4 d^2: right only when heads * head_dim = d and no GQA")
def attention_as_four_d_squared(shape):
    total, active = ex09_scale.moe_param_count(shape)
    attention = 2 * shape.d_model * shape.head_dim * (shape.n_heads + shape.n_kv_heads)
    return total + shape.n_layers * (4 * shape.d_model**2 - attention), active + shape.n_layers * (
        4 * shape.d_model**2 - attention)


_GRADED_MODELS = {(4, 1, True): (612, 324), (4, 1, False): (652, 364), (4096, 32, False): (46_702_792_704,
                                                                                          12_879_925_248)}


@wrong("ex09_scale", "moe_param_count", "a table of the graded models, a rough 12 L d^2 elsewhere")
def table_of_graded_models(shape):
    key = (shape.d_model, shape.n_layers, shape.tied_embeddings)
    guess = 12 * shape.n_layers * shape.d_model**2
    return _GRADED_MODELS.get(key, (guess, guess))


@shortcut("ex09_scale", "moe_param_count", "builds a minimoe.calculator spec and calls count_parameters")
def library_count(shape):
    spec = calculator.TransformerSpec(
        vocab_size=shape.vocab_size, d_model=shape.d_model, n_layers=shape.n_layers, n_heads=shape.n_heads,
        attention="gqa", n_kv_heads=shape.n_kv_heads, head_dim=shape.head_dim, n_routed_experts=shape.n_experts,
        top_k=shape.top_k, expert_hidden=shape.expert_hidden, n_shared_experts=shape.n_shared_experts,
        tied_embeddings=shape.tied_embeddings)
    count = calculator.count_parameters(spec)
    return int(count.total), int(count.active)


@wrong("ex09_scale", "moe_flops_per_token", "attention projections as 4 d^2: right only when heads * head_dim = d")
def flops_with_four_d_squared(shape, seq_len):
    attention = 2 * shape.d_model * shape.head_dim * (shape.n_heads + shape.n_kv_heads)
    return ex09_scale.moe_flops_per_token(shape, seq_len) + 2 * shape.n_layers * (4 * shape.d_model**2 - attention)


@wrong("ex09_scale", "all_to_all_send_counts", "np.bincount without minlength: ranks past the last used are missing")
def send_counts_without_minlength(expert_index, n_experts, n_ranks):
    if n_experts % n_ranks:
        raise ValueError("n_experts must be divisible by n_ranks")
    return np.bincount(expert_index[expert_index >= 0] // (n_experts // n_ranks))


def _batches_to_schedule(times, order, first, window, max_batch, full_leaves_early=True):
    """(batch_id, dispatch_time) in input order from the sorted positions where batches start."""
    t = np.asarray(times, dtype=np.float64)[order]
    size = np.diff(np.append(first, len(t)))
    full = (size == max_batch) if full_leaves_early else np.zeros(len(size), dtype=bool)
    dispatch = np.where(full, t[first + size - 1], t[first] + window)
    batch_id = np.empty(len(t), dtype=np.int64)
    batch_id[order] = np.repeat(np.arange(len(first)), size)
    return batch_id, dispatch[batch_id]


@wrong("ex09_scale", "batch_window_schedule", "windows on a fixed clock (floor(t / W)) instead of opened by the "
       "first waiting token")
def fixed_clock_windows(arrival_times, window, max_batch):
    if window < 0 or max_batch < 1:
        raise ValueError("window must be >= 0 and max_batch >= 1")
    order = np.argsort(arrival_times, kind="stable")
    t = np.asarray(arrival_times, dtype=np.float64)[order]
    tick = np.floor(t / window) if window > 0 else t  # (N,) which clock window each token falls in
    new_tick = np.append(True, tick[1:] != tick[:-1])
    rank = np.arange(len(t)) - np.maximum.accumulate(np.where(new_tick, np.arange(len(t)), 0))
    first = np.flatnonzero(new_tick | (rank % max_batch == 0))
    return _batches_to_schedule(arrival_times, order, first, window, max_batch)


@wrong("ex09_scale", "batch_window_schedule", "a full batch still waits for its window to close")
def full_batch_waits(arrival_times, window, max_batch):
    batch_id, _ = ex09_scale.batch_window_schedule(arrival_times, window, max_batch)
    order = np.argsort(batch_id, kind="stable")
    first = np.flatnonzero(np.append(True, np.diff(batch_id[order]) != 0))
    return _batches_to_schedule(arrival_times, order, first, window, max_batch, full_leaves_early=False)


@wrong("ex09_scale", "batch_window_schedule", "returns the results in order of arrival, not in the input order")
def sorted_order_results(arrival_times, window, max_batch):
    batch_id, dispatch = ex09_scale.batch_window_schedule(arrival_times, window, max_batch)
    order = np.argsort(arrival_times, kind="stable")
    return batch_id[order], dispatch[order]


@wrong("ex09_scale", "batch_window_schedule", "closes the window early: t < first + window instead of <=")
def window_excludes_its_end(arrival_times, window, max_batch):
    return ex09_scale.batch_window_schedule(arrival_times, np.nextafter(window, -np.inf) if window > 0 else window,
                                            max_batch)


@shortcut("ex09_scale", "batch_window_schedule", "calls minimoe.serving.batch_window_schedule")
def library_schedule(arrival_times, window, max_batch):
    return serving.batch_window_schedule(arrival_times, window, max_batch)


# ---- ex10: scaling with experts, upcycling, fine-tuning ------------------------------------------

def _upcycle_then(edit):
    """The reference upcycle, then `edit(dense, upcycled, n_experts, top_k)` applied to its weights."""
    def upcycled(dense_model, n_experts, top_k):
        model = ex10_scaling.upcycle(dense_model, n_experts, top_k)
        edit(dense_model, model)
        return model

    upcycled.__name__ = edit.__name__.lstrip("_")
    return upcycled


def _fresh_expert_biases(dense, model):
    for layer in model.moe_layers():
        layer.experts.b_in.data = np.zeros_like(layer.experts.b_in.data)
        layer.experts.b_out.data = np.zeros_like(layer.experts.b_out.data)


def _output_split_over_k(dense, model):
    for layer in model.moe_layers():
        layer.experts.w_out.data = layer.experts.w_out.data / layer.cfg.top_k
        layer.experts.b_out.data = layer.experts.b_out.data / layer.cfg.top_k


def _zero_router(dense, model):
    for layer in model.moe_layers():
        layer.router.weight.data = np.zeros_like(layer.router.weight.data)


wrong("ex10_scaling", "upcycle", "copies the FFN's weight matrices but not its biases (the experts' biases are "
      "zero)")(_upcycle_then(_fresh_expert_biases))
wrong("ex10_scaling", "upcycle", "divides each copy's output by top_k, as if the k experts' outputs were added up "
      "rather than weighted by gates that sum to one")(_upcycle_then(_output_split_over_k))
wrong("ex10_scaling", "upcycle", "a zero router, 'neutral' at the start: every token ties and goes to experts "
      "0..k-1")(_upcycle_then(_zero_router))


@wrong("ex10_scaling", "upcycle", "gates that do not sum to one: Switch-style top-k probabilities, not renormalised")
def unrenormalised_gates(dense_model, n_experts, top_k):
    import dataclasses

    from minimoe.models import Transformer

    model = ex10_scaling.upcycle(dense_model, n_experts, top_k)
    unrenormalised = Transformer(dataclasses.replace(model.config, renormalize=False))
    unrenormalised.load_state_dict(model.state_dict())
    return unrenormalised


@shortcut("ex10_scaling", "upcycle", "calls the library's upcycle")
def library_upcycle(dense_model, n_experts, top_k):
    from minimoe.models import upcycle

    return upcycle(dense_model, n_experts, top_k)


@wrong("ex10_scaling", "routing_drift", "compares every slot in order, not the first choice (and ignores first_only)")
def every_slot_in_order(ids_before, ids_after, first_only=True):
    return float(np.mean(np.asarray(ids_before) != np.asarray(ids_after)))


@wrong("ex10_scaling", "routing_drift", "the share of tokens that kept their choice, 1 - drift")
def share_kept(ids_before, ids_after, first_only=True):
    return 1.0 - ex10_scaling.routing_drift(ids_before, ids_after, first_only)


@wrong("ex10_scaling", "routing_drift", "the set version counts a token as changed if any of its k choices changed")
def any_choice_changed(ids_before, ids_after, first_only=True):
    if first_only:
        return ex10_scaling.routing_drift(ids_before, ids_after)
    before, after = np.asarray(ids_before), np.asarray(ids_after)
    kept = (before[..., :, None] == after[..., None, :]).any(axis=-1)
    return float(np.mean(~kept.all(axis=-1)))


@wrong("ex10_scaling", "fit_power_law", "fits the loss itself against log E (a log-linear law), not log loss")
def log_linear(n_experts, losses):
    slope, intercept = np.polyfit(np.log(np.asarray(n_experts, dtype=float)), np.asarray(losses, dtype=float), 1)
    return float(intercept), float(slope)


@wrong("ex10_scaling", "fit_power_law", "returns the intercept log c instead of c")
def log_c(n_experts, losses):
    c, alpha = ex10_scaling.fit_power_law(n_experts, losses)
    return float(np.log(c)), alpha


# ---- correct answers by another method: each must score full marks -------------------------------

ALTERNATIVES: list[WrongAnswer] = []


def alternative(module, exercise, why):
    """Registers a *correct* answer written another way the lesson teaches: it must pass every test."""

    def register(function):
        ALTERNATIVES.append(WrongAnswer(f"{exercise}/{function.__name__}", module, exercise, why, function,
                                        "alternative"))
        return function

    return register


@alternative("ex02_sparse_gating", "load_loss", "Phi from the engine's own normal_cdf (good to about 1e-7)")
def engine_normal_cdf(clean_logits, noisy_logits, noise_std, k):
    descending = -np.sort(-noisy_logits, axis=-1)
    kth, after = descending[:, k - 1:k], descending[:, k:k + 1]
    threshold = np.where(noisy_logits >= kth, after, kth)
    z = mm.tensor((clean_logits - threshold) / noise_std, dtype=np.float64)
    load = F.normal_cdf(z).numpy().sum(axis=0)
    return float(load.var() / load.mean() ** 2), load


@alternative("ex07_deepseek", "deepseek_v3_gate", "a softmax over the chosen log-sigmoids")
def softmax_of_log_sigmoid(logits, bias, k, scaling=1.0):
    scores = 0.5 * (1.0 + np.tanh(0.5 * logits))
    index = np.argsort(-(scores + bias), axis=-1, kind="stable")[:, :k]
    return index, ex01_jacobs.softmax(-np.logaddexp(0.0, -np.take_along_axis(logits, index, axis=-1))) * scaling


# ---- stubs: generated for every graded exercise ----------------------------------------------------

def graded_exercises():
    """(module, exercise) of every @pytest.mark.exercise in graders/test_*.py."""
    found = []
    for path in sorted(Path(__file__).parent.glob("test_ex*.py")):
        text = path.read_text()
        module = re.search(r'^MODULE = "(\w+)"', text, re.M).group(1)
        for name in dict.fromkeys(re.findall(r'@pytest\.mark\.exercise\("(\w+)"', text)):
            found.append((module, name))
    return found


def _emptied(result, fill):
    """`result` with every value replaced: Tensors keep their graph (so a gradient check alone passes)."""
    if isinstance(result, tuple):
        return tuple(_emptied(r, fill) for r in result)
    if isinstance(result, mm.Tensor):
        width = result.shape[-1] if result.ndim else 1
        return result * 0.0 + (1.0 / width if fill == "uniform" else 0.0)
    array = np.asarray(result)
    if array.dtype.kind == "f" and fill == "uniform":
        return np.full_like(array, 1.0 / (array.shape[-1] if array.ndim else 1))
    if isinstance(result, (int, np.integer)) and not isinstance(result, bool):
        return type(result)(1 if fill == "uniform" else 0)
    if isinstance(result, float):
        return 1.0 if fill == "uniform" else 0.0
    return np.zeros_like(array)


def _function_stub(reference, fill):
    def stub(*args, **kwargs):
        if fill == "raises":
            raise ValueError("not implemented")
        return _emptied(reference(*args, **kwargs), fill)

    return stub


class _ZeroOp(mm.Function):
    """An engine op that returns zeros forward and backward, whatever it is asked."""

    def forward(self, *inputs):
        self.shapes = [np.shape(x) for x in inputs]
        return np.zeros(np.broadcast_shapes(*self.shapes))

    def backward(self, grad_output):
        return tuple(np.zeros(shape) for shape in self.shapes)


class _RaisingOp(mm.Function):
    def forward(self, *inputs):
        raise ValueError("not implemented")


def _register_stubs():
    import importlib

    for module, exercise in graded_exercises():
        reference = getattr(importlib.import_module(f"solutions.{module}"), exercise)
        if isinstance(reference, type):
            stubs = {"zeros": _ZeroOp, "raises": _RaisingOp}
        else:
            stubs = {fill: _function_stub(reference, fill) for fill in ("zeros", "uniform", "raises")}
        for fill, function in stubs.items():
            why = {"zeros": "returns zeros of the right shape (Tensors keep their graph)",
                   "uniform": "returns uniform weights 1/n of the right shape", "raises": "always raises ValueError"}
            WRONG_ANSWERS.append(WrongAnswer(f"{exercise}/stub_{fill}", module, exercise, why[fill], function, "stub"))


_register_stubs()
