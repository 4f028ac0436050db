"""Every op against PyTorch autograd: the same float64 inputs, the same output weights, and the
values and the gradients must agree. PyTorch is optional (a peer for the benchmark, never a
dependency), so this file is skipped where it is not installed."""
import operator

import numpy as np
import pytest

import minimoe as mm
import minimoe.functional as F

torch = pytest.importorskip("torch", reason="PyTorch is optional: `pip install torch` to compare")
TF = torch.nn.functional

from op_inputs import away_from_zero, bools, ints, normal, positive  # noqa: E402


def t_ints(values):
    return torch.as_tensor(np.asarray(values))


def t_bools(values):
    return torch.as_tensor(np.asarray(values, dtype=bool))


def dims(axis, ndim):
    """minimoe's `axis` (None, int or tuple) as torch's `dim` (always a tuple here)."""
    if axis is None:
        return tuple(range(ndim))
    return (axis,) if isinstance(axis, int) else axis


def dropout_keep_mask(shape, p, seed):
    """The mask minimoe's dropout draws after `manual_seed(seed)`, read back through ones."""
    mm.manual_seed(seed)
    return F.dropout(mm.tensor(np.ones(shape), dtype=np.float64), p).numpy() != 0


def case(name, mm_fn, torch_fn, *inputs):
    return pytest.param(mm_fn, torch_fn, inputs, id=name)


BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}
BROADCAST_PAIRS = [((3, 4), (3, 4)), ((3, 4), (4,)), ((2, 1, 4), (3, 1)), ((4,), (3, 1))]
MATMUL_PAIRS = [((3, 4), (4, 2)), ((2, 3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (4, 3)),
                ((3, 4), (4,)), ((4,), (4,)), ((4,), (2, 4, 3))]
TORCH_REDUCE = {"sum": torch.sum, "mean": torch.mean, "max": torch.amax}  # amax shares ties too
UNARY = [("exp", F.exp, torch.exp, normal), ("log", F.log, torch.log, positive),
         ("sqrt", F.sqrt, torch.sqrt, positive), ("tanh", F.tanh, torch.tanh, normal),
         ("sigmoid", F.sigmoid, torch.sigmoid, normal),
         ("relu", F.relu, torch.relu, away_from_zero),
         ("gelu", F.gelu, lambda a: TF.gelu(a, approximate="tanh"), normal),
         ("silu", F.silu, TF.silu, normal), ("softplus", F.softplus, TF.softplus, normal)]
MASK = [[1, 0, 1, 1], [0, 0, 1, 0], [1, 1, 0, 1]]
ROWS = [[0, 1, 1, 0], [1, 1, 0, 0], [0, 0, 0, 1]]  # gather indices along axis 0 of a (2, 4) input
KEEP = dropout_keep_mask((4, 5), 0.3, seed=5)
QKV_SMALL, QKV_WIDE = (2, 2, 5, 4), (1, 3, 4, 2)  # (B, H, T, Dh)


def reduce_case(op, axis, keepdims):
    return case(f"{op}-axis{axis}-keepdims{keepdims}",
                lambda a: getattr(a, op)(axis=axis, keepdims=keepdims),
                lambda a: TORCH_REDUCE[op](a, dim=dims(axis, a.ndim), keepdim=keepdims),
                normal(2, 3, 4))


CASES = [
    *[case(f"{name}-{sa}-{sb}", op, op, normal(*sa), positive(*sb) if name == "div" else normal(*sb))
      for name, op in BINARY.items() for sa, sb in BROADCAST_PAIRS],
    case("rdiv-scalar", lambda a: 2 / a, lambda a: 2 / a, positive(3, 4)),
    case("neg", operator.neg, operator.neg, normal(3, 4)),
    *[case(f"pow-{p}", lambda a, p=p: a**p, lambda a, p=p: a**p, positive(3, 4))
      for p in (2, 3, 0.5, -1.5)],
    *[case(f"matmul-{sa}-{sb}", operator.matmul, operator.matmul, normal(*sa), normal(*sb))
      for sa, sb in MATMUL_PAIRS],
    *[reduce_case(op, axis, keepdims)
      for op in TORCH_REDUCE for axis in (None, 1, -1, (0, 2)) for keepdims in (False, True)],
    case("reshape", lambda a: a.reshape(6, 4), lambda a: a.reshape(6, 4), normal(2, 3, 4)),
    case("transpose-T", lambda a: a.T, lambda a: a.T, normal(3, 4)),
    case("permute", lambda a: a.permute(2, 0, 1), lambda a: a.permute(2, 0, 1), normal(2, 3, 4)),
    case("getitem-slices", lambda a: a[1:, ::2], lambda a: a[1:, ::2], normal(3, 4)),
    case("getitem-int-ellipsis-none",
         lambda a: a[-1, ..., None, 1], lambda a: a[-1, ..., None, 1], normal(2, 3, 4)),
    case("getitem-fancy-repeats",
         lambda a: a[ints([0, 2, 0, 0])], lambda a: a[t_ints([0, 2, 0, 0])], normal(3, 4)),
    case("getitem-fancy-pairs", lambda a: a[ints([0, 2, 2]), ints([1, 1, 3])],
         lambda a: a[t_ints([0, 2, 2]), t_ints([1, 1, 3])], normal(3, 4)),
    case("getitem-bool-mask", lambda a: a[bools(MASK)], lambda a: a[t_bools(MASK)], normal(3, 4)),
    case("gather-axis1", lambda a: F.gather(a, ints([[0, 0, 2], [1, 3, 1]]), axis=1),
         lambda a: torch.gather(a, 1, t_ints([[0, 0, 2], [1, 3, 1]])), normal(2, 4)),
    case("gather-axis0", lambda a: F.gather(a, ints(ROWS), axis=0),
         lambda a: torch.gather(a, 0, t_ints(ROWS)), normal(2, 4)),
    case("index_add-axis0", lambda x, s: F.index_add(x, ints([0, 2, 0, 0]), s),
         lambda x, s: torch.index_add(x, 0, t_ints([0, 2, 0, 0]), s), normal(3, 2), normal(4, 2)),
    case("index_add-axis1", lambda x, s: F.index_add(x, ints([2, 0, 2, 1]), s, axis=1),
         lambda x, s: torch.index_add(x, 1, t_ints([2, 0, 2, 1]), s), normal(2, 3), normal(2, 4)),
    case("concatenate", lambda a, b: F.concatenate([a, b], axis=1),
         lambda a, b: torch.cat([a, b], dim=1), normal(2, 1), normal(2, 3)),
    case("stack", lambda a, b: F.stack([a, b], axis=-1), lambda a, b: torch.stack([a, b], dim=-1),
         normal(2, 3), normal(2, 3)),
    case("split-equal", lambda a: (lambda p: p[0] * p[2] + p[1])(F.split(a, 3, axis=1)),
         lambda a: (lambda p: p[0] * p[2] + p[1])(torch.tensor_split(a, 3, dim=1)), normal(2, 6)),
    case("split-sizes",
         lambda a: F.split(a, [1, 3])[1], lambda a: torch.split(a, [1, 3])[1], normal(4, 3)),
    case("where", lambda a, b: F.where(bools(MASK), a, b),
         lambda a, b: torch.where(t_bools(MASK), a, b), normal(3, 4), normal(4)),
    case("masked_fill", lambda a: F.masked_fill(a, bools([1, 0, 0, 1]), -1e9),
         lambda a: a.masked_fill(t_bools([1, 0, 0, 1]), -1e9), normal(3, 4)),
    *[case(name, fn, torch_fn, make(3, 4)) for name, fn, torch_fn, make in UNARY],
    case("softmax",
         lambda a: F.softmax(a, axis=1), lambda a: torch.softmax(a, dim=1), normal(2, 3, 4)),
    case("log_softmax",
         lambda a: F.log_softmax(a, axis=-1), lambda a: torch.log_softmax(a, dim=-1), normal(2, 3, 4)),
    case("logsumexp", lambda a: F.logsumexp(a, axis=0, keepdims=True),
         lambda a: torch.logsumexp(a, dim=0, keepdim=True), normal(3, 4)),
    case("logsumexp-all",
         lambda a: F.logsumexp(a, axis=None), lambda a: torch.logsumexp(a, dim=(0, 1)), normal(3, 4)),
    case("cross_entropy-3d", lambda z: F.cross_entropy(z, ints([[0, 2, 1], [3, 3, 0]])),
         lambda z: TF.cross_entropy(z.reshape(-1, 4), t_ints([0, 2, 1, 3, 3, 0])), normal(2, 3, 4)),
    case("layer_norm", F.layer_norm, lambda x, w, b: TF.layer_norm(x, (5,), w, b, eps=1e-5),
         normal(2, 3, 5), normal(5), normal(5)),
    case("rms_norm", F.rms_norm, lambda x, w: TF.rms_norm(x, (5,), w, eps=1e-6),
         normal(2, 3, 5), normal(5)),
    case("dropout", lambda a: (mm.manual_seed(5), F.dropout(a, 0.3))[1],
         lambda a: a * torch.as_tensor(KEEP) / 0.7, normal(4, 5)),
    case("topk", lambda a: F.topk(a, 2, axis=0)[0],
         lambda a: torch.topk(a, 2, dim=0).values, normal(4, 3)),
    case("attention-causal", lambda q, k, v: F.attention(q, k, v, causal=True),
         lambda q, k, v: TF.scaled_dot_product_attention(q, k, v, is_causal=True),
         normal(*QKV_SMALL), normal(*QKV_SMALL), normal(*QKV_SMALL)),
    case("attention-full", lambda q, k, v: F.attention(q, k, v, causal=False),
         TF.scaled_dot_product_attention, normal(*QKV_WIDE), normal(*QKV_WIDE), normal(*QKV_WIDE)),
    case("astype", lambda a: a.astype(np.float32).astype(np.float64) * 2,
         lambda a: a.to(torch.float32).to(torch.float64) * 2, normal(3, 4)),
]


@pytest.mark.parametrize("mm_fn, torch_fn, inputs", CASES)
def test_op_matches_torch_autograd(mm_fn, torch_fn, inputs, backend_name):
    ours = [mm.tensor(x, dtype=np.float64, requires_grad=True) for x in inputs]
    theirs = [torch.tensor(x, dtype=torch.float64, requires_grad=True) for x in inputs]
    out, expected = mm_fn(*ours), torch_fn(*theirs)
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)

    weights = np.random.default_rng(0).standard_normal(out.shape)  # every output entry matters
    (out * mm.tensor(weights, dtype=np.float64)).sum().backward()
    (expected * torch.as_tensor(weights)).sum().backward()
    for i, (x, y) in enumerate(zip(ours, theirs)):
        np.testing.assert_allclose(mm.backend.to_numpy(x.grad), y.grad.numpy(),
                                   rtol=1e-9, atol=1e-12, err_msg=f"gradient of input {i}")


def test_topk_indices_match_torch(backend_name):
    x = normal(5, 7)
    _, indices = F.topk(mm.tensor(x, dtype=np.float64), 3)
    expected = torch.topk(torch.as_tensor(x), 3).indices.numpy()
    np.testing.assert_array_equal(mm.backend.to_numpy(indices), expected)
