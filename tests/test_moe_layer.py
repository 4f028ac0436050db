"""The MoE layer end to end: weights by name, equivalences, the top-1 trap, DeepSeek-V3's bias
balancing, expert dropout, bad input, the routing report, and the strict (CuPy-like) backend."""
import math
import re

import numpy as np
import pytest

import minimoe as mm
from minimoe.moe import MoE, MoEConfig
from minimoe.moe.config import ROUTERS


def make_layer(seed=0, **options):
    mm.manual_seed(seed)
    cfg = dict(d_model=4, n_experts=4, top_k=2, expert_hidden=5)
    return MoE(MoEConfig(**{**cfg, **options}))


def random_x(*shape, seed=1):
    return mm.tensor(np.random.default_rng(seed).normal(size=shape), dtype=np.float32)


def run(layer, x):
    """A forward with the token ids hash routing needs (ignored by the other routers)."""
    ids = np.arange(math.prod(x.shape[:-1])).reshape(x.shape[:-1]) % layer.cfg.vocab_size
    return layer(x, token_ids=ids)


# ---- weights by name -----------------------------------------------------------------------------
def test_state_dict_names_say_what_each_weight_is():
    names = set(make_layer(router="deepseek", activation="swiglu", n_shared_experts=2).state_dict())
    assert names == {"router.weight", "router.expert_bias", "experts.w_in", "experts.b_in", "experts.w_gate",
                     "experts.w_out", "experts.b_out", "shared.w_in", "shared.b_in", "shared.w_gate",
                     "shared.w_out", "shared.b_out"}
    layer = make_layer(n_shared_experts=2)
    assert layer.state_dict()["experts.w_in"].shape == (4, 4, 5)  # (E, d, h)
    assert layer.state_dict()["shared.w_in"].shape == (1, 4, 10)  # 2 shared experts of width 5 as one of 10


def test_load_state_dict_round_trip_gives_the_same_output():
    x = random_x(6, 4)
    source, target = make_layer(seed=1), make_layer(seed=2)
    target.load_state_dict(source.state_dict())
    np.testing.assert_array_equal(target(x).data, source(x).data)


# ---- shapes and equivalences --------------------------------------------------------------------
def test_batch_and_flat_inputs_give_the_same_tokens():
    layer = make_layer(capacity_factor=1.0)
    x = random_x(2, 5, 4)
    y3 = layer(x)
    assert y3.shape == (2, 5, 4) and layer.report.expert_index.shape == (2, 5, 2)
    np.testing.assert_array_equal(layer(x.reshape(10, 4)).data, y3.data.reshape(10, 4))
    assert layer.report.expert_index.shape == (1, 10, 2)


def test_top_k_with_k_equal_to_n_equals_the_dense_softmax_mixture():
    dense = make_layer(router="dense")
    full = make_layer(router="topk", top_k=4, seed=3)
    full.load_state_dict(dense.state_dict())
    x = random_x(2, 6, 4)
    np.testing.assert_allclose(full(x).data, dense(x).data, rtol=1e-5, atol=1e-6)


def test_one_expert_with_top_1_is_the_dense_ffn():
    layer = make_layer(n_experts=1, top_k=1)
    x = random_x(7, 4)
    s = layer.state_dict()
    u = x.data @ s["experts.w_in"][0] + s["experts.b_in"][0]
    hidden = 0.5 * u * (1 + np.tanh(math.sqrt(2 / math.pi) * (u + 0.044715 * u ** 3)))
    np.testing.assert_allclose(layer(x).data, hidden @ s["experts.w_out"][0] + s["experts.b_out"][0], rtol=1e-5, atol=1e-6)


# ---- the top-1 trap (docs/formulas.md §5) -----------------------------------------------------------
@pytest.mark.parametrize("options, trapped", [
    (dict(router="topk_then_softmax", top_k=1), True),  # softmax over one logit: the gate is always 1
    (dict(router="topk", top_k=1), True),  # form A renormalised over one expert: p / p = 1, the same trap
    (dict(router="topk", top_k=1, renormalize=False), False),
    (dict(router="switch"), False),  # y = p_i E_i(x): the Switch form
])
def test_top1_trap(options, trapped):
    layer = make_layer(balance_loss=None, **options)
    layer(random_x(8, 4)).sum().backward()  # the task loss only
    grad = layer.router.weight.grad
    if trapped:
        assert grad is None or not np.any(grad)
    else:
        assert np.abs(grad).max() > 1e-4


