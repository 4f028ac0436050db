"""Grades exercises/ex01_jacobs.py: the softmax gate, the 1991 competitive loss and its posterior,
EM for a mixture of linear experts, and the posteriors and EM step of a hierarchical mixture."""
import math

import numpy as np
import pytest

import minimoe as mm
import minimoe.functional as F
from graders._checks import expect, expect_close, expect_gradients, lesson
from minimoe.models import hme, jacobs
from minimoe.ops import normalize

MODULE = "ex01_jacobs"
see = lesson(MODULE)
TWINS = {
    "softmax": [F.softmax, F.log_softmax, normalize.Softmax],
    "log_softmax": [F.log_softmax, F.logsumexp, normalize.LogSoftmax, normalize.LogSumExp],
    "competitive_loss": [jacobs.competitive_loss, jacobs.posterior],
    "gate_posterior": [jacobs.posterior, hme.posteriors],
    "em_step": [hme.em_step, hme.fit_linear_experts, hme.posteriors],
    "hme_posteriors": [hme.posteriors, hme.em_step],
    "hme_em_step": [hme.em_step, hme.fit_linear_experts, hme.posteriors, hme.fit_softmax_gate,
                    hme.expert_log_likelihoods, hme.log_gates, hme.log_likelihood],
}


def _exact_log_softmax(x, axis):
    shifted = x.astype(np.float64) - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def _random_logits(rng):
    """Logits of 2 or 3 axes of distinct sizes, with a large offset per row and some ties."""
    shape = tuple(int(n) for n in rng.permutation([2, 3, 5])[: rng.integers(2, 4)])
    x = rng.standard_normal(shape) * 3 + rng.choice([0.0, 800.0, -800.0])
    x.reshape(-1)[: shape[-1]] = x.reshape(-1)[0]  # a tied row
    return x, int(rng.integers(-len(shape), len(shape)))


@pytest.mark.exercise("softmax", points=1)
def test_softmax_random_axes_and_dtypes(fn, rng):
    section = see("The softmax gate")
    for dtype in (np.float64, np.float32, np.float64):
        x, axis = _random_logits(rng)
        x = x.astype(dtype)
        what = f"softmax(x of shape {x.shape}, {np.dtype(dtype)}, axis={axis})"
        got = fn(x.copy(), axis=axis)
        loose = dict(rtol=1e-5, atol=1e-7) if dtype == np.float32 else {}
        expect_close(got, np.exp(_exact_log_softmax(x, axis)), what, section, dtype=dtype, **loose)


@pytest.mark.exercise("log_softmax", points=1)
def test_log_softmax_random_axes_and_dtypes(fn, rng):
    section = see("The softmax gate")
    for dtype in (np.float64, np.float32, np.float64):
        x, axis = _random_logits(rng)
        x = x.astype(dtype)
        what = f"log_softmax(x of shape {x.shape}, {np.dtype(dtype)}, axis={axis})"
        loose = dict(rtol=1e-5, atol=1e-4) if dtype == np.float32 else {}
        expect_close(fn(x.copy(), axis=axis), _exact_log_softmax(x, axis), what, section, dtype=dtype, **loose)


@pytest.mark.exercise("softmax", points=1)
def test_softmax_values(fn):
    expect_close(fn(np.array([1.0, 2.0, 3.0])), [0.09003057, 0.24472847, 0.66524096],
                 "softmax([1, 2, 3])", see("The softmax gate"), rtol=1e-6)
    x = np.array([[0.0, 1.0], [2.0, 2.0], [-1.0, 3.0]])
    expect_close(fn(x, axis=0), np.exp(x) / np.exp(x).sum(axis=0), "softmax(x, axis=0)", see("The softmax gate"))


@pytest.mark.exercise("softmax", points=1)
def test_softmax_large_logits(fn):
    x = np.array([[1000.0, 1001.0], [-1000.0, -1000.0], [0.0, 0.0]])
    expect_close(fn(x), [[0.26894142, 0.73105858], [0.5, 0.5], [0.5, 0.5]],
                 "softmax of logits near +-1000 (subtract each row's own max)", see("The softmax gate"))


