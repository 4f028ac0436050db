"""The balancing losses and the router z-loss on hand-computed cases from their papers
(docs/formulas.md §4, §6, §9, §11, §16), and the auxiliary-loss-free bias update."""
import math

import numpy as np
import pytest

import minimoe as mm
from minimoe.moe import MoE, MoEConfig, losses


def t(values, requires_grad=False):
    return mm.tensor(values, dtype=np.float64, requires_grad=requires_grad)


def idx(values):
    return np.asarray(values, dtype=np.int64)


# ---- Switch (Fedus et al. 2021, eq. 4-6) -------------------------------------------------------
def test_switch_loss_is_one_for_a_perfectly_balanced_batch():
    probs = t(np.full((4, 4), 0.25))
    assert losses.switch_balance_loss(probs, idx([[0], [1], [2], [3]]), 4).item() == pytest.approx(1.0, abs=1e-12)


def test_switch_loss_on_a_skewed_batch_and_its_gradient_goes_through_p_only():
    # T=4, N=2: every token picks expert 0 (f = [1, 0]); P = mean p = [0.7, 0.3]; loss = 2 * 0.7
    probs = t([[0.9, 0.1], [0.7, 0.3], [0.6, 0.4], [0.6, 0.4]], requires_grad=True)
    loss = losses.switch_balance_loss(probs, idx([[0], [0], [0], [0]]), 2)
    assert loss.item() == pytest.approx(1.4, abs=1e-12)
    loss.backward()
    np.testing.assert_allclose(probs.grad, np.tile([2 * 1.0 / 4, 0.0], (4, 1)))  # N * f_i / T


def test_switch_loss_counts_all_k_choices_for_top2():
    # f over the 2T assignments: expert 0 gets 3 of 4, expert 1 gets 1; P = [0.5, 0.5] -> 2 * 0.5 = 1
    probs = t([[0.5, 0.5], [0.5, 0.5]])
    assert losses.switch_balance_loss(probs, idx([[0, 1], [0, 0]]), 2).item() == pytest.approx(1.0)
    # P skewed: 2 * (0.75 * 0.8 + 0.25 * 0.2) = 1.3
    probs = t([[0.8, 0.2], [0.8, 0.2]])
    assert losses.switch_balance_loss(probs, idx([[0, 1], [0, 0]]), 2).item() == pytest.approx(1.3)


# ---- GShard's auxiliary loss as the paper writes it (Lepikhin et al. 2020, §2.2, Algorithm 1) ---
GSHARD_PROBS = [[0.6, 0.3, 0.1], [0.5, 0.1, 0.4], [0.2, 0.7, 0.1], [0.1, 0.2, 0.7]]  # S = 4 tokens, E = 3
GSHARD_TOP2 = [[0, 1], [0, 2], [1, 0], [2, 1]]


def test_gshard_loss_counts_first_choices_only_on_a_hand_case():
    # first choices 0, 0, 1, 2: c / S = [1/2, 1/4, 1/4]; m = column means = [0.35, 0.325, 0.325]
    # (1/E) sum_e (c_e/S) m_e = (0.175 + 0.08125 + 0.08125) / 3 = 0.1125
    loss = losses.gshard_balance_loss(t(GSHARD_PROBS), idx(GSHARD_TOP2), 3)
    assert loss.item() == pytest.approx(0.1125, abs=1e-15)
    # the library's top-k form counts all 8 assignments, f = [3/8, 3/8, 2/8]: 3 * 0.334375
    assert losses.switch_balance_loss(t(GSHARD_PROBS), idx(GSHARD_TOP2), 3).item() == pytest.approx(1.003125)
    second_changed = idx([[0, 2], [0, 1], [1, 2], [2, 0]])  # other second choices: the same loss
    assert losses.gshard_balance_loss(t(GSHARD_PROBS), second_changed, 3).item() == loss.item()


@pytest.mark.parametrize("n_experts, k", [(4, 1), (8, 2), (5, 3)])
def test_gshard_loss_is_one_over_e_squared_under_uniform_routing(n_experts, k):
    probs = t(np.full((4 * n_experts, n_experts), 1 / n_experts))
    index = (np.arange(4 * n_experts)[:, None] + np.arange(k)) % n_experts  # round robin: even counts
    value = losses.gshard_balance_loss(probs, index, n_experts).item()
    assert value == pytest.approx(1 / n_experts**2, rel=1e-12)


def test_gshard_loss_times_e_squared_is_the_switch_loss_of_the_first_choices():
    probs = mm.functional.softmax(t(np.random.default_rng(5).standard_normal((20, 6)) * 2))
    index = np.argsort(-probs.numpy(), axis=1, kind="stable")[:, :2]
    gshard = losses.gshard_balance_loss(probs, index, 6).item()
    assert gshard * 36 == pytest.approx(losses.switch_balance_loss(probs, index[:, :1], 6).item(), rel=1e-12)


