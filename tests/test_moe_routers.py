"""Every router on a hand-computed case from its paper, against NumPy and Python math."""
import math

import numpy as np
import pytest

import minimoe as mm
from minimoe.moe import MoE, MoEConfig, SoftMoE
from minimoe.moe.routers import (
    DeepSeekV3Router,
    DenseRouter,
    ExpertChoiceRouter,
    GShardRouter,
    HashRouter,
    NoisyTopKRouter,
    SwitchRouter,
    TopKRouter,
)
from minimoe.moe.routers.hash import frequency_balanced_table, shuffled_round_robin_table
from minimoe.rng import device_rng


def f64(array):
    return mm.tensor(array, dtype=np.float64)


def with_weights(router, **weights):
    """The router with float64 weights set by name (its `weight`, `noise_weight`, ...)."""
    for name, value in weights.items():
        getattr(router, name).data = np.asarray(value, dtype=np.float64)
    return router


def softmax(z, axis=-1):
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def sigmoid(z):
    return 1 / (1 + np.exp(-z))


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(6, 4)), rng.normal(size=(4, 5))  # x (T, d), W (d, E)


# ---- dense and top-k softmax gating --------------------------------------------------------------
def test_dense_router_weights_every_expert_by_the_softmax(data):
    x, w = data
    routing = with_weights(DenseRouter(4, 5), weight=w)(f64(x))
    np.testing.assert_allclose(routing.gates.data, softmax(x @ w), rtol=1e-12)
    np.testing.assert_array_equal(routing.expert_index, np.tile(np.arange(5), (6, 1)))


def test_softmax_then_topk_renormalises_the_kept_probabilities(data):
    x, w = data
    routing = with_weights(TopKRouter(4, 5, 2), weight=w)(f64(x))
    p = softmax(x @ w)
    top = np.argsort(-p, axis=-1)[:, :2]
    np.testing.assert_array_equal(routing.expert_index, top)
    kept = np.take_along_axis(p, top, axis=-1)
    np.testing.assert_allclose(routing.gates.data, kept / kept.sum(-1, keepdims=True), rtol=1e-12)
    np.testing.assert_allclose(routing.gates.data.sum(-1), 1.0, rtol=1e-12)


def test_without_renormalising_the_gates_are_the_probabilities_and_sum_below_one(data):
    x, w = data
    routing = with_weights(TopKRouter(4, 5, 2, renormalize=False), weight=w)(f64(x))
    p = softmax(x @ w)
    np.testing.assert_allclose(routing.gates.data, np.sort(p, axis=-1)[:, ::-1][:, :2], rtol=1e-12)
    assert (routing.gates.data.sum(-1) < 1).all()