@pytest.mark.exercise("log_softmax", points=1)
def test_log_softmax_values(fn):
    x = np.array([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    expected = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
    expect_close(fn(x), expected, "log_softmax of [[1, 2, 3], [0, 0, 0]]", see("The softmax gate"))


@pytest.mark.exercise("log_softmax", points=1)
def test_log_softmax_extreme_logits(fn):
    got = fn(np.array([[0.0, -1000.0], [1000.0, 0.0]]))
    expect_close(got, [[0.0, -1000.0], [0.0, -1000.0]],
                 "log_softmax([0, -1000]) (log of a probability that rounds to 0)", see("The softmax gate"))


def _case():
    """One case, two experts: the target sits on expert 0; expert 1 is off by 2."""
    logits = np.array([[0.0, 0.0]])
    outputs = np.array([[[0.0], [2.0]]])
    targets = np.array([[0.0]])
    return logits, outputs, targets


def _posterior_by_hand(logits, outputs, targets):
    prior = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    likelihood = np.exp(-0.5 * ((outputs - targets[:, None, :]) ** 2).sum(axis=-1))
    return prior * likelihood / (prior * likelihood).sum(axis=1, keepdims=True)


@pytest.mark.exercise("competitive_loss", points=1)
def test_competitive_loss_values(fn):
    logits, outputs, targets = _case()
    got = fn(*(mm.tensor(a, dtype=np.float64) for a in (logits, outputs, targets)))
    expected = -math.log(0.5 * 1.0 + 0.5 * math.exp(-2.0))  # -log(p_0 e^0 + p_1 e^(-4/2))
    expect_close(got, expected, "competitive_loss on one case (p = [0.5, 0.5], errors 0 and 2)",
                 see("Competitive against cooperative loss"))
    # One expert: the loss is half the squared error (eq. 1.3 with a single Gaussian), averaged over cases.
    o = np.array([[[1.0, 2.0]], [[0.0, -1.0]]])
    d = np.array([[0.0, 0.0], [3.0, 1.0]])
    single = fn(mm.tensor(np.zeros((2, 1)), dtype=np.float64), mm.tensor(o, dtype=np.float64),
                mm.tensor(d, dtype=np.float64))
    expect_close(single, (0.5 * 5 + 0.5 * 13) / 2, "competitive_loss with one expert (mean of ||d-o||^2 / 2)",
                 see("Competitive against cooperative loss"))


@pytest.mark.exercise("competitive_loss", points=1)
def test_competitive_loss_far_targets(fn):
    logits = np.array([[0.0, 0.0]])
    outputs = np.array([[[40.0], [50.0]]])  # errors^2 / 2 = 800 and 1250: exp(-800) underflows to 0
    got = fn(*(mm.tensor(a, dtype=np.float64) for a in (logits, outputs, np.array([[0.0]]))))
    expect_close(got, 800 + math.log(2), "competitive_loss with every expert far from the target",
                 see("Competitive against cooperative loss"))


@pytest.mark.exercise("competitive_loss", points=1)
def test_competitive_loss_gradients(fn, rng):
    logits, outputs, targets = rng.standard_normal((4, 3)), rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 2))
    expect_gradients(fn, [logits, outputs, targets], "competitive_loss gradients",
                     see("Competitive against cooperative loss"))
    s = mm.tensor(logits, dtype=np.float64, requires_grad=True)
    fn(s, mm.tensor(outputs, dtype=np.float64), mm.tensor(targets, dtype=np.float64)).backward()
    prior = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    half_squared = 0.5 * ((outputs - targets[:, None, :]) ** 2).sum(axis=-1)
    expected = -np.log((prior * np.exp(-half_squared)).sum(axis=1)).mean()
    got = fn(*(mm.tensor(a, dtype=np.float64) for a in (logits, outputs, targets)))
    expect_close(got, expected, "competitive_loss on random inputs (4 cases, 3 experts, D = 2)",
                 see("Competitive against cooperative loss"))
    expect_close(s.grad, (prior - _posterior_by_hand(logits, outputs, targets)) / 4,
                 "d loss / d gate logits (it is (p - h) / N)", see("The posterior"))


@pytest.mark.exercise("gate_posterior", points=1, uses=("softmax", "log_softmax"))
def test_gate_posterior_values(fn, rng):
    expect_close(fn(*_case()), [[1 / (1 + math.exp(-2)), math.exp(-2) / (1 + math.exp(-2))]],
                 "gate_posterior on one case (p = [0.5, 0.5], errors 0 and 2)", see("The posterior"))
    logits = 2 * rng.standard_normal((5, 3))
    outputs, targets = rng.standard_normal((5, 3, 2)), rng.standard_normal((5, 2))
    expect_close(fn(logits, outputs, targets), _posterior_by_hand(logits, outputs, targets),
                 "gate_posterior (prior p times likelihood, normalised)", see("The posterior"))


