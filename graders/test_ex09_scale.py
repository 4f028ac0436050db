"""Grades exercises/ex09_scale.py: the parameter and FLOP calculator, all-to-all send counts, and the
serving batch window."""
import numpy as np
import pytest

from graders._checks import expect, expect_close, expect_equal, expect_raises, lesson
from minimoe import calculator, serving
from minimoe.parallel import plan

MODULE = "ex09_scale"
see = lesson(MODULE)
CALCULATOR = [calculator.count_parameters, calculator.flops_per_token, calculator.matmul_params_per_token,
              calculator.attention_params, calculator.ffn_params, calculator.TransformerSpec]
TWINS = {
    "moe_param_count": CALCULATOR,
    "moe_flops_per_token": CALCULATOR,
    "all_to_all_send_counts": [plan.slot_counts, plan.experts_per_rank, plan.plan_shard_dispatch, plan.ShardPlan],
    "batch_window_schedule": [serving.batch_window_schedule, serving._chain],
}

MIXTRAL = dict(vocab_size=32000, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, head_dim=128,
               n_experts=8, top_k=2, expert_hidden=14336)  # arXiv 2401.04088, Table 1
# A toy model small enough to count on paper: attention 4*(2*2) + 2*4*(2*2) + (2*2)*4 = 64,
# router 4*4 = 16, each expert 3*4*8 = 96, one shared expert 96, two norms 8: a block of
# 64 + 16 + 4*96 + 96 + 8 = 568 total and 64 + 16 + 96 + 96 + 8 = 280 active; plus the final
# norm 4 and the embedding 10*4 = 40 (the head is tied).
TOY = dict(vocab_size=10, d_model=4, n_layers=1, n_heads=2, n_kv_heads=2, head_dim=2, n_experts=4, top_k=1,
           expert_hidden=8, n_shared_experts=1, tied_embeddings=True)


def _ints(got, expected, what, section):
    expect(isinstance(got, tuple) and all(isinstance(v, int) for v in got), f"{what}: the result",
           "a tuple of Python ints", repr(got), section)
    expect(tuple(got) == expected, what, str(expected), str(tuple(got)), section)


def _random_shape(rng):
    """A model in which no two sizes coincide by accident: heads * head_dim != d_model, kv heads
    != heads, hidden != d_model, top_k between 1 and E."""
    n_heads = int(rng.choice([3, 4, 6]))
    n_kv = int(rng.choice([h for h in (1, 2, 3) if n_heads % h == 0 and h != n_heads]))
    n_experts = int(rng.integers(5, 17))
    return dict(vocab_size=int(rng.integers(50, 500)), d_model=int(rng.integers(20, 64)),
                n_layers=int(rng.integers(2, 7)), n_heads=n_heads, n_kv_heads=n_kv,
                head_dim=int(rng.integers(5, 19)), n_experts=n_experts, top_k=int(rng.integers(2, n_experts)),
                expert_hidden=int(rng.integers(70, 130)), n_shared_experts=int(rng.integers(0, 3)),
                tied_embeddings=bool(rng.integers(0, 2)))


def _params_by_hand(v):
    """Matrix by matrix, written out independently of the reference answer."""
    d = v["d_model"]
    q = o = d * v["n_heads"] * v["head_dim"]
    k = vv = d * v["n_kv_heads"] * v["head_dim"]
    expert = 3 * d * v["expert_hidden"]  # gate, up, down
    block_without_experts = q + k + vv + o + d * v["n_experts"] + v.get("n_shared_experts", 0) * expert + 2 * d
    head = 0 if v.get("tied_embeddings", False) else v["vocab_size"] * d
    outside = v["vocab_size"] * d + head + d
    total = v["n_layers"] * (block_without_experts + v["n_experts"] * expert) + outside
    active = v["n_layers"] * (block_without_experts + v["top_k"] * expert) + outside
    return total, active


def _flops_by_hand(v, seq_len):
    d = v["d_model"]
    projections = 2 * d * v["n_heads"] * v["head_dim"] + 2 * d * v["n_kv_heads"] * v["head_dim"]
    experts = (v["top_k"] + v.get("n_shared_experts", 0)) * 3 * d * v["expert_hidden"]
    weights = v["n_layers"] * (projections + d * v["n_experts"] + experts) + v["vocab_size"] * d
    return 2 * weights + v["n_layers"] * 2 * 2 * seq_len * v["n_heads"] * v["head_dim"]


@pytest.mark.exercise("moe_param_count", points=1)
def test_moe_param_count_toy(fn, module):
    _ints(fn(module.MoETransformerShape(**TOY)), (612, 324), "(total, active) of the toy model in the grader "
          "(1 layer, 4 experts, top-1, 1 shared expert, tied head)", see("Counting parameters"))
    untied = dict(TOY, tied_embeddings=False)
    _ints(fn(module.MoETransformerShape(**untied)), (652, 364), "(total, active) of the toy model with an untied "
          "head (+ vocab*d)", see("Counting parameters"))


