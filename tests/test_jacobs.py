"""The 1991 mixture of local experts (minimoe/models/jacobs.py): eqs. 1.1 and 1.3 of Jacobs et al.
on hand-computed cases, their gradients by finite differences in float64, the posterior and the
gate gradient p - h, and the LinearMixture's shapes. EM for the same model is tested in test_hme.py."""
import math

import numpy as np
import pytest

import minimoe as mm
from minimoe import gradcheck
from minimoe.models import jacobs


def t(values, requires_grad=False):
    return mm.tensor(np.asarray(values, dtype=np.float64), dtype=np.float64, requires_grad=requires_grad)


def one_case():
    """One case, two experts, p = [0.5, 0.5]: expert 0 hits the target, expert 1 is off by 2."""
    return t([[0.0, 0.0]]), t([[[0.0], [2.0]]]), t([[0.0]])


def test_competitive_loss_by_hand():
    # eq. 1.3: -log(0.5 e^0 + 0.5 e^{-4/2})
    assert jacobs.competitive_loss(*one_case()).item() == pytest.approx(-math.log(0.5 + 0.5 * math.exp(-2.0)))


def test_cooperative_loss_by_hand():
    # eq. 1.1: the blend is 0.5 * 0 + 0.5 * 2 = 1, so the error is (0 - 1)^2
    assert jacobs.cooperative_loss(*one_case()).item() == pytest.approx(1.0)


def test_competitive_loss_with_one_expert_is_half_the_squared_error():
    outputs, targets = t([[[1.0, 2.0]], [[0.0, -1.0]]]), t([[0.0, 0.0], [3.0, 1.0]])
    loss = jacobs.competitive_loss(t(np.zeros((2, 1))), outputs, targets).item()
    assert loss == pytest.approx((0.5 * 5 + 0.5 * 13) / 2)


def test_competitive_loss_is_finite_when_every_expert_is_far_off():
    # errors^2 / 2 = 800 and 1250: exp(-800) underflows, the log-sum-exp does not
    loss = jacobs.competitive_loss(t([[0.0, 0.0]]), t([[[40.0], [50.0]]]), t([[0.0]])).item()
    assert loss == pytest.approx(800 + math.log(2))


def test_posterior_by_hand_and_rows_sum_to_one(rng):
    h = jacobs.posterior(*one_case()).numpy()
    np.testing.assert_allclose(h, [[1 / (1 + math.exp(-2)), math.exp(-2) / (1 + math.exp(-2))]])
    h = jacobs.posterior(t(rng.standard_normal((5, 3))), t(rng.standard_normal((5, 3, 2))),
                         t(rng.standard_normal((5, 2)))).numpy()
    np.testing.assert_allclose(h.sum(axis=1), 1.0)


@pytest.mark.parametrize("loss", [jacobs.competitive_loss, jacobs.cooperative_loss])
def test_losses_gradcheck_in_float64(loss, rng):
    inputs = [rng.standard_normal((4, 3)), rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 2))]
    result = gradcheck(loss, inputs)
    assert result.ok, str(result)


def test_posterior_gradcheck_in_float64(rng):
    inputs = [rng.standard_normal((4, 3)), rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 2))]
    result = gradcheck(jacobs.posterior, inputs)
    assert result.ok, str(result)


def test_gate_gradient_is_p_minus_h_and_expert_gradient_is_eq_1_5(rng):
    scores, outputs, targets = t(rng.standard_normal((4, 3)), True), t(rng.standard_normal((4, 3, 2)), True), \
        t(rng.standard_normal((4, 2)))
    jacobs.competitive_loss(scores, outputs, targets).backward()
    p = mm.functional.softmax(scores).numpy()
    h = jacobs.posterior(scores, outputs, targets).numpy()
    np.testing.assert_allclose(scores.grad, (p - h) / 4, atol=1e-12)
    # eq. 1.5: dE/do_i = -h_i (d - o_i), here for the mean over 4 cases
    expected = -h[:, :, None] * (targets.numpy()[:, None, :] - outputs.numpy()) / 4
    np.testing.assert_allclose(outputs.grad, expected, atol=1e-12)


def test_linear_mixture_starts_uniform_and_has_the_documented_shapes():
    mm.manual_seed(0)
    model = jacobs.LinearMixture(5)
    scores, outputs = model(mm.tensor(np.linspace(-1, 1, 7)[:, None]))  # float32, like the parameters
    assert scores.shape == (7, 5) and outputs.shape == (7, 5, 1)
    np.testing.assert_allclose(mm.functional.softmax(scores).numpy(), 0.2)
    np.testing.assert_allclose(outputs.numpy()[:, :, 0],
                               np.linspace(-1, 1, 7)[:, None] * model.slope.numpy() + model.intercept.numpy(),
                               rtol=1e-6)