@pytest.mark.exercise("gate_posterior", points=1, uses=("softmax", "log_softmax"))
def test_gate_posterior_far_targets(fn):
    h = fn(np.array([[0.0, 3.0]]), np.array([[[40.0], [50.0]]]), np.array([[0.0]]))
    expect_close(h, [[1.0, 0.0]], "gate_posterior when every expert is far off (the nearest takes all)",
                 see("The posterior"))


def _two_lines(n=200, seed=5):
    """x in [-2, 2]; y = 3x + 2 left of 0 and -2x - 1 right of it, plus noise of std 0.1."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    y = np.where(x < 0, 3 * x + 2, -2 * x - 1) + 0.1 * rng.standard_normal(n)
    return np.stack([x, np.ones(n)], axis=1), y


def _log_likelihood(x, y, weights, prior, noise_var):
    density = np.exp(-(y[:, None] - x @ weights.T) ** 2 / (2 * noise_var)) / math.sqrt(2 * math.pi * noise_var)
    return float(np.log(density @ prior).sum())


@pytest.mark.exercise("em_step", points=1)
def test_em_step_solves_the_weighted_least_squares(fn, rng):
    x, y = _two_lines(seed=int(rng.integers(1000)))
    weights, prior = rng.standard_normal((3, 2)), rng.dirichlet(np.ones(3))
    new_weights, new_prior, h = fn(x, y, weights, prior, noise_var=0.5)
    log_joint = np.log(prior) - (y[:, None] - x @ weights.T) ** 2 / (2 * 0.5)
    expected_h = np.exp(log_joint) / np.exp(log_joint).sum(axis=1, keepdims=True)
    section = see("EM for a mixture of experts")
    expect_close(h, expected_h, "em_step responsibilities (posteriors under the given parameters)", section)
    expect_close(new_prior, expected_h.mean(axis=0), "em_step new prior (mean responsibility)", section)
    # The M-step's optimum satisfies the weighted normal equations X^T H_i (y - X w_i) = 0.
    residual = y[:, None] - x @ np.asarray(new_weights).T  # (N, E)
    gradient = np.einsum("nd,ne->ed", x, expected_h * residual)
    expect_close(gradient, np.zeros_like(gradient), "X^T diag(h_i) (y - X w_i) for the new weights "
                 "(each expert must fit its own responsibility-weighted data)", section, atol=1e-8)


@pytest.mark.exercise("em_step", points=2)
def test_em_step_climbs_the_likelihood(fn):
    x, y = _two_lines()
    weights, prior, noise_var = np.array([[1.0, 0.0], [-1.0, 0.0]]), np.array([0.5, 0.5]), 0.01
    section = see("EM for a mixture of experts")
    previous = _log_likelihood(x, y, weights, prior, noise_var)
    for step in range(40):
        weights, prior, _ = fn(x, y, weights, prior, noise_var)
        current = _log_likelihood(x, y, weights, prior, noise_var)
        expect(current >= previous - 1e-6 * abs(previous), f"log-likelihood at EM step {step + 1}",
               f"at least {previous:.6f} (EM never goes down)", f"{current:.6f}", section)
        previous = current
    found = np.asarray(weights)[np.argsort(-np.asarray(weights)[:, 0])]
    expect_close(found, [[3.0, 2.0], [-2.0, -1.0]], "expert lines after 40 EM steps (slope, intercept)",
                 section, rtol=0, atol=0.1)


# ---- the hierarchical mixture (Jordan & Jacobs 1994) ---------------------------------------------

def _softmax(z, axis):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def _tree_posteriors_by_hand(top_logits, nested_logits, log_likelihoods):
    """h_top, h_nested, h_leaf written out with exp (exact for moderate inputs)."""
    g_top, g_nested, likelihood = _softmax(top_logits, 1), _softmax(nested_logits, 2), np.exp(log_likelihoods)
    joint = g_top[:, :, None] * g_nested * likelihood  # (N, I, J)
    leaf = joint / joint.sum(axis=(1, 2), keepdims=True)
    nested = g_nested * likelihood / (g_nested * likelihood).sum(axis=2, keepdims=True)
    return leaf.sum(axis=2), nested, leaf


def _random_tree_sizes(rng):
    """I and J of different sizes, in either order, so a transposed axis cannot pass."""
    n_branches, n_experts = (int(v) for v in rng.permutation([2, 3]))
    return int(rng.integers(5, 9)), n_branches, n_experts


def _expect_tree_posteriors(got, expected, what, section):
    expect(isinstance(got, tuple) and len(got) == 3, what, "a tuple (h_top, h_nested, h_leaf)",
           f"{type(got).__name__}", section)
    for name, g, e in zip(("h_top", "h_nested", "h_leaf"), got, expected):
        expect_close(g, e, f"{what}: {name}", section, dtype="f")


@pytest.mark.exercise("hme_posteriors", points=1, uses=("softmax", "log_softmax"))
def test_hme_posteriors_values(fn, rng):
    section = see("A hierarchy of experts")
    # g = 1/2 at each level; P = [[1, 0.5], [0.25, 0.25]]: h_leaf = P / 2, h_top = [3/4, 1/4]
    got = fn(np.zeros((1, 2)), np.zeros((1, 2, 2)), np.log([[[1.0, 0.5], [0.25, 0.25]]]))
    _expect_tree_posteriors(got, ([[0.75, 0.25]], [[[2 / 3, 1 / 3], [0.5, 0.5]]], [[[0.5, 0.25], [0.125, 0.125]]]),
                            "hme_posteriors with uniform gates and P = [[1, 0.5], [0.25, 0.25]]", section)
    n, n_branches, n_experts = _random_tree_sizes(rng)
    inputs = (2 * rng.standard_normal((n, n_branches)), 2 * rng.standard_normal((n, n_branches, n_experts)),
              -3 * np.abs(rng.standard_normal((n, n_branches, n_experts))))
    _expect_tree_posteriors(fn(*(a.copy() for a in inputs)), _tree_posteriors_by_hand(*inputs),
                            f"hme_posteriors on random inputs (N = {n}, I = {n_branches}, J = {n_experts})", section)


@pytest.mark.exercise("hme_posteriors", points=1, uses=("softmax", "log_softmax"))
def test_hme_posteriors_extreme_values(fn, rng):
    section = see("A hierarchy of experts")
    # The top gate rules branch 1 out (logit -1000): h_top = [1, 0], yet h_nested of branch 1 is still
    # its own posterior, from g = [1/2, 1/2] and P proportional to [e^-2, 1].
    got = fn(np.array([[0.0, -1000.0]]), np.zeros((1, 2, 2)), np.array([[[0.0, -1.0], [-2.0, 0.0]]]))
    e1, e2 = math.exp(-1), math.exp(-2)
    _expect_tree_posteriors(got, ([[1.0, 0.0]], [[[1 / (1 + e1), e1 / (1 + e1)], [e2 / (1 + e2), 1 / (1 + e2)]]],
                                  [[[1 / (1 + e1), e1 / (1 + e1)], [0.0, 0.0]]]),
                            "hme_posteriors when the top gate rules a branch out (h_nested within it stays defined)",
                            section)
    # Every log-likelihood near -1000 (each expert far off): the posteriors are those of the same case
    # shifted by +1000, since a common factor cancels.
    n, n_branches, n_experts = _random_tree_sizes(rng)
    top, nested = rng.standard_normal((n, n_branches)), rng.standard_normal((n, n_branches, n_experts))
    log_lik = -np.abs(rng.standard_normal((n, n_branches, n_experts)))
    _expect_tree_posteriors(fn(top, nested, log_lik - 1000.0), _tree_posteriors_by_hand(top, nested, log_lik),
                            "hme_posteriors with every log-likelihood near -1000 (work in logs)", section)


def _tree_data(rng, n=60):
    """2-D inputs with a column of ones; a target with two regimes in x1, one split again in x2."""
    u = rng.uniform(-2, 2, (n, 2))
    regime = np.where(u[:, 0] < 0, 0, np.where(u[:, 1] < 0.5, 1, 2))
    y = np.array([2.0, -1.0, 1.5])[regime] * u[:, 0] + np.array([1.0, -2.0, 3.0])[regime]
    return np.c_[u, np.ones(n)], y + 0.2 * rng.standard_normal(n)


def _random_tree(rng, d, n_branches, n_experts):
    shape = (d, n_branches, n_experts)
    return hme.HME(rng.standard_normal((d, n_branches)), rng.standard_normal(shape), rng.standard_normal(shape),
                   rng.uniform(0.5, 2.0, (n_branches, n_experts)))


def _marked_gate(x, targets, weights):
    """A stand-in gate M-step whose result depends on all three arguments, so the targets can be checked."""
    return weights + x.T @ targets / len(x)


def _ascend_gate(x, targets, weights, steps=5):
    """A gate M-step that never lowers Q = sum targets log softmax(x W): gradient steps, halved until Q rises."""
    def q(w):
        z = x @ w
        return float((targets * (z - z.max(axis=1, keepdims=True) - np.log(
            np.exp(z - z.max(axis=1, keepdims=True)).sum(axis=1, keepdims=True)))).sum())

    for _ in range(steps):
        gradient = x.T @ (targets - targets.sum(axis=1, keepdims=True) * _softmax(x @ weights, 1)) / len(x)
        step = 4.0
        while q(weights + step * gradient) < q(weights) and step > 1e-10:
            step /= 2
        if q(weights + step * gradient) >= q(weights):
            weights = weights + step * gradient
    return weights


def _reference_hme_step(x, y, model, fit_gate, min_variance):
    """The exact EM step, built from minimoe's own E-step and expert M-step."""
    d, n_branches, n_experts = model.experts.shape
    log_top, log_nested = hme.log_gates(model, x)
    h = hme.posteriors(log_top.numpy(), log_nested.numpy(), hme.expert_log_likelihoods(model, x, y).numpy())
    weights, variances = hme.fit_linear_experts(x, y, h.leaf.reshape(len(x), -1), min_variance)
    nested = np.stack([fit_gate(x, h.leaf[:, i], model.nested_gates[:, i]) for i in range(n_branches)], axis=1)
    return hme.HME(fit_gate(x, h.top, model.top_gate), nested, weights.reshape(d, n_branches, n_experts),
                   variances.reshape(n_branches, n_experts))