# ---- DeepSeek-V3's auxiliary-loss-free balancing -----------------------------------------------------
def test_bias_update_moves_the_load_toward_balance():
    layer = make_layer(router="deepseek", balance_loss=None, bias_update_rate=0.01)
    skewed = np.random.default_rng(0).normal(scale=0.3, size=(4, 4))
    skewed[:, 0] += 1.0
    skewed[:, 1] += 0.5  # every token prefers experts 0 and 1
    layer.router.weight.data = skewed.astype(np.float32)
    x = mm.tensor(np.abs(np.random.default_rng(1).normal(size=(64, 4))), dtype=np.float32)

    def imbalance():
        layer(x)
        return layer.report.load.max() / layer.report.load.mean()

    before = imbalance()
    for _ in range(40):
        layer.update_bias()
        after = imbalance()
    assert before == 2.0  # experts 0 and 1 take everything
    assert after < 1.25
    bias = layer.router.expert_bias.data
    assert bias[0] < 0 < bias[3] and bias[1] < bias[2]


def test_update_bias_is_a_no_op_for_other_routers():
    layer = make_layer(router="topk")
    layer(random_x(6, 4))
    before = {name: value.copy() for name, value in layer.state_dict().items()}
    layer.update_bias()
    for name, value in layer.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


# ---- expert dropout ---------------------------------------------------------------------------------
def test_expert_dropout_only_in_training_and_reproducible_with_a_seed():
    layer = make_layer(expert_dropout=0.5, n_shared_experts=1)
    x = random_x(8, 4)
    mm.manual_seed(9)
    first = layer(x).data
    mm.manual_seed(9)
    np.testing.assert_array_equal(layer(x).data, first)
    no_dropout = make_layer(n_shared_experts=1)
    no_dropout.load_state_dict(layer.state_dict())
    assert not np.allclose(first, no_dropout(x).data)
    layer.eval()
    np.testing.assert_array_equal(layer(x).data, no_dropout(x).data)


# ---- bad input ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("options, message", [
    (dict(top_k=5), r"top_k must be between 1 and n_experts \(4\), got 5"),
    (dict(top_k=0), r"top_k must be between 1 and n_experts \(4\), got 0"),
    (dict(capacity_factor=0.0), r"capacity_factor must be > 0, got 0.0 \(use None for dropless"),
    (dict(capacity_factor=-1.25), r"capacity_factor must be > 0, got -1.25"),
    (dict(router="expert_choice", capacity_factor=0.0), r"capacity_factor must be > 0"),
    (dict(router="top2"), r"unknown router 'top2'; choose one of dense, topk"),
    (dict(balance_loss="gshard_top2"), r"unknown balance_loss 'gshard_top2'"),
    (dict(activation="relu"), r"unknown expert activation 'relu'"),
    (dict(router="noisy_topk", top_k=4), r"noisy top-k needs k < number of experts"),
    (dict(router="deepseek", n_groups=3), r"4 experts do not split into 3 equal groups"),
    (dict(router="deepseek", top_k=3, n_groups=2, topk_groups=1), r"leaves fewer than k=3 experts"),
    (dict(router="switch", balance_loss="importance_load"), r"importance and load losses belong to top-k gating"),
])
def test_bad_configurations_raise_clear_errors(options, message):
    with pytest.raises(ValueError, match=message):
        make_layer(**options)


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # the matmul meeting the NaN
@pytest.mark.parametrize("router", [r for r in ROUTERS if r != "hash"])  # hash routing reads ids, not logits
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_infinite_router_logits_raise(router, bad):
    layer = make_layer(router=router, balance_loss=None)
    x = np.ones((2, 3, 4), dtype=np.float32)
    x[1, 2, 0] = bad
    with pytest.raises(ValueError, match="router logits contain NaN or infinity: the layer's input is not finite"):
        layer(mm.tensor(x))


