"""Every differentiable op against central finite differences, in float64, under every backend.

Each case is an op over inputs of one shape family (broadcast ones included); `gradcheck` compares
the op's hand-written backward with finite differences and must find a relative error below 1e-6.
Inputs stay away from kinks (relu at 0, ties in max and top-k), where finite differences lie.
"""
import operator

import numpy as np
import pytest

import minimoe as mm
import minimoe.functional as F

from op_inputs import away_from_zero, bools, ints, normal, positive  # noqa: E402

pytestmark = pytest.mark.usefixtures("engine_path")  # every check on the plain and the fast path


def case(name, fn, *inputs):
    return pytest.param(fn, inputs, id=name)


BROADCAST_PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((), (2, 3)),
                   ((4,), (3, 1))]
BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}
MATMUL_PAIRS = [
    ((3, 4), (4, 2)),          # matrix @ matrix
    ((2, 3, 4), (4, 5)),       # batch @ matrix
    ((2, 1, 3, 4), (5, 4, 2)),  # batch axes broadcast against each other
    ((4,), (4, 3)),            # vector @ matrix
    ((3, 4), (4,)),            # matrix @ vector
    ((4,), (4,)),              # vector @ vector
    ((4,), (2, 4, 3)),         # vector @ batch
    ((2, 3, 4), (4,)),         # batch @ vector
]
REDUCE_AXES = [None, 0, -1, (0, 2)]
MASK = [[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 1]]  # for (3, 4) inputs
QKV_SMALL, QKV_WIDE = (2, 2, 3, 4), (1, 2, 4, 3)  # (B, H, T, Dh)


def reduce_case(op, axis, keepdims):
    return case(f"{op}-axis{axis}-keepdims{keepdims}",
                lambda a: getattr(a, op)(axis=axis, keepdims=keepdims), normal(2, 3, 4))


def sum_of_split_parts(a):
    first, second, third = F.split(a, 3, axis=1)
    return first * third + second


def mlp_loss(x, w1, b1, w2):
    return F.cross_entropy(F.gelu(x @ w1 + b1) @ w2, ints([0, 2, 1, 1]))