def _as_tree(result, what, section):
    expect(isinstance(result, tuple) and len(result) == 4, what,
           "a tuple (new_top_gate, new_nested_gates, new_experts, new_variances)", f"{type(result).__name__}", section)
    return hme.HME(*(np.asarray(r, dtype=float) for r in result))


@pytest.mark.exercise("hme_em_step", points=1, uses=("hme_posteriors",))
def test_hme_em_step_values(fn, rng):
    section = see("A hierarchy of experts")
    x, y = _tree_data(rng)
    _, n_branches, n_experts = _random_tree_sizes(rng)
    model = _random_tree(rng, 3, n_branches, n_experts)
    what = f"hme_em_step on random inputs (I = {n_branches}, J = {n_experts}, D = 3)"
    got = _as_tree(fn(x.copy(), y.copy(), *(np.copy(a) for a in vars(model).values()), _marked_gate, 1e-6),
                   what, section)
    expected = _reference_hme_step(x, y, model, _marked_gate, 1e-6)
    for name in ("experts", "variances", "top_gate", "nested_gates"):
        detail = {"top_gate": " (fit_gate(x, h_top, top_gate))",
                  "nested_gates": " (fit_gate(x, h_leaf[:, i], nested_gates[:, i]) for each branch)"}.get(name, "")
        expect_close(getattr(got, name), getattr(expected, name), f"{what}: new {name}{detail}", section, rtol=1e-6,
                     atol=1e-8)


