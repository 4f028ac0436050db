"""The fast path computes what the plain path computes: same inputs, both paths, compared.

Where the arithmetic is the same the results are equal bit for bit; where BLAS sums a product in
another order (one thread on the fast path, its own threads on the plain one), to float32 rounding.
Whatever the number of threads, the fast path gives the same bits.
"""
import numpy as np
import pytest

import minimoe as mm
from minimoe import functional as F
from minimoe.moe.experts import Experts
from minimoe.nn import LayerNorm, Linear, Parameter
from minimoe.ops import row_blocks
from minimoe.ops.shape import scatter_add_rows
from minimoe.optim import AdamW


def _leaf(rng, shape):
    return mm.tensor(rng.standard_normal(shape).astype(np.float32), requires_grad=True)


def _attention(rng):
    q, k, v = (_leaf(rng, (4, 4, 128, 32)) for _ in range(3))  # 16 pairs of 64 KiB scores: several blocks
    g = rng.standard_normal(q.shape).astype(np.float32)
    y = F.attention(q, k, v, causal=True)
    y.backward(g)
    return [y.data, q.grad, k.grad, v.grad]


def _layer_norm(rng):
    x = _leaf(rng, (4096, 128))
    ln = LayerNorm(128)
    ln.weight.data[:] = rng.standard_normal(128)
    y = ln(x)
    y.backward(rng.standard_normal(y.shape).astype(np.float32))
    return [y.data, x.grad, ln.weight.grad, ln.bias.grad]


def _gelu(rng):
    x = _leaf(rng, (1024, 1024))
    y = F.gelu(x)
    y.backward(rng.standard_normal(y.shape).astype(np.float32))
    return [y.data, x.grad]


def _linear(rng):
    x = _leaf(rng, (2048, 128))
    layer = Linear(128, 1024)
    y = layer(x)
    y.backward(rng.standard_normal(y.shape).astype(np.float32))
    return [y.data, x.grad, layer.weight.grad, layer.bias.grad]


def _experts(activation, masked):
    def run(rng):
        experts = Experts(8, 64, 96, activation)
        x = _leaf(rng, (700, 64))
        sizes = [0, 150, 40, 200, 0, 100, 60, 150]  # empty experts too
        mask = (rng.random((700, 96)) > 0.2).astype(np.float32) / 0.8 if masked else None
        y = experts(x, sizes, mask)
        y.backward(rng.standard_normal(y.shape).astype(np.float32))
        return [y.data, x.grad] + [p.grad for p in experts.parameters()]
    return run


def _embedding(rng):
    table = _leaf(rng, (96, 128))
    ids = rng.integers(0, 96, (16, 128))
    y = table[ids]
    y.backward(rng.standard_normal(y.shape).astype(np.float32))
    return [y.data, table.grad]


CASES = {"attention": _attention, "layer norm": _layer_norm, "gelu": _gelu, "linear": _linear,
         "gelu experts": _experts("gelu", False), "swiglu experts with dropout": _experts("swiglu", True),
         "embedding lookup": _embedding}


def _run(case, plain, threads=None):
    row_blocks.use_plain(plain)
    previous = row_blocks.num_threads()
    if threads:
        row_blocks.set_num_threads(threads)
    try:
        mm.manual_seed(0)
        return case(np.random.default_rng(0))
    finally:
        row_blocks.use_plain(False)
        row_blocks.set_num_threads(previous)


@pytest.mark.parametrize("name", CASES)
def test_fast_path_agrees_with_the_plain_path(name):
    plain, fast = _run(CASES[name], True), _run(CASES[name], False)
    for p, f in zip(plain, fast):
        np.testing.assert_allclose(f, p, rtol=1e-5, atol=1e-5 * float(np.abs(p).max()))


@pytest.mark.parametrize("name", CASES)
def test_fast_path_gives_the_same_bits_whatever_the_thread_count(name):
    one, two, three = (_run(CASES[name], False, threads) for threads in (1, 2, 3))
    for a, b, c in zip(one, two, three):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_the_element_wise_chains_are_equal_bit_for_bit():
    # no product inside: the blocks compute exactly what the whole computes
    for name in ("gelu", "layer norm"):
        for p, f in zip(_run(CASES[name], True), _run(CASES[name], False)):
            if f.shape != (128,):  # the weight and bias gradients sum rows in one call on both paths
                np.testing.assert_array_equal(f, p)


