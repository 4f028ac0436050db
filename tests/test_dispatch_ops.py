"""The MoE layer's dispatch and combine ops on cases small enough to check by hand."""
import numpy as np

import minimoe as mm
from minimoe import functional as F


def test_dispatch_reads_each_copy_from_its_token_without_making_the_copies():
    x = mm.tensor([[1.0, 2.0], [3.0, 4.0]])  # 2 tokens; with 2 copies, row 3 is copy 1 of token 1
    np.testing.assert_array_equal(F.dispatch_rows(x, np.array([3, 0]), 2).numpy(), [[3, 4], [1, 2]])


def test_combine_sums_each_tokens_rows_weighted_by_their_gates():
    rows = mm.tensor([[10.0, 20.0], [30.0, 40.0]], requires_grad=True)
    gate = mm.tensor([[0.5], [0.25]], requires_grad=True)
    y = F.combine_rows(rows, gate, np.array([3, 0]), 2, 2)  # row 0 is token 1's, row 1 token 0's
    np.testing.assert_array_equal(y.numpy(), [[7.5, 10.0], [5.0, 10.0]])
    y.backward(np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32))
    np.testing.assert_array_equal(rows.grad, [[0.0, 0.5], [0.25, 0.0]])  # gate times its token's gradient
    np.testing.assert_array_equal(gate.grad, [[20.0], [30.0]])  # the row dotted with its token's gradient


def test_a_token_whose_copies_were_all_dropped_gets_zero():
    rows = mm.tensor([[1.0, 1.0]])
    y = F.combine_rows(rows, mm.tensor([[1.0]]), np.array([0]), 1, 2)
    np.testing.assert_array_equal(y.numpy(), [[1.0, 1.0], [0.0, 0.0]])