@pytest.mark.exercise("moe_param_count", points=2)
def test_moe_param_count_mixtral(fn, module):
    _ints(fn(module.MoETransformerShape(**MIXTRAL)), (46_702_792_704, 12_879_925_248),
          "(total, active) parameters of Mixtral 8x7B (published: 46.7B / 12.9B)", see("Counting parameters"))


@pytest.mark.exercise("moe_param_count", points=1)
def test_moe_param_count_random_models(fn, module, rng):
    for _ in range(3):
        values = _random_shape(rng)
        _ints(fn(module.MoETransformerShape(**values)), _params_by_hand(values),
              f"(total, active) of a random model {values}", see("Counting parameters"))


@pytest.mark.exercise("moe_flops_per_token", points=1)
def test_moe_flops_per_token_random_models(fn, module, rng):
    for _ in range(3):
        values, seq_len = _random_shape(rng), int(rng.integers(3, 300))
        got = fn(module.MoETransformerShape(**values), seq_len)
        expected = _flops_by_hand(values, seq_len)
        expect(isinstance(got, int) and got == expected, f"forward FLOPs per token at seq_len {seq_len} of a "
               f"random model {values}", f"the int {expected:,}", repr(got), see("Counting FLOPs"))


@pytest.mark.exercise("moe_flops_per_token", points=1)
def test_moe_flops_per_token_toy(fn, module):
    # matmul weights: block 64 + 16 + (1 + 1) * 96 = 272, head 40 (counted though tied): 312;
    # attention scores and values: 4 * seq_len * heads * head_dim = 4 * 5 * 2 * 2 = 80.
    got = fn(module.MoETransformerShape(**TOY), 5)
    expect(int(got) == 2 * 312 + 80, "forward FLOPs per token of the toy model at seq_len 5", "704", str(got),
           see("Counting FLOPs"))


@pytest.mark.exercise("moe_flops_per_token", points=1)
def test_moe_flops_per_token_mixtral(fn, module):
    attention = 2 * 4096 * 4096 + 2 * 4096 * 1024
    matmul = 32 * (attention + 4096 * 8 + 2 * 3 * 4096 * 14336) + 32000 * 4096
    expected = 2 * matmul + 32 * 4 * 4096 * 32 * 128
    got = fn(module.MoETransformerShape(**MIXTRAL), 4096)
    expect(int(got) == expected, "forward FLOPs per token of Mixtral 8x7B at seq_len 4096",
           f"{expected:,} (about 2 x 12.9B active, plus attention)", f"{int(got):,}", see("Counting FLOPs"))


@pytest.mark.exercise("all_to_all_send_counts", points=1)
def test_all_to_all_send_counts_hand_case(fn):
    expert_index = np.array([[0, 5], [2, 3], [7, -1], [1, 0]])  # 8 experts on 4 ranks: 2 per rank
    section = see("Expert parallelism")
    expect_equal(fn(expert_index, 8, 4), [3, 2, 1, 1], "send counts to 4 ranks holding experts {0,1}, {2,3}, "
                 "{4,5}, {6,7} (token 3 sends two rows to rank 0; -1 sends nothing)", section, dtype="iu")
    expect_equal(fn(np.array([[0, 1, 2], [2, 1, -1]]), 12, 4), [5, 0, 0, 0], "send counts when only rank 0's "
                 "experts are chosen (top-3 of 12 experts on 4 ranks: the other ranks get 0)", section, dtype="iu")
    expect_raises(ValueError, lambda: fn(expert_index, 8, 3), "all_to_all_send_counts with 8 experts on 3 ranks",
                  section)


@pytest.mark.exercise("all_to_all_send_counts", points=1)
def test_all_to_all_send_counts_conservation(fn, rng):
    expert_index = rng.integers(0, 12, (100, 3))  # experts 12..15 (ranks 6 and 7) are never chosen
    expert_index[rng.uniform(size=(100, 3)) < 0.1] = -1
    counts = np.asarray(fn(expert_index, 16, 8))
    section = see("Expert parallelism")
    expect(counts.sum() == (expert_index >= 0).sum(), "total rows sent", f"{(expert_index >= 0).sum()} (one per "
           "kept assignment)", str(counts.sum()), section)
    expected = np.array([((expert_index >= 2 * r) & (expert_index < 2 * r + 2)).sum() for r in range(8)])
    expect_equal(counts, expected, "send counts for 100 random tokens, top-3 of 16 experts on 8 ranks (ranks 6 "
                 "and 7 unused)", section, dtype="iu")