def _adamw_run(plain, replace_data_at=None, steps=4):
    row_blocks.use_plain(plain)
    try:
        rng = np.random.default_rng(0)
        params = [Parameter(rng.standard_normal(shape).astype(np.float32)) for shape in ((300, 7), (7,), (5, 5, 5))]
        opt = AdamW(params, lr=1e-2, weight_decay=0.1)
        for step in range(steps):
            if step == replace_data_at:  # what loading a checkpoint or a bias update does
                params[1].data = np.full(7, 0.5, dtype=np.float32)
            for p in params:
                p.grad = rng.standard_normal(p.shape).astype(np.float32)
            opt.step()
        return [p.data.copy() for p in params], opt.state_dict()
    finally:
        row_blocks.use_plain(False)


def test_adamw_on_flat_buffers_equals_the_per_parameter_update_bit_for_bit():
    (plain, plain_state), (fast, fast_state) = _adamw_run(True), _adamw_run(False)
    for p, f in zip(plain, fast):
        np.testing.assert_array_equal(f, p)
    assert set(plain_state) == set(fast_state)
    for key in plain_state:
        np.testing.assert_array_equal(fast_state[key], plain_state[key])


def test_flat_buffers_take_back_a_replaced_parameter_array():
    (plain, _), (fast, _) = _adamw_run(True, replace_data_at=2), _adamw_run(False, replace_data_at=2)
    for p, f in zip(plain, fast):
        np.testing.assert_array_equal(f, p)


def test_adamw_resumed_from_its_state_dict_continues_identically():
    rng = np.random.default_rng(3)
    grads = [[rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)] for _ in range(6)]

    def make():
        r = np.random.default_rng(1)
        params = [Parameter(r.standard_normal((4, 3)).astype(np.float32)), Parameter(r.standard_normal(3).astype(np.float32))]
        return params, AdamW(params, lr=1e-2)

    def steps(params, opt, gs):
        for g in gs:
            for p, gi in zip(params, g):
                p.grad = gi.copy()
            opt.step()

    params, opt = make()
    steps(params, opt, grads)
    whole = [p.data.copy() for p in params]
    params, opt = make()
    steps(params, opt, grads[:3])
    saved_params, saved_state = [p.data.copy() for p in params], opt.state_dict()
    params, opt = make()
    for p, s in zip(params, saved_params):
        p.data = s
    opt.load_state_dict(saved_state)
    steps(params, opt, grads[3:])
    for p, w in zip(params, whole):
        np.testing.assert_array_equal(p.data, w)


def test_an_error_in_one_block_reaches_the_caller():
    x = np.ones((4096, 512), dtype=np.float32)

    def fails_on_a_late_block(rows):
        if rows[0, 0] != 1:
            raise ValueError("block failed")
        return rows * 2

    x[-1, 0] = 5
    with pytest.raises(ValueError, match="block failed"):
        row_blocks.map_row_blocks(lambda r: fails_on_a_late_block(r[-1:]), x, block_rows=512)
    with pytest.raises(ValueError, match="block failed"):
        row_blocks.map_tasks(lambda i: fails_on_a_late_block(x[i:i + 1] + (i == 3)), range(6), like=x)


def test_scatter_add_rows_equals_add_at_to_rounding():
    rng = np.random.default_rng(0)
    for _ in range(20):
        n = int(rng.integers(1, 50))
        ids = rng.integers(-n, n, size=int(rng.integers(0, 400)))
        values = rng.standard_normal((ids.size, 7)).astype(np.float32)
        expected = np.zeros((n, 7), np.float32)
        np.add.at(expected, ids, values)
        np.testing.assert_allclose(scatter_add_rows(np, ids, values, n), expected, rtol=1e-5, atol=1e-5)


def test_thread_count_is_checked():
    for bad in (0, -1, 1.5, "2", True):
        with pytest.raises(ValueError, match="whole number >= 1"):
            row_blocks.set_num_threads(bad)
