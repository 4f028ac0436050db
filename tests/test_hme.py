"""Hierarchical mixtures of experts and their EM (minimoe/models/hme.py, Jordan & Jacobs 1994): the
posteriors at each level on a hand-computed case, the log-likelihood against a direct computation
and by finite differences in float64, each M-step on its own, and EM never lowering the
log-likelihood, for a two-level tree and for the flat mixture (one branch)."""
import math

import numpy as np
import pytest

from minimoe import gradcheck
from minimoe.models import hme


def nested_regimes(n=400, seed=0):
    """2-D inputs; the top regime is the sign of x1, and each half splits at its own x2 threshold."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, (n, 2))
    regime = np.where(x[:, 0] < 0, np.where(x[:, 1] < 0.8, 0, 1), np.where(x[:, 1] < -0.8, 2, 3))
    lines = np.array([[1.0, 1.0, 3.0], [-1.0, 0.5, -2.0], [2.0, -1.0, -3.0], [-0.5, -1.5, 2.5]])
    y = (lines[regime, :2] * x).sum(axis=1) + lines[regime, 2] + 0.2 * rng.standard_normal(n)
    return np.c_[x, np.ones(n)], y


def direct_log_likelihood(model, x, y):
    """sum_n log sum_ij g_i g_{j|i} N(y; x w_ij, sigma_ij^2), written out with exp and log."""
    def softmax(z, axis):
        e = np.exp(z - z.max(axis=axis, keepdims=True))
        return e / e.sum(axis=axis, keepdims=True)

    top = softmax(x @ model.top_gate, 1)  # (N, I)
    nested = softmax(np.einsum("nd,dij->nij", x, model.nested_gates), 2)  # (N, I, J)
    means = np.einsum("nd,dij->nij", x, model.experts)
    density = np.exp(-(y[:, None, None] - means) ** 2 / (2 * model.variances)) / np.sqrt(2 * np.pi * model.variances)
    return float(np.log((top[:, :, None] * nested * density).sum(axis=(1, 2))).sum())


def random_model(rng, n_branches=2, n_experts=3, n_features=3):
    shape = (n_features, n_branches, n_experts)
    return hme.HME(rng.standard_normal((n_features, n_branches)), rng.standard_normal(shape),
                   rng.standard_normal(shape), rng.uniform(0.5, 2.0, (n_branches, n_experts)))


# ---- E-step -------------------------------------------------------------------------------------
def test_posteriors_by_hand():
    # g = 1/2 at each level, so the leaf priors are 1/4; P_ij = [[1, 0.5], [0.25, 0.25]]
    # h_ij = P_ij / sum P = [[0.5, 0.25], [0.125, 0.125]]; h_i = [0.75, 0.25]; h_{j|i} = [[2/3, 1/3], [1/2, 1/2]]
    h = hme.posteriors(np.zeros((1, 2)), np.zeros((1, 2, 2)), np.log([[[1.0, 0.5], [0.25, 0.25]]]))
    np.testing.assert_allclose(h.leaf, [[[0.5, 0.25], [0.125, 0.125]]])
    np.testing.assert_allclose(h.top, [[0.75, 0.25]])
    np.testing.assert_allclose(h.nested, [[[2 / 3, 1 / 3], [0.5, 0.5]]])


def test_posteriors_from_logits_equal_posteriors_from_log_gates(rng):
    top, nested, log_lik = rng.standard_normal((5, 2)), rng.standard_normal((5, 2, 3)), rng.standard_normal((5, 2, 3))
    from_logits = hme.posteriors(top + 7.0, nested - 3.0, log_lik)  # a constant per row changes nothing
    shifted_nested = nested - np.log(np.exp(nested).sum(axis=2, keepdims=True))
    from_log_gates = hme.posteriors(top, shifted_nested, log_lik)
    for a, b in zip((from_logits.top, from_logits.nested, from_logits.leaf),
                    (from_log_gates.top, from_log_gates.nested, from_log_gates.leaf)):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_posteriors_stay_defined_in_a_branch_the_top_gate_rules_out():
    h = hme.posteriors(np.array([[0.0, -1000.0]]), np.zeros((1, 2, 2)), np.array([[[0.0, -1.0], [-2.0, 0.0]]]))
    np.testing.assert_allclose(h.top, [[1.0, 0.0]])  # e^-1000 rounds to 0
    np.testing.assert_allclose(h.nested[0, 1], [math.exp(-2) / (1 + math.exp(-2)), 1 / (1 + math.exp(-2))])
    np.testing.assert_allclose(h.nested[0, 0], [1 / (1 + math.exp(-1)), math.exp(-1) / (1 + math.exp(-1))])
    assert np.isfinite(h.leaf).all() and h.leaf.sum() == pytest.approx(1.0)


# ---- the likelihood -----------------------------------------------------------------------------
def test_log_likelihood_against_a_direct_computation(rng):
    model, x, y = random_model(rng), np.c_[rng.standard_normal((6, 2)), np.ones(6)], rng.standard_normal(6)
    assert hme.log_likelihood(model, x, y).item() == pytest.approx(direct_log_likelihood(model, x, y), rel=1e-12)


def test_a_tree_with_uniform_gates_is_a_flat_mixture_with_a_uniform_gate(rng):
    x, y = np.c_[rng.standard_normal((6, 2)), np.ones(6)], rng.standard_normal(6)
    experts, variances = rng.standard_normal((3, 2, 2)), rng.uniform(0.5, 2.0, (2, 2))
    tree = hme.HME(np.zeros((3, 2)), np.zeros((3, 2, 2)), experts, variances)
    flat = hme.HME(np.zeros((3, 1)), np.zeros((3, 1, 4)), experts.reshape(3, 1, 4), variances.reshape(1, 4))
    assert hme.log_likelihood(tree, x, y).item() == pytest.approx(hme.log_likelihood(flat, x, y).item(), rel=1e-12)


def test_log_likelihood_gradcheck_in_float64(rng):
    model, x, y = random_model(rng, n_experts=2), np.c_[rng.standard_normal((5, 2)), np.ones(5)], rng.standard_normal(5)

    def log_likelihood(top, nested, experts, variances):
        return hme.log_likelihood(hme.HME(top, nested, experts, variances), x, y)

    result = gradcheck(log_likelihood, [model.top_gate, model.nested_gates, model.experts, model.variances])
    assert result.ok, str(result)


# ---- M-steps ------------------------------------------------------------------------------------
def test_fit_linear_experts_solves_the_weighted_normal_equations(rng):
    x, y = np.c_[rng.standard_normal((30, 2)), np.ones(30)], rng.standard_normal(30)
    r = rng.dirichlet(np.ones(3), size=30)  # (N, K)
    weights, variances = hme.fit_linear_experts(x, y, r)
    residual = y[:, None] - x @ weights  # (N, K)
    np.testing.assert_allclose(x.T @ (r * residual), 0, atol=1e-10)  # X^T R_k (y - X w_k) = 0
    np.testing.assert_allclose(variances, (r * residual**2).sum(axis=0) / r.sum(axis=0))
    # all the weight on one expert: ordinary least squares
    weights, _ = hme.fit_linear_experts(x, y, np.ones((30, 1)))
    np.testing.assert_allclose(weights[:, 0], np.linalg.lstsq(x, y, rcond=None)[0])


def test_fit_linear_experts_floors_the_variance_and_names_a_singular_expert():
    x = np.c_[np.arange(3.0), np.ones(3)]
    _, variances = hme.fit_linear_experts(x, 2 * x[:, 0] + 1, np.ones((3, 1)), min_variance=1e-4)
    assert variances[0] == 1e-4  # an exact fit: the floor
    with pytest.raises(ValueError, match="owns too few cases"):
        hme.fit_linear_experts(x, x[:, 0], np.array([[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]))


def test_fit_softmax_gate_recovers_realisable_soft_targets(rng):
    x = np.c_[rng.standard_normal((50, 2)), np.ones(50)]
    true = rng.standard_normal((3, 3))
    logits = x @ true
    targets = np.exp(logits - logits.max(axis=1, keepdims=True))
    targets /= targets.sum(axis=1, keepdims=True)  # Q is largest where softmax(x W) = targets
    fitted = hme.fit_softmax_gate(x, targets, np.zeros((3, 3)), steps=20)
    p = np.exp(x @ fitted - (x @ fitted).max(axis=1, keepdims=True))
    np.testing.assert_allclose(p / p.sum(axis=1, keepdims=True), targets, atol=1e-8)


def test_fit_softmax_gate_never_lowers_q_and_leaves_a_one_way_gate_alone(rng):
    x = np.c_[rng.standard_normal((40, 2)), np.ones(40)]
    targets = rng.dirichlet(np.ones(2), size=40) * rng.uniform(0, 1, (40, 1))  # rows sum to case weights
    weights = 5 * rng.standard_normal((3, 2))  # far from the optimum: full Newton steps can overshoot
    for _ in range(5):
        new = hme.fit_softmax_gate(x, targets, weights, steps=1)
        assert hme.gate_objective(x, targets, new) >= hme.gate_objective(x, targets, weights)
        weights = new
    one_way = np.ones((3, 1))
    assert hme.fit_softmax_gate(x, np.ones((40, 1)), one_way) is one_way


# ---- EM -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_branches, n_experts", [(2, 2), (1, 4)])
def test_em_never_lowers_the_log_likelihood(n_branches, n_experts):
    x, y = nested_regimes()
    model = hme.init(n_branches, n_experts, 3, np.random.default_rng(1))
    previous = hme.log_likelihood(model, x, y).item()
    start = previous
    for _ in range(25):
        model = hme.em_step(model, x, y)
        current = hme.log_likelihood(model, x, y).item()
        assert current >= previous - 1e-9 * abs(previous)
        previous = current
    assert previous > start + 100  # and it climbed


def test_em_with_one_branch_finds_two_lines():
    rng = np.random.default_rng(5)
    u = rng.uniform(-2, 2, 300)
    x, y = np.c_[u, np.ones(300)], np.where(u < 0, 3 * u + 2, -2 * u - 1) + 0.1 * rng.standard_normal(300)
    model = hme.HME(np.zeros((2, 1)), np.zeros((2, 1, 2)), np.array([[[1.0, -1.0]], [[0.0, 0.0]]]), np.ones((1, 2)))
    for _ in range(40):
        model = hme.em_step(model, x, y)
    lines = model.experts[:, 0, :].T  # (J, D): slope, intercept
    np.testing.assert_allclose(lines[np.argsort(-lines[:, 0])], [[3.0, 2.0], [-2.0, -1.0]], atol=0.1)
    np.testing.assert_allclose(np.sqrt(model.variances), 0.1, atol=0.02)
    assert np.abs(hme.predict(model, x) - np.where(u < 0, 3 * u + 2, -2 * u - 1)).mean() < 0.1


def test_shapes_that_do_not_fit_are_named(rng):
    model, x, y = random_model(rng), np.c_[rng.standard_normal((6, 2)), np.ones(6)], rng.standard_normal(6)
    with pytest.raises(ValueError, match=r"x has shape \(6, 2\).*\(N, 3\)"):
        hme.em_step(model, x[:, :2], y)
    with pytest.raises(ValueError, match=r"y has shape \(5,\)"):
        hme.log_likelihood(model, x, y[:5])
    with pytest.raises(ValueError, match="HME.variances has shape"):
        hme.em_step(hme.HME(model.top_gate, model.nested_gates, model.experts, np.ones(3)), x, y)


def test_leaf_priors_sum_to_one(rng):
    model = random_model(rng)
    priors = hme.leaf_priors(model, np.c_[rng.standard_normal((4, 2)), np.ones(4)])
    assert priors.shape == (4, 2, 3)
    np.testing.assert_allclose(priors.sum(axis=(1, 2)), 1.0)