@pytest.mark.exercise("hme_em_step", points=1, uses=("hme_posteriors",))
def test_hme_em_step_one_expert_is_least_squares_with_the_variance_floor(fn, rng):
    section = see("A hierarchy of experts")
    u = rng.uniform(-1, 1, 12)
    x, y = np.c_[u, np.ones(12)], 2.5 * u - 0.5  # exactly on a line: the fitted variance would be 0
    got = _as_tree(fn(x, y, np.zeros((2, 1)), np.zeros((2, 1, 1)), rng.standard_normal((2, 1, 1)), np.ones((1, 1)),
                      _marked_gate, 1e-3), "hme_em_step with one branch and one expert", section)
    expect_close(got.experts[:, 0, 0], [2.5, -0.5], "hme_em_step with one expert: its weights (least squares)",
                 section, atol=1e-8)
    expect_close(got.variances, [[1e-3]], "hme_em_step on data an expert fits exactly: the variance "
                 "(floored at min_variance = 1e-3)", section)


@pytest.mark.exercise("hme_em_step", points=1, uses=("hme_posteriors",))
def test_hme_em_step_climbs_the_likelihood(fn, rng):
    section = see("A hierarchy of experts")
    x, y = _tree_data(rng, n=120)
    model = hme.init(2, 2, 3, rng)
    reference = model
    previous = hme.log_likelihood(model, x, y).item()
    for step in range(15):
        model = _as_tree(fn(x, y, *(np.copy(a) for a in vars(model).values()), _ascend_gate, 1e-6),
                         f"hme_em_step, EM step {step + 1}", section)
        current = hme.log_likelihood(model, x, y).item()
        expect(current >= previous - 1e-8 * abs(previous), f"log-likelihood at EM step {step + 1}",
               f"at least {previous:.6f} (EM never goes down)", f"{current:.6f}", section)
        previous = current
        reference = _reference_hme_step(x, y, reference, _ascend_gate, 1e-6)
    expect_close(previous, hme.log_likelihood(reference, x, y).item(), "log-likelihood after 15 EM steps", section,
                 rtol=1e-6)