CASES = [
    *[case(f"{name}-{sa}-{sb}", op, normal(*sa), positive(*sb) if name == "div" else normal(*sb))
      for name, op in BINARY.items() for sa, sb in BROADCAST_PAIRS],
    case("radd-scalar", lambda a: 2.5 + a, normal(3, 4)),
    case("rsub-scalar", lambda a: 3 - a, normal(3, 4)),
    case("rmul-scalar", lambda a: 0.5 * a, normal(3, 4)),
    case("rdiv-scalar", lambda a: 2 / a, positive(3, 4)),
    case("neg", lambda a: -a, normal(3, 4)),
    case("pow-2", lambda a: a**2, normal(3, 4)),
    case("pow-3", lambda a: a**3, normal(2, 3, 4)),
    case("pow-0.5", lambda a: a**0.5, positive(3, 4)),
    case("pow--1.5", lambda a: a**-1.5, positive(3, 4)),
    *[case(f"matmul-{sa}-{sb}", operator.matmul, normal(*sa), normal(*sb))
      for sa, sb in MATMUL_PAIRS],
    case("functional-matmul", F.matmul, normal(3, 4), normal(4, 2)),
    *[reduce_case(op, axis, keepdims)
      for op in ("sum", "mean", "max") for axis in REDUCE_AXES for keepdims in (False, True)],
    case("functional-mean", lambda a: F.mean(a, axis=1), normal(2, 3, 4)),
    case("reshape-2d", lambda a: a.reshape(6, 4), normal(2, 3, 4)),
    case("reshape-flat", lambda a: a.reshape(-1), normal(2, 3, 4)),
    case("reshape-tuple", lambda a: a.reshape((4, 1, 6)), normal(2, 3, 4)),
    case("transpose-T", lambda a: a.T, normal(3, 4)),
    case("transpose-axes", lambda a: a.transpose(1, 0, 2), normal(2, 3, 4)),
    case("permute", lambda a: a.permute(2, 0, 1), normal(2, 3, 4)),
    case("permute-negative", lambda a: a.permute((-1, 0, 1)), normal(2, 3, 4)),
    case("getitem-slices", lambda a: a[1:, ::2], normal(3, 4)),
    case("getitem-int", lambda a: a[1], normal(3, 4)),
    case("getitem-negative-int-slice", lambda a: a[-1, 1:3], normal(3, 4)),
    case("getitem-ellipsis-none", lambda a: a[..., None, 1], normal(2, 3, 4)),
    case("getitem-fancy-repeats", lambda a: a[ints([0, 2, 0, 0])], normal(3, 4)),
    case("getitem-fancy-pairs", lambda a: a[ints([0, 2, 2]), ints([1, 1, 3])], normal(3, 4)),
    case("getitem-fancy-slice", lambda a: a[ints([2, 0, 2]), 1:], normal(3, 4)),
    case("getitem-bool-mask", lambda a: a[bools(MASK)], normal(3, 4)),
    case("getitem-bool-rows", lambda a: a[bools([1, 0, 1])], normal(3, 4)),
    case("gather-axis1-repeats",
         lambda a: F.gather(a, ints([[0, 0, 2], [1, 3, 1]]), axis=1), normal(2, 4)),
    case("gather-axis0",
         lambda a: F.gather(a, ints([[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]]), axis=0),
         normal(2, 4)),
    case("gather-3d",
         lambda a: F.gather(a, ints(np.tile([[3, 0]], (2, 3, 1))), axis=-1), normal(2, 3, 4)),
    # 4 tokens, 3 copies each (k-major rows c*4 + t), 7 of the 12 copies dispatched, out of order
    case("dispatch_rows", lambda x: F.dispatch_rows(x, ints([5, 0, 11, 2, 6, 9, 3]), 3), normal(4, 2)),
    case("combine_rows", lambda rows, gate: F.combine_rows(rows, gate, ints([5, 0, 11, 2, 6, 9, 3]), 3, 4),
         normal(7, 2), normal(7, 1)),
    case("index_add-axis0-repeats",
         lambda x, s: F.index_add(x, ints([0, 2, 0, 0]), s), normal(3, 2), normal(4, 2)),
    case("index_add-axis1-repeats",
         lambda x, s: F.index_add(x, ints([2, 0, 2, 1]), s, axis=1), normal(2, 3), normal(2, 4)),
    case("concatenate-axis0",
         lambda a, b, c: F.concatenate([a, b, c]), normal(1, 3), normal(2, 3), normal(3, 3)),
    case("concatenate-axis1",
         lambda a, b: F.concatenate([a, b], axis=1), normal(2, 1), normal(2, 3)),
    case("concatenate-axis-1-3d",
         lambda a, b: F.concatenate([a, b], axis=-1), normal(2, 3, 1), normal(2, 3, 2)),
    case("stack-axis0",
         lambda a, b, c: F.stack([a, b, c]), normal(2, 3), normal(2, 3), normal(2, 3)),
    case("stack-axis-1", lambda a, b: F.stack([a, b], axis=-1), normal(2, 3), normal(2, 3)),
    case("split-equal", sum_of_split_parts, normal(2, 6)),
    case("split-sizes", lambda a: (lambda p: p[0] * p[1][1:2])(F.split(a, [1, 3])), normal(4, 3)),
    case("where-broadcast", lambda a, b: F.where(bools(MASK), a, b), normal(3, 4), normal(4)),
    case("where-scalar-branch", lambda a: F.where(bools([[1], [0], [1]]), a, 2.0), normal(3, 4)),
    case("masked_fill-small", lambda a: F.masked_fill(a, bools([1, 0, 0, 1]), 0.5), normal(3, 4)),
    case("masked_fill-minus-1e9",
         lambda a: F.masked_fill(a, bools([1, 0, 0, 1]), -1e9), normal(3, 4)),
    case("exp", F.exp, normal(3, 4)),
    case("exp-method", lambda a: a.exp(), normal(2, 3, 4)),
    case("log", F.log, positive(3, 4)),
    case("log-method", lambda a: a.log(), positive(2, 3, 4)),
    case("sqrt", F.sqrt, positive(3, 4)),
    case("sqrt-method", lambda a: a.sqrt(), positive(2, 3, 4)),
    case("tanh", F.tanh, normal(3, 4)),
    case("tanh-method", lambda a: a.tanh(), normal(2, 3, 4)),
    case("sigmoid", F.sigmoid, 3 * normal(3, 4)),
    case("sigmoid-method", lambda a: a.sigmoid(), normal(2, 3, 4)),
    case("relu", F.relu, away_from_zero(3, 4)),
    case("relu-method", lambda a: a.relu(), away_from_zero(2, 3, 4)),
    case("gelu", F.gelu, 2 * normal(3, 4)),
    case("silu", F.silu, 2 * normal(3, 4)),
    case("softplus", F.softplus, 3 * normal(3, 4)),
    case("softmax-last", F.softmax, normal(3, 4)),
    case("softmax-axis0", lambda a: F.softmax(a, axis=0), normal(3, 4)),
    case("softmax-3d-axis1", lambda a: F.softmax(a, axis=1), normal(2, 3, 4)),
    case("log_softmax-last", F.log_softmax, normal(3, 4)),
    case("log_softmax-axis0", lambda a: F.log_softmax(a, axis=0), normal(3, 4)),
    case("log_softmax-3d-axis1", lambda a: F.log_softmax(a, axis=1), normal(2, 3, 4)),
    case("logsumexp-last", F.logsumexp, normal(3, 4)),
    case("logsumexp-axis0-keepdims", lambda a: F.logsumexp(a, axis=0, keepdims=True), normal(3, 4)),
    case("logsumexp-all", lambda a: F.logsumexp(a, axis=None), normal(3, 4)),
    case("logsumexp-tuple", lambda a: F.logsumexp(a, axis=(0, 2)), normal(2, 3, 4)),
    case("cross_entropy-2d", lambda z: F.cross_entropy(z, ints([0, 3, 3, 1, 2])), normal(5, 4)),
    case("cross_entropy-3d",
         lambda z: F.cross_entropy(z, ints([[0, 2, 1], [3, 3, 0]])), normal(2, 3, 4)),
    case("layer_norm-2d", F.layer_norm, normal(4, 5), 1 + 0.3 * normal(5), normal(5)),
    case("layer_norm-3d", F.layer_norm, normal(2, 3, 5), 1 + 0.3 * normal(5), normal(5)),
    case("rms_norm-2d", F.rms_norm, normal(4, 5), 1 + 0.3 * normal(5)),
    case("rms_norm-3d", F.rms_norm, normal(2, 3, 5), 1 + 0.3 * normal(5)),
    case("dropout-0.3", lambda a: (mm.manual_seed(7), F.dropout(a, 0.3))[1], normal(4, 5)),
    case("dropout-0.5", lambda a: (mm.manual_seed(8), F.dropout(a, 0.5))[1], normal(2, 3, 4)),
    case("topk-last", lambda a: F.topk(a, 2)[0], normal(3, 5)),
    case("topk-axis0", lambda a: F.topk(a, 3, axis=0)[0], normal(4, 3)),
    case("topk-3d-k1", lambda a: F.topk(a, 1)[0], normal(2, 3, 6)),
    case("attention-causal", lambda q, k, v: F.attention(q, k, v, causal=True),
         normal(*QKV_SMALL), normal(*QKV_SMALL), normal(*QKV_SMALL)),
    case("attention-full", lambda q, k, v: F.attention(q, k, v, causal=False),
         normal(*QKV_WIDE), normal(*QKV_WIDE), normal(*QKV_WIDE)),
    case("astype-float64", lambda a: a.astype("float64") * 2, normal(3, 4)),
    case("mlp-end-to-end", mlp_loss, normal(4, 3), normal(3, 5), normal(5), normal(5, 3)),
]