@pytest.mark.parametrize("k", [2, 3])
def test_softmax_then_topk_equals_topk_then_softmax_in_values_and_gradients(data, k):
    x, w = data
    probe = np.random.default_rng(1).normal(size=(6, k))
    results = []
    for order in TopKRouter.ORDERS:
        router = with_weights(TopKRouter(4, 5, k, order=order), weight=w)
        xt = mm.tensor(x, dtype=np.float64, requires_grad=True)
        routing = router(xt)
        (routing.gates * f64(probe)).sum().backward()
        results.append((routing.expert_index, routing.gates.data, xt.grad, router.weight.grad))
    (index_a, gates_a, gx_a, gw_a), (index_b, gates_b, gx_b, gw_b) = results
    np.testing.assert_array_equal(index_a, index_b)
    np.testing.assert_allclose(gates_a, gates_b, rtol=1e-12)
    np.testing.assert_allclose(gx_a, gx_b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(gw_a, gw_b, rtol=1e-9, atol=1e-12)


def test_switch_gate_is_the_unrenormalised_top_probability(data):
    x, w = data
    routing = with_weights(SwitchRouter(4, 5), weight=w)(f64(x))
    p = softmax(x @ w)
    np.testing.assert_array_equal(routing.expert_index[:, 0], p.argmax(-1))
    np.testing.assert_allclose(routing.gates.data[:, 0], p.max(-1), rtol=1e-12)


def test_switch_jitter_only_in_training(data):
    x, w = data
    router = with_weights(SwitchRouter(4, 5, jitter=0.5), weight=w)
    mm.manual_seed(0)
    jittered = router(f64(x)).gates.data
    assert not np.allclose(jittered[:, 0], softmax(x @ w).max(-1))
    router.eval()
    np.testing.assert_allclose(router(f64(x)).gates.data[:, 0], softmax(x @ w).max(-1), rtol=1e-12)


# ---- noisy top-k (Shazeer et al. 2017) --------------------------------------------------------------
def test_noisy_topk_smooth_load_matches_a_direct_computation():
    """P(x, i) = Phi((clean_i - kth_excluding(H, k, i)) / std_i), App. A eq. 9, with math.erf."""
    rng = np.random.default_rng(2)
    t, d, e, k = 5, 3, 4, 2
    w, w_noise, x = rng.normal(size=(d, e)), rng.normal(size=(d, e)), rng.normal(size=(t, d))
    router = with_weights(NoisyTopKRouter(d, e, k), weight=w, noise_weight=w_noise)
    mm.manual_seed(11)
    routing = router(f64(x))
    mm.manual_seed(11)
    eps = device_rng(np).standard_normal((t, e), dtype=np.float64)  # the same draw as the router's
    clean, std = x @ w, np.log1p(np.exp(x @ w_noise))
    noisy = clean + eps * std
    expected = np.empty((t, e))
    for token in range(t):
        for i in range(e):
            kth_excluding = sorted(np.delete(noisy[token], i), reverse=True)[k - 1]
            z = (clean[token, i] - kth_excluding) / std[token, i]
            expected[token, i] = 0.5 * (1 + math.erf(z / math.sqrt(2)))
    np.testing.assert_allclose(router.smooth_load.data, expected, atol=1e-6)
    top = np.argsort(-noisy, axis=-1)[:, :k]
    np.testing.assert_array_equal(routing.expert_index, top)
    np.testing.assert_allclose(routing.gates.data, softmax(np.take_along_axis(noisy, top, -1)), rtol=1e-12)


def test_noisy_topk_has_no_noise_in_evaluation(data):
    x, w = data
    router = with_weights(NoisyTopKRouter(4, 5, 2), weight=w).eval()
    routing = router(f64(x))
    top = np.argsort(-(x @ w), axis=-1)[:, :2]
    np.testing.assert_array_equal(routing.expert_index, top)
    np.testing.assert_allclose(routing.gates.data, softmax(np.take_along_axis(x @ w, top, -1)), rtol=1e-12)
    assert router.smooth_load is None


def test_noisy_topk_starts_at_zero_weights():
    router = NoisyTopKRouter(4, 5, 2)
    assert not router.weight.data.any() and not router.noise_weight.data.any()  # App. A


# ---- GShard top-2 with random routing -----------------------------------------------------------------
def test_gshard_gates_are_the_renormalised_top2(data):
    x, w = data
    routing = with_weights(GShardRouter(4, 5), weight=w).eval()(f64(x))
    p = np.sort(softmax(x @ w), axis=-1)[:, ::-1][:, :2]
    np.testing.assert_allclose(routing.gates.data, p / p.sum(-1, keepdims=True), rtol=1e-12)
    assert routing.keep is None  # no random routing in evaluation


def test_gshard_keeps_the_second_expert_with_probability_2_g2():
    rng = np.random.default_rng(3)
    router = with_weights(GShardRouter(4, 4), weight=rng.normal(size=(4, 4)))
    mm.manual_seed(5)
    routing = router(f64(rng.normal(size=(4000, 4))))
    g2 = routing.gates.data[:, 1]
    assert routing.keep[:, 0].all()
    expected = np.minimum(1, 2 * g2).mean()
    assert 0.3 < expected < 0.9  # a case where the test can tell
    assert routing.keep[:, 1].mean() == pytest.approx(expected, abs=0.025)  # ~3 standard errors


# ---- DeepSeek-V3 ----------------------------------------------------------------------------------------
def test_deepseek_bias_changes_the_choice_but_not_the_gate_values():
    logits = np.array([2.0, 1.0, 0.0, -1.0])
    router = with_weights(DeepSeekV3Router(2, 4, 2, scaling=2.5), weight=[logits, np.zeros(4)])
    x = f64([[1.0, 0.0]])
    s = sigmoid(logits)
    routing = router(x)
    np.testing.assert_array_equal(routing.expert_index, [[0, 1]])
    np.testing.assert_allclose(routing.gates.data, [[2.5 * s[0] / (s[0] + s[1]), 2.5 * s[1] / (s[0] + s[1])]])
    router.expert_bias.data = np.array([0.0, 0.0, 0.0, 3.0])
    routing = router(x)
    np.testing.assert_array_equal(routing.expert_index, [[3, 0]])  # s + b = [.88, .73, .5, 3.27]
    np.testing.assert_allclose(routing.gates.data, [[2.5 * s[3] / (s[3] + s[0]), 2.5 * s[0] / (s[3] + s[0])]])
    np.testing.assert_allclose(routing.probs.data, [s / s.sum()])  # s' of eq. 19, unbiased


def test_deepseek_top1_gate_is_the_affinity_by_default_and_one_under_eq_13():
    logits = np.array([[0.5, -1.0, 2.0], [1.0, 0.0, -0.5]])
    x = f64(np.eye(2))
    default = with_weights(DeepSeekV3Router(2, 3, 1), weight=logits)(x)
    np.testing.assert_array_equal(default.expert_index[:, 0], [2, 0])
    np.testing.assert_allclose(default.gates.data[:, 0], sigmoid(np.array([2.0, 1.0])), rtol=1e-12)
    paper = with_weights(DeepSeekV3Router(2, 3, 1, normalize_top1=True, scaling=2.5), weight=logits)(x)
    np.testing.assert_allclose(paper.gates.data, 2.5)  # eq. 13: s / s = 1, times the scaling
    # the constant gate is the top-1 trap: the task loss sends the router no gradient
    router = with_weights(DeepSeekV3Router(2, 3, 1, normalize_top1=True), weight=logits)
    (router(x).gates * 3.0).sum().backward()
    np.testing.assert_allclose(router.weight.grad, 0.0, atol=1e-12)


def test_deepseek_bias_gets_no_gradient():
    rng = np.random.default_rng(4)
    router = with_weights(DeepSeekV3Router(3, 4, 2), weight=rng.normal(size=(3, 4)))
    router(f64(rng.normal(size=(5, 3)))).gates.sum().backward()
    assert router.expert_bias.grad is None and router.weight.grad is not None


def test_group_limited_routing_picks_only_from_the_best_groups():
    # groups {0, 1} and {2, 3}. Plain top-2 would be {0, 2}; group scores (sum of the best two):
    # s0 + s1 = 1.0 < s2 + s3 = 1.61, so both experts come from the second group
    logits = np.array([3.0, -3.0, 2.0, 1.0])
    router = with_weights(DeepSeekV3Router(2, 4, 2, n_groups=2, topk_groups=1), weight=[logits, np.zeros(4)])
    routing = router(f64([[1.0, 0.0]]))
    np.testing.assert_array_equal(routing.expert_index, [[2, 3]])
    s = sigmoid(logits)
    np.testing.assert_allclose(routing.gates.data, [[s[2] / (s[2] + s[3]), s[3] / (s[2] + s[3])]])


def test_group_limited_routing_on_random_tokens():
    rng = np.random.default_rng(5)
    router = with_weights(DeepSeekV3Router(4, 8, 3, n_groups=4, topk_groups=2), weight=rng.normal(size=(4, 8)))
    router.expert_bias.data = rng.normal(scale=0.3, size=8)
    x = rng.normal(size=(50, 4))
    routing = router(f64(x))
    choice = (sigmoid(x @ router.weight.data) + router.expert_bias.data).reshape(50, 4, 2)
    best_groups = np.argsort(-np.sort(choice, -1)[:, :, -2:].sum(-1), axis=-1)[:, :2]  # (T, 2)
    for token in range(50):
        allowed = set(best_groups[token])
        assert {int(i) // 2 for i in routing.expert_index[token]} <= allowed
        candidates = [(choice[token, g, j], 2 * g + j) for g in allowed for j in range(2)]
        assert set(routing.expert_index[token]) == {i for _, i in sorted(candidates, reverse=True)[:3]}


# ---- hash routing (Roller et al. 2021) ----------------------------------------------------------------
def test_hash_routing_without_counts_is_a_fixed_round_robin_over_the_vocabulary():
    router = HashRouter(vocab_size=10, n_experts=4)
    counts = np.bincount(router.table, minlength=4)
    assert counts.sum() == 10 and set(counts) <= {2, 3}  # V/E = 2.5, each expert owns 2 or 3 ids
    np.testing.assert_array_equal(HashRouter(10, 4).table, router.table)  # same in every instance
    np.testing.assert_array_equal(shuffled_round_robin_table(10, 4), router.table)
    ids = np.array([[3, 7, 3], [0, 9, 1]])
    routing = router(f64(np.zeros((6, 2))), token_ids=ids)
    np.testing.assert_array_equal(routing.expert_index[:, 0], router.table[ids.reshape(-1)])
    np.testing.assert_array_equal(routing.gates.data, 1.0)


def test_frequency_balanced_table_on_a_hand_case():
    # Roller et al.'s balanced assignment: most frequent first, each to the expert with the least text.
    # counts 5, 4, 3, 2, 1, 1 (ids 0..5), 2 experts:
    #   id 0 (5) -> expert 0, loads 5/0;   id 1 (4) -> 1, 5/4;   id 2 (3) -> 1, 5/7;   id 3 (2) -> 0, 7/7;
    #   id 4 (1): tie in load, tie in types (2 each) -> lower index 0, 8/7;   id 5 (1) -> 1, 8/8
    table = frequency_balanced_table([5, 4, 3, 2, 1, 1], 2)
    np.testing.assert_array_equal(table, [0, 1, 1, 0, 0, 1])
    # unseen ids (count 0) go where fewer types are, not all to expert 0: ids 1 and 3 (6 each) -> 0, 1;
    # then id 0 -> 0 (loads and types tie: lower index), id 2 -> 1 (fewer types)
    np.testing.assert_array_equal(frequency_balanced_table([0, 6, 0, 6], 2), [0, 0, 1, 1])
    np.testing.assert_array_equal(frequency_balanced_table([0, 0, 0, 0, 0], 2), [0, 1, 0, 1, 0])


def test_frequency_balanced_table_beats_the_round_robin_on_skewed_text():
    rng = np.random.default_rng(3)
    counts = np.round(1000 / np.arange(1, 41) ** 1.1).astype(int)  # a Zipf-like vocabulary of 40 ids
    counts = counts[rng.permutation(40)]
    def max_over_mean(table):
        load = np.bincount(table, weights=counts, minlength=8)
        return load.max() / load.mean()
    balanced, round_robin = frequency_balanced_table(counts, 8), shuffled_round_robin_table(40, 8)
    assert max_over_mean(balanced) < max_over_mean(round_robin)
    # the greedy fill is within one token's count of the mean, or the busiest expert holds one token only
    load = np.bincount(balanced, weights=counts, minlength=8)
    busiest = load.argmax()
    assert load[busiest] - load.mean() <= counts[balanced == busiest].min() or (balanced == busiest).sum() == 1


def test_hash_router_with_token_counts_uses_the_balanced_table():
    counts = [5, 4, 3, 2, 1, 1]
    router = HashRouter(vocab_size=6, n_experts=2, token_counts=counts)
    np.testing.assert_array_equal(router.table, [0, 1, 1, 0, 0, 1])
    routing = router(f64(np.zeros((3, 2))), token_ids=np.array([2, 0, 5]))
    np.testing.assert_array_equal(routing.expert_index[:, 0], [1, 0, 1])


@pytest.mark.parametrize("counts, message", [
    ([1, 2], r"token_counts has 2 entries for a vocabulary of 3"),
    ([1, -2, 3], r"token_counts must be finite counts >= 0"),
    ([1, np.nan, 3], r"token_counts must be finite counts >= 0"),
])
def test_hash_router_refuses_bad_counts(counts, message):
    with pytest.raises(ValueError, match=message):
        HashRouter(vocab_size=3, n_experts=2, token_counts=counts)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_hash_router_stops_on_a_non_finite_input(bad):
    x = np.zeros((3, 2))
    x[1, 0] = bad
    with pytest.raises(ValueError, match="hash router input contains NaN or infinity"):
        HashRouter(vocab_size=4, n_experts=2)(f64(x), token_ids=np.array([0, 1, 2]))


def test_hash_layer_routes_equal_ids_to_equal_experts():
    layer = MoE(MoEConfig(d_model=4, n_experts=4, expert_hidden=5, router="hash", vocab_size=12, balance_loss=None))
    ids = np.array([[5, 5, 2, 11], [2, 0, 5, 7]])
    layer(mm.randn(2, 4, 4), token_ids=ids)
    np.testing.assert_array_equal(layer.report.expert_index[..., 0], layer.router.table[ids])


# ---- expert choice (Zhou et al. 2022) --------------------------------------------------------------------
@pytest.mark.parametrize("t, c, capacity", [(8, 2.0, 4), (10, 1.0, 3), (10, 2.0, 5)])
def test_expert_choice_gives_every_expert_exactly_its_capacity(t, c, capacity):
    rng = np.random.default_rng(6)
    x, w = rng.normal(size=(t, 4)), rng.normal(size=(4, 4))
    routing = with_weights(ExpertChoiceRouter(4, 4, c), weight=w)(f64(x))
    assert routing.token_index.shape == (4, capacity)  # C = ceil(T * c / E)
    p = softmax(x @ w)
    for e in range(4):
        np.testing.assert_array_equal(routing.token_index[e], np.argsort(-p[:, e])[:capacity])  # its top-C tokens
        np.testing.assert_allclose(routing.gates.data[e], p[routing.token_index[e], e], rtol=1e-12)


def test_expert_choice_gives_c_experts_per_token_on_average():
    rng = np.random.default_rng(7)
    routing = with_weights(ExpertChoiceRouter(4, 4, 2.0), weight=rng.normal(size=(4, 4)) * 3)(f64(rng.normal(size=(12, 4))))
    per_token = np.bincount(routing.token_index.reshape(-1), minlength=12)
    assert per_token.mean() == 2.0
    assert per_token.min() < 2 < per_token.max()  # some tokens get more, some fewer


# ---- Soft MoE (Puigcerver et al. 2023) ---------------------------------------------------------------------
@pytest.fixture
def soft():
    mm.manual_seed(8)
    layer = SoftMoE(4, 3, 5, slots_per_expert=2)
    for p in layer.parameters():
        p.data = p.data.astype(np.float64)
    return layer


def test_soft_moe_dispatch_and_combine_weights(soft):
    x = np.random.default_rng(9).normal(size=(2, 5, 4))
    dispatch, combine, logits = soft.weights(f64(x))
    np.testing.assert_allclose(dispatch.data.sum(axis=1), 1.0, rtol=1e-12)  # each slot: over tokens
    np.testing.assert_allclose(combine.data.sum(axis=2), 1.0, rtol=1e-12)  # each token: over slots
    phi = soft.phi.data
    expected = (x / np.linalg.norm(x, axis=-1, keepdims=True)) @ (phi / np.linalg.norm(phi, axis=0))
    np.testing.assert_allclose(logits.data, expected, rtol=1e-5)  # l2-normalised X and Phi (eps 1e-6)
    np.testing.assert_allclose(dispatch.data, softmax(logits.data, axis=1), rtol=1e-12)


def test_soft_moe_is_permutation_equivariant_over_tokens(soft):
    x = np.random.default_rng(10).normal(size=(2, 5, 4))
    perm = np.array([3, 0, 4, 1, 2])
    y = soft(f64(x)).data
    np.testing.assert_allclose(soft(f64(x[:, perm])).data, y[:, perm], rtol=1e-10, atol=1e-12)