@pytest.mark.parametrize("shape", [(0, 4), (2, 0, 4)])
def test_an_empty_batch_raises(shape):
    with pytest.raises(ValueError, match=r"empty batch \(input shape"):
        make_layer()(mm.tensor(np.zeros(shape, dtype=np.float32)))


@pytest.mark.parametrize("shape", [(3, 5), (2, 3, 3), (4,)])
def test_a_mismatched_d_model_raises_and_names_both_shapes(shape):
    with pytest.raises(ValueError, match=rf"\(tokens, 4\) or \(batch, seq, 4\); got {re.escape(str(shape))}"):
        make_layer()(mm.tensor(np.zeros(shape, dtype=np.float32)))


def test_hash_routing_without_token_ids_raises():
    with pytest.raises(ValueError, match=r"hash routing needs the token ids: call the layer as layer\(x, token_ids=ids\)"):
        make_layer(router="hash")(random_x(3, 4))


# ---- the routing report -----------------------------------------------------------------------------------
def test_report_on_a_hand_case_with_a_drop():
    # Switch, 2 experts, C = ceil(4 / 2 * 1.0) = 2: tokens 0-2 prefer expert 0, token 3 expert 1;
    # token 2 finds expert 0 full and is dropped
    layer = make_layer(d_model=2, n_experts=2, router="switch", capacity_factor=1.0)
    layer.router.weight.data = np.array([[1.0, -1.0], [0.0, 0.0]], dtype=np.float32)
    x = mm.tensor(np.array([[[2.0, 0.0], [1.0, 0.0], [0.5, 0.0], [-1.0, 0.0]]], dtype=np.float32))
    layer(x)
    report = layer.report
    np.testing.assert_array_equal(report.expert_index, [[[0], [0], [-1], [1]]])  # (B, T, k)
    assert report.dropped_fraction == 0.25
    np.testing.assert_allclose(report.load, [2 / 3, 1 / 3])
    np.testing.assert_array_equal(report.tokens_per_expert, [2, 1])


def test_report_of_top2_marks_each_dropped_choice():
    layer = make_layer(d_model=2, n_experts=3, top_k=2, capacity_factor=0.5)  # C = ceil(2 * 3 / 3 * 0.5) = 1
    layer.router.weight.data = np.array([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]], dtype=np.float32)
    layer(mm.tensor(np.ones((3, 2), dtype=np.float32)))  # every token: expert 0 first, expert 1 second
    np.testing.assert_array_equal(layer.report.expert_index[0], [[0, 1], [-1, -1], [-1, -1]])
    assert layer.report.dropped_fraction == 4 / 6


@pytest.mark.parametrize("router", ROUTERS)
def test_report_for_every_router(router):
    layer = make_layer(router=router, capacity_factor=None)
    run(layer, random_x(2, 6, 4))
    report = layer.report
    assert report.load.shape == (4,) and report.load.sum() == pytest.approx(1.0)
    assert report.expert_index.shape[:2] == (2, 6) and report.expert_index.ndim == 3
    assert report.expert_index.max() < 4 and report.expert_index.min() >= -1
    assert 0.0 <= report.dropped_fraction <= 1.0 and report.router_entropy >= 0.0


def test_router_entropy_is_log_e_for_uniform_routing():
    layer = make_layer()
    layer.router.weight.data = np.zeros_like(layer.router.weight.data)
    layer(random_x(5, 4))
    assert layer.report.router_entropy == pytest.approx(math.log(4), rel=1e-6)


def test_soft_moe_report_gives_the_entropy_of_the_combine_weights():
    layer = make_layer(router="soft", slots_per_expert=2)
    x = random_x(2, 5, 4)
    layer(x)
    assert 0 < layer.report.router_entropy < math.log(8)  # 8 slots, and the weights are not uniform
    layer.soft.phi.data = np.zeros_like(layer.soft.phi.data)  # every slot scores every token the same
    layer(x)
    assert layer.report.router_entropy == pytest.approx(math.log(8), rel=1e-6)
    assert layer.aux_loss.item() == 0.0 and layer.report.dropped_fraction == 0.0