def test_gshard_loss_gradient_goes_through_m_only_and_matches_finite_differences():
    probs = t(GSHARD_PROBS, requires_grad=True)
    losses.gshard_balance_loss(probs, idx(GSHARD_TOP2), 3).backward()
    # d/dp[s, e] = (1/E) (c_e/S) (1/S): [1/24, 1/48, 1/48] for every token
    np.testing.assert_allclose(probs.grad, np.tile([1 / 24, 1 / 48, 1 / 48], (4, 1)), rtol=1e-12)
    logits = np.random.default_rng(6).standard_normal((7, 4)) * 2
    index = np.argsort(-logits, axis=1, kind="stable")[:, :2]  # fixed: the counts have no gradient
    mm.assert_gradcheck(lambda z: losses.gshard_balance_loss(mm.functional.softmax(z), index, 4), [logits])


def test_gshard_loss_keeps_float32():
    probs = mm.tensor(np.full((6, 3), 1 / 3), dtype=np.float32)
    assert losses.gshard_balance_loss(probs, idx([[0], [1], [2], [0], [1], [2]]), 3).dtype == np.float32


@pytest.mark.parametrize("router", ["gshard", "switch", "topk"])
def test_layer_with_the_gshard_loss_adds_coef_times_the_paper_form(router):
    mm.manual_seed(3)
    layer = MoE(MoEConfig(d_model=4, n_experts=4, top_k=2, expert_hidden=5, router=router,
                          balance_loss="gshard", balance_coef=0.5))
    layer.router.weight.data *= 40  # uneven routing, so that the forms differ
    x = mm.randn(12, 4)
    layer(x)
    routing = layer.router(x)
    expected = losses.gshard_balance_loss(routing.probs, routing.expert_index, 4).item()
    assert layer.report.losses["balance"] == pytest.approx(expected, rel=1e-6)
    assert layer.aux_loss.item() == pytest.approx(0.5 * expected, rel=1e-6)


@pytest.mark.parametrize("router, balance", [("switch", "switch"), ("topk", "switch"), ("deepseek", "deepseek_sequence")])
def test_layer_aux_loss_equals_alpha_under_uniform_routing(router, balance):
    alpha = 0.01
    layer = MoE(MoEConfig(d_model=4, n_experts=4, top_k=2, expert_hidden=5, router=router,
                          balance_loss=balance, balance_coef=alpha))
    layer.router.weight.data = np.zeros_like(layer.router.weight.data)  # every expert scores the same
    layer(mm.randn(2, 6, 4))
    assert layer.aux_loss.item() == pytest.approx(alpha, rel=1e-6)


# ---- ST-MoE router z-loss (Zoph et al. 2022, eq. 5) --------------------------------------------
def test_z_loss_of_zero_logits_is_log_e_squared():
    assert losses.z_loss(t(np.zeros((3, 8)))).item() == pytest.approx(math.log(8) ** 2)


def test_z_loss_is_the_mean_squared_logsumexp():
    logits = [[1.0, -2.0, 0.5], [3.0, 3.0, -1.0]]
    expected = np.mean([math.log(sum(math.exp(v) for v in row)) ** 2 for row in logits])
    assert losses.z_loss(t(logits)).item() == pytest.approx(expected, rel=1e-12)


def test_z_loss_does_not_overflow_on_huge_logits():
    assert losses.z_loss(t([[1000.0, 0.0]])).item() == pytest.approx(1000.0 ** 2)


def test_z_loss_in_the_layer_is_scaled_by_its_coefficient():
    layer = MoE(MoEConfig(d_model=4, n_experts=4, expert_hidden=5, balance_loss=None, z_loss_coef=1e-3))
    layer.router.weight.data = np.zeros_like(layer.router.weight.data)
    layer(mm.randn(5, 4))
    assert layer.aux_loss.item() == pytest.approx(1e-3 * math.log(4) ** 2, rel=1e-6)
    assert layer.report.losses["z"] == pytest.approx(math.log(4) ** 2, rel=1e-6)


# ---- Shazeer et al. 2017: CV^2 of importance and load ------------------------------------------
def test_cv_squared_uses_the_population_variance():
    assert losses.cv_squared(t([1.0, 2.0, 3.0, 4.0])).item() == pytest.approx(1.25 / 2.5 ** 2)  # 0.2, not 0.267
    assert losses.cv_squared(t([2.0, 2.0, 2.0])).item() == 0.0
    assert losses.cv_squared(t([0.0, 0.0, 3.0])).item() == pytest.approx(2.0)


def test_importance_loss_on_hand_made_gates():
    # Importance = [0.6+0.7+0.5, 0.4+0.5, 0.3] = [1.8, 0.9, 0.3]; mean 1, population variance 0.38
    gates = t([[0.6, 0.4], [0.7, 0.3], [0.5, 0.5]])
    index = idx([[0, 1], [0, 2], [1, 0]])
    assert losses.importance_loss(gates, index, 3).item() == pytest.approx(0.38, rel=1e-9)


def test_load_loss_on_hand_made_smooth_loads():
    # Load = column sums = [1.0, 2.0, 3.0]; CV^2 = (2/3) / 4
    smooth = t([[0.5, 1.0, 1.0], [0.25, 0.5, 1.0], [0.25, 0.5, 1.0]])
    assert losses.load_loss(smooth).item() == pytest.approx((2 / 3) / 4, rel=1e-9)


