"""map_row_blocks computes exactly what one call computes, on arrays large enough to be split."""
import numpy as np

from minimoe.ops import row_blocks
from minimoe.ops.pointwise import gelu_forward, gelu_grad


def big(seed, shape=(3001, 512)):  # ~6 MB of float32: several blocks, the last one short
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def test_blocks_equal_one_call_for_a_tuple_result():
    x = big(0)
    assert x.nbytes > 4 * row_blocks.BLOCK_BYTES
    y, t = row_blocks.map_row_blocks(lambda rows: gelu_forward(np, rows), x)
    y_ref, t_ref = gelu_forward(np, x)
    np.testing.assert_array_equal(y, y_ref)
    np.testing.assert_array_equal(t, t_ref)


def test_blocks_equal_one_call_for_several_inputs_and_one_result():
    g, x = big(1), big(2)
    _, t = gelu_forward(np, x)
    out = row_blocks.map_row_blocks(lambda g, x, t: g * gelu_grad(x, t), g, x, t)
    np.testing.assert_array_equal(out, g * gelu_grad(x, t))


def test_small_or_non_numpy_inputs_take_one_plain_call():
    calls = []
    row_blocks.map_row_blocks(lambda a: calls.append(a.shape) or a, np.ones((4, 3), np.float32))
    assert calls == [(4, 3)]