@pytest.mark.parametrize("fn, inputs", CASES)
def test_op_gradient_matches_finite_differences(fn, inputs, backend_name):
    assert fn(*[mm.tensor(x, dtype=x.dtype) for x in inputs]).backend == backend_name
    result = mm.gradcheck(fn, inputs)
    assert result.ok and result.max_rel_error < 1e-6, str(result)


def test_astype_float32_round_trip_passes_the_gradient_back(backend_name):
    """Through float32 and back: with inputs and a step that float32 holds exactly (multiples of
    1/8 and eps = 1/4), the finite differences of this linear function are exact."""
    inputs = np.arange(-6, 6).reshape(3, 4) / 8
    result = mm.gradcheck(lambda a: a.astype(np.float32).astype(np.float64) * 3, [inputs], eps=0.25)
    assert result.ok, str(result)
    x = mm.tensor(inputs, dtype=np.float64, requires_grad=True)
    x.astype(np.float32).sum().backward()
    assert x.grad.dtype == np.float64  # the gradient comes back in the input's dtype


class SquareForgettingTheTwo(mm.Function):
    """x^2 with a planted bug: its backward forgets the factor 2."""

    def forward(self, x):
        self.x = x
        return x * x

    def backward(self, g):
        return (g * self.x,)


def test_gradcheck_catches_a_wrong_backward_and_names_the_input(backend_name):
    a, b = normal(3), normal(2, 3)
    result = mm.gradcheck(lambda a, b: a * 3 + SquareForgettingTheTwo.apply(b), [a, b])
    assert not result.ok
    assert result.worst_input == 1 and len(result.worst_index) == 2
    assert result.max_rel_error == pytest.approx(0.5, abs=1e-6)  # analytic is half the truth
    assert "FAILED" in str(result) and "input 1" in str(result)
    with pytest.raises(AssertionError, match="input 1"):
        mm.assert_gradcheck(lambda a, b: a * 3 + SquareForgettingTheTwo.apply(b), [a, b])