def _schedule_by_hand(times, window, max_batch):
    """The batch window as a server runs it: token after token in order of arrival (ties in input
    order), each joining the open batch if it fits in its window and its size."""
    batch_id, dispatch = np.empty(len(times), dtype=np.int64), np.empty(len(times))
    batches = []  # [opened at, members]
    for i in np.argsort(times, kind="stable"):
        if batches and len(batches[-1][1]) < max_batch and times[i] <= batches[-1][0] + window:
            batches[-1][1].append(i)
        else:
            batches.append([times[i], [i]])
    for b, (opened, members) in enumerate(batches):
        batch_id[members] = b
        dispatch[members] = times[members[-1]] if len(members) == max_batch else opened + window
    return batch_id, dispatch


def _expect_schedule(got, expected, what, section):
    expect(isinstance(got, tuple) and len(got) == 2, f"{what}: the result", "a tuple (batch_id, dispatch_time)",
           type(got).__name__, section)
    expect_equal(got[0], expected[0], f"{what}: batch_id", section, dtype="iu")
    expect_close(got[1], expected[1], f"{what}: dispatch_time", section, rtol=0, atol=0, dtype="f")


@pytest.mark.exercise("batch_window_schedule", points=1)
def test_batch_window_schedule_hand_cases(fn):
    section = see("Serving: batching the tokens of many requests per expert")
    # window 1 s, at most 3: {0, 0.5} times out at 0 + 1; {1.5, 2, 2.25} is full at 2.25; {2.5} times out at 3.5
    _expect_schedule(fn(np.array([0.0, 0.5, 1.5, 2.0, 2.25, 2.5]), 1.0, 3),
                     ([0, 0, 1, 1, 1, 2], [1.0, 1.0, 2.25, 2.25, 2.25, 3.5]),
                     "arrivals 0, 0.5, 1.5, 2, 2.25, 2.5 with window 1 and max_batch 3", section)
    # the window is the first token's and includes its end: 1.0 joins 0's batch; 1.5 opens a new one
    _expect_schedule(fn(np.array([0.0, 1.0, 1.5, 2.4]), 1.0, 10), ([0, 0, 1, 1], [1.0, 1.0, 2.5, 2.5]),
                     "arrivals 0, 1, 1.5, 2.4 with window 1 (a token at exactly first + window joins)", section)
    expect_raises(ValueError, lambda: fn(np.array([0.0, 1.0]), -0.5, 2), "a negative window", section)
    expect_raises(ValueError, lambda: fn(np.array([0.0, 1.0]), 1.0, 0), "max_batch = 0", section)


@pytest.mark.exercise("batch_window_schedule", points=1)
def test_batch_window_schedule_edge_cases(fn):
    section = see("Serving: batching the tokens of many requests per expert")
    times = np.array([0.3, 0.1, 0.0, 0.2])
    _expect_schedule(fn(times, 0.0, 8), ([3, 1, 0, 2], times), "window 0 (no batching) on distinct, unsorted "
                     "arrivals 0.3, 0.1, 0, 0.2: each token alone, dispatched on arrival", section)
    _expect_schedule(fn(times, 5.0, 1), ([3, 1, 0, 2], times), "max_batch 1 with a long window: every token "
                     "alone, dispatched on arrival", section)
    _expect_schedule(fn(np.zeros(5), 0.5, 2), ([0, 0, 1, 1, 2], [0.0, 0.0, 0.0, 0.0, 0.5]),
                     "5 simultaneous arrivals at 0, window 0.5, max_batch 2: two full batches leave at 0, "
                     "the last token waits out its window", section)
    _expect_schedule(fn(np.array([2.0, 0.0, 0.0, 0.0]), 0.5, 2), ([2, 0, 0, 1], [2.5, 0.0, 0.0, 0.5]),
                     "arrivals 2, 0, 0, 0 (unsorted, ties taken in input order), window 0.5, max_batch 2",
                     section)
    _expect_schedule(fn(np.array([1.0, 1.0, 3.0]), 0.0, 4), ([0, 0, 1], [1.0, 1.0, 3.0]),
                     "window 0 batches only simultaneous arrivals (1, 1, 3)", section)
    got = fn(np.zeros(0), 1.0, 4)
    expect_equal(got[0], np.zeros(0, dtype=np.int64), "no tokens at all: batch_id", section, dtype="iu")


@pytest.mark.exercise("batch_window_schedule", points=1)
def test_batch_window_schedule_random_traffic(fn, rng):
    section = see("Serving: batching the tokens of many requests per expert")
    for n, decimals in ((30, 1), (300, 2), (5000, 4)):
        times = np.round(np.cumsum(rng.exponential(0.01, n)), decimals)  # rounding makes simultaneous arrivals
        times = times[rng.permutation(n)]  # in any order
        window, max_batch = float(rng.choice([0.0, 0.005, 0.02, 0.1])), int(rng.integers(1, 20))
        _expect_schedule(fn(times, window, max_batch), _schedule_by_hand(times, window, max_batch),
                         f"{n} random arrivals (shuffled, with ties) under window {window} and max_batch "
                         f"{max_batch}", section)