def test_expert_choice_report_counts_tokens_without_an_expert():
    layer = make_layer(router="expert_choice", capacity_factor=1.0)  # C = ceil(8 / 4) = 2
    layer(random_x(2, 4, 4))
    index = layer.report.expert_index
    assert index.shape == (2, 4, 1)
    np.testing.assert_array_equal(layer.report.load, 0.25)
    assert layer.report.dropped_fraction == pytest.approx((index == -1).mean())


# ---- the strict backend (behaves like CuPy) -----------------------------------------------------------------
@pytest.fixture
def strict_backend():
    pytest.importorskip("minimoe.strict_device", reason="the strict stand-in backend is not there yet")
    mm.use("strict")
    try:
        yield
    finally:
        mm.use("numpy")


@pytest.mark.parametrize("router", ROUTERS)
def test_every_router_runs_on_the_strict_backend(strict_backend, router):
    balance = {"noisy_topk": "importance_load", "deepseek": "deepseek_sequence"}.get(router, "switch")
    layer = make_layer(router=router, balance_loss=balance, z_loss_coef=1e-3, n_shared_experts=1,
                       expert_dropout=0.1, capacity_factor=1.25 if router in ("topk", "switch", "gshard") else None,
                       n_groups=2 if router == "deepseek" else 1)
    x = mm.randn(2, 6, 4, requires_grad=True)
    assert x.backend == "strict"
    ids = mm.tensor(np.arange(12).reshape(2, 6) % 96)
    y = layer(x, token_ids=ids)
    (y.sum() + layer.aux_loss).backward()
    layer.update_bias()
    assert y.backend == "strict" and x.grad is not None
    assert isinstance(layer.report.expert_index, np.ndarray) and layer.report.load.sum() == pytest.approx(1.0)


def test_deepseek_top1_skips_normalisation_so_the_router_learns():
    """With k = 1, normalising over the chosen expert would make every gate 1 (the top-1 trap);
    the router keeps the raw sigmoid score instead, as Megatron's implementation does."""
    mm.manual_seed(3)
    layer = MoE(MoEConfig(d_model=4, n_experts=4, top_k=1, expert_hidden=5, router="deepseek", balance_loss=None))
    x = mm.tensor(np.random.default_rng(0).standard_normal((6, 4)))
    layer(x).sum().backward()
    assert np.abs(layer.router.weight.grad).max() > 1e-6


def test_routers_that_fix_k_ignore_top_k():
    cfg = MoEConfig(d_model=4, n_experts=1, expert_hidden=5, router="switch")
    assert cfg.k == 1


def test_segmented_config_keeps_expert_parameters_and_active_compute():
    """DeepSeekMoE's fine-grained segmentation: 8 experts of 64, top-2 -> 32 of 16, top-8; and with
    2 shared: 30 routed of 16, top-6, plus 2 shared of 16. Expert weights and active width stay put."""
    coarse = MoEConfig(d_model=8, n_experts=8, top_k=2, expert_hidden=64)
    fine = coarse.segmented(4)
    assert (fine.n_experts, fine.top_k, fine.expert_hidden) == (32, 8, 16)
    shared = coarse.segmented(4, n_shared=2)
    assert (shared.n_experts, shared.top_k, shared.n_shared_experts) == (30, 6, 2)

    def expert_weights(cfg):
        layer = MoE(cfg)
        return sum(p.size for name, p in layer.named_parameters() if name.startswith(("experts.w_", "shared.w_")))

    assert expert_weights(coarse) == expert_weights(fine) == expert_weights(shared)  # the same matrices, cut finer
    for cfg in (coarse, fine, shared):
        assert (cfg.top_k + cfg.n_shared_experts) * cfg.expert_hidden == 128  # active hidden width per token
    with pytest.raises(ValueError, match="segments"):
        coarse.segmented(3)