def test_layer_with_importance_and_load_losses_adds_both():
    mm.manual_seed(3)
    layer = MoE(MoEConfig(d_model=4, n_experts=4, top_k=2, expert_hidden=5, router="noisy_topk",
                          balance_loss="importance_load", balance_coef=0.1))
    layer.router.weight.data = np.random.default_rng(0).normal(size=(4, 4)).astype(np.float32)
    layer(mm.randn(8, 4))
    found = layer.report.losses
    assert set(found) == {"importance", "load"}
    assert layer.aux_loss.item() == pytest.approx(0.1 * (found["importance"] + found["load"]), rel=1e-5)
    layer.eval()
    layer(mm.randn(8, 4))
    assert set(layer.report.losses) == {"importance"}  # no noise, no smooth load estimate


# ---- DeepSeek-V3 sequence-wise loss (eqs. 17-20) -----------------------------------------------
def test_deepseek_sequence_loss_is_one_under_uniform_routing():
    probs = t(np.full((2, 4, 4), 0.25))
    index = idx([[[0, 1], [2, 3], [0, 1], [2, 3]], [[0, 2], [1, 3], [0, 3], [1, 2]]])
    assert losses.deepseek_sequence_loss(probs, index, 4, 2).item() == pytest.approx(1.0)


def test_deepseek_sequence_loss_on_a_skewed_sequence():
    # one sequence, T=2, N=2, k=1, both tokens to expert 0: f = 2/(1*2) * [2, 0] = [2, 0];
    # P = mean s' = [0.7, 0.3]; loss = 2 * 0.7
    probs = t([[[0.8, 0.2], [0.6, 0.4]]])
    assert losses.deepseek_sequence_loss(probs, idx([[[0], [0]]]), 2, 1).item() == pytest.approx(1.4)


def test_deepseek_sequence_loss_is_per_sequence_not_per_batch():
    # sequence 1 sends everything to expert 0, sequence 2 to expert 1: balanced over the batch,
    # but each sequence on its own is collapsed (loss 1.8 each, 1.8 on average; batch-wise 1.0)
    probs = t([[[0.9, 0.1], [0.9, 0.1]], [[0.1, 0.9], [0.1, 0.9]]])
    index = idx([[[0], [0]], [[1], [1]]])
    assert losses.deepseek_sequence_loss(probs, index, 2, 1).item() == pytest.approx(1.8)
    whole_batch = losses.deepseek_sequence_loss(probs.reshape(1, 4, 2), index.reshape(1, 4, 1), 2, 1)
    assert whole_batch.item() == pytest.approx(1.0)


def test_deepseek_sequence_loss_counts_the_unbiased_top_k():
    """Eq. 18 counts s_it in TopK(s_t): a bias that steers every token elsewhere leaves f alone."""
    layer = MoE(MoEConfig(d_model=2, n_experts=2, top_k=1, expert_hidden=3, router="deepseek",
                          balance_loss="deepseek_sequence", balance_coef=1.0))
    layer.router.weight.data = np.array([[2.0, -2.0], [0.0, 0.0]], dtype=np.float32)
    layer.router.expert_bias.data = np.array([0.0, 5.0], dtype=np.float32)
    x = mm.tensor(np.array([[1.0, 0.0], [1.0, 0.0]], dtype=np.float32))
    layer(x)
    assert (layer.report.expert_index == 1).all()  # the bias moved both tokens to expert 1
    s = 1 / (1 + np.exp(-np.array([2.0, -2.0])))
    expected = 2 * s[0] / s.sum()  # f = [2, 0] from the unbiased top-1 (expert 0); P = s'
    assert layer.aux_loss.item() == pytest.approx(expected, rel=1e-5)


# ---- DeepSeek-V3 auxiliary-loss-free bias update ------------------------------------------------
def test_bias_update_lowers_overloaded_and_raises_underloaded_experts():
    bias = np.array([0.0, 0.1, 0.0, -0.2])
    load = np.array([5, 1, 2, 0])  # mean 2: expert 0 over, 1 and 3 under, 2 exactly even
    updated = losses.aux_free_bias_update(bias, load, 0.01)
    np.testing.assert_allclose(updated, bias + 0.01 * np.array([-1, 1, 0, 1]))
    np.testing.assert_array_equal(bias, [0.0, 0.1, 0.0, -0.2])  # a new array; the input is untouched


def test_report_mean_logsumexp_is_what_the_z_loss_squares():
    mm.manual_seed(0)
    layer = MoE(MoEConfig(d_model=4, n_experts=3, top_k=2, expert_hidden=5, z_loss_coef=1e-3))
    x = mm.tensor(np.random.default_rng(1).standard_normal((7, 4)))
    layer(x)
    logits = x.numpy() @ layer.router.weight.numpy()
    lse = np.log(np.exp(logits).sum(axis=1))
    assert layer.report.mean_logsumexp == pytest.approx(lse.mean(), rel=1e-5)
    assert layer.report.losses["z"] == pytest.approx((lse**2).mean(), rel=1e-5)