def test_dropout_gradient_is_the_mask_scale(backend_name):
    """Inverted dropout scales kept entries by 1/(1-p) and zeroes the rest; so does its backward."""
    p = 0.25
    mm.manual_seed(3)
    x = mm.tensor(np.ones((50, 40)), requires_grad=True)
    y = F.dropout(x, p)
    y.sum().backward()
    values = y.numpy()
    np.testing.assert_allclose(mm.backend.to_numpy(x.grad), values)
    assert y.dtype == np.float32
    assert set(np.unique(values).tolist()) == {0.0, float(np.float32(1 / (1 - p)))}
    assert abs((values == 0).mean() - p) < 0.05
    assert F.dropout(x, p, training=False) is x and F.dropout(x, 0.0) is x


def test_topk_values_carry_the_gradient_and_indices_are_plain_integers(backend_name):
    x = mm.tensor([[0.1, 0.9, 0.5, 0.7]], requires_grad=True)
    values, indices = F.topk(x, 2)
    assert not isinstance(indices, mm.Tensor) and indices.dtype.kind == "i"
    assert mm.backend.to_numpy(indices).tolist() == [[1, 3]]
    (values * mm.tensor([[1.0, 10.0]])).sum().backward()
    assert mm.backend.to_numpy(x.grad).tolist() == [[0.0, 1.0, 0.0, 10.0]]


# ---- hand-computed values where a silent mistake is easy ---------------------------------------

def host(array):
    return mm.backend.to_numpy(array).tolist()


def test_index_add_accumulates_repeated_indices(backend_name):
    """`out[idx] += v` would add only once per repeated index; index_add must add every time."""
    x = mm.tensor([0.0, 10.0, 0.0], requires_grad=True)
    source = mm.tensor([1.0, 2.0, 3.0], requires_grad=True)
    out = F.index_add(x, ints([0, 2, 0]), source)
    assert out.numpy().tolist() == [4.0, 10.0, 2.0]
    (out * mm.tensor([1.0, 5.0, 7.0])).sum().backward()
    assert host(x.grad) == [1.0, 5.0, 7.0] and host(source.grad) == [1.0, 7.0, 1.0]


def test_max_shares_the_gradient_between_tied_maxima(backend_name):
    x = mm.tensor([[1.0, 3.0, 3.0], [2.0, 0.0, 1.0]], requires_grad=True)
    x.max(axis=1).sum().backward()
    assert host(x.grad) == [[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]]


def test_topk_breaks_ties_towards_the_lower_index(backend_name):
    _, indices = F.topk(mm.tensor([[1.0, 3.0, 3.0, 0.0, 3.0]]), 2)
    assert host(indices) == [[1, 2]]


def test_extreme_logits_give_exact_finite_results(backend_name):
    """Logits of +-1000 overflow a naive exp; every op here subtracts the max first."""
    z = mm.tensor([[1000.0, 0.0, -1000.0]], dtype=np.float64)
    with np.errstate(over="raise", divide="raise", invalid="raise"):
        assert F.softmax(z).numpy().tolist() == [[1.0, 0.0, 0.0]]
        assert F.log_softmax(z).numpy().tolist() == [[0.0, -1000.0, -2000.0]]
        pair = mm.tensor([1000.0, 1000.0], dtype=np.float64)
        assert F.logsumexp(pair).item() == pytest.approx(1000 + np.log(2))
        assert F.cross_entropy(z, ints([2])).item() == pytest.approx(2000.0)  # not -log(tiny)
        single = mm.tensor([[100.0, 0.0]])  # float32, whose -log(tiny) is 87.3
        assert F.cross_entropy(single, ints([1])).item() == pytest.approx(100.0)
        assert F.sigmoid(z).numpy().tolist() == [[1.0, 0.5, 0.0]]
        assert F.softplus(z).numpy().tolist() == [[1000.0, np.log(2), 0.0]]
