"""The Tensor and its autograd: dtypes, the graph, backward's order and bookkeeping, no_grad, detach."""
import sys

import numpy as np
import pytest

import minimoe as mm
import minimoe.functional as F


def host(array):
    return mm.backend.to_numpy(array)


def test_float32_by_default_float64_on_request(backend_name):
    assert mm.tensor([1.0, 2.0]).dtype == np.float32
    assert mm.tensor(np.zeros(3)).dtype == np.float32  # even from a float64 array
    assert mm.tensor([1.0, 2.0], dtype=np.float64).dtype == np.float64
    assert mm.tensor([1, 2]).dtype.kind == "i"  # integers stay integers (class ids, indices)
    assert mm.randn(2, 3).dtype == np.float32
    x = mm.tensor([1.0, 2.0])
    assert (x * 2.5 + 1).dtype == np.float32  # Python numbers take the tensor's dtype
    assert x.backend == backend_name and mm.tensor([1.0], dtype=np.float64).backend == backend_name


def test_ops_record_the_graph_only_when_an_input_requires_grad(backend_name):
    a, b = mm.tensor([1.0, 2.0], requires_grad=True), mm.tensor([3.0, 4.0])
    assert (a * b).requires_grad and not (a * b).is_leaf
    assert not (b * b).requires_grad and (b * b).is_leaf
    assert a.is_leaf and a.grad is None


def test_backward_fills_grad_with_backend_arrays(backend_name):
    x = mm.tensor([[1.0, -2.0, 3.0]], requires_grad=True)
    (x * x).sum().backward()
    assert mm.backend.name_of(x.grad) == backend_name
    assert x.grad.dtype == np.float32
    np.testing.assert_array_equal(host(x.grad), [[2.0, -4.0, 6.0]])


def test_broadcast_gradients_are_summed_back_to_each_input_shape(backend_name):
    a = mm.tensor([[1.0], [2.0], [3.0]], requires_grad=True)  # (3, 1)
    b = mm.tensor([[10.0, 20.0, 30.0, 40.0]], requires_grad=True)  # (1, 4)
    (a * b).sum().backward()
    np.testing.assert_array_equal(host(a.grad), [[100.0], [100.0], [100.0]])  # sum of b, per row
    np.testing.assert_array_equal(host(b.grad), [[6.0, 6.0, 6.0, 6.0]])  # sum of a, per column


def test_a_ten_thousand_op_chain_backpropagates_without_recursion():
    """On NumPy only: the graph walk is the same on every backend, and the stand-in is slower."""
    x = mm.tensor([1.0], dtype=np.float64, requires_grad=True)
    y = x
    for _ in range(10_000):
        y = y * 1.0001
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(1000)  # a recursive backward would need 10,000 frames
    try:
        y.sum().backward()
    finally:
        sys.setrecursionlimit(limit)
    np.testing.assert_allclose(host(x.grad), [1.0001**10_000], rtol=1e-9)


def test_gradients_accumulate_over_two_backward_calls(backend_name):
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    (x * 3).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_array_equal(host(x.grad), [3.0 + 2.0, 3.0 + 4.0])
    x.zero_grad()
    assert x.grad is None


def test_the_graph_is_freed_after_backward(backend_name):
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward()
    with pytest.raises(RuntimeError, match="retain_graph=True"):
        loss.backward()


def test_retain_graph_allows_a_second_backward(backend_name):
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    loss = (x * x).sum()
    loss.backward(retain_graph=True)
    loss.backward()
    np.testing.assert_array_equal(host(x.grad), [4.0, 8.0])  # 2x, twice


def test_no_grad_records_no_graph_and_restores_itself(backend_name):
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    with mm.no_grad():
        assert not mm.is_grad_enabled()
        y = F.softmax(x * 2)
    assert mm.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    with pytest.raises(KeyError), mm.no_grad():
        raise KeyError("an error inside the block")
    assert mm.is_grad_enabled()


def test_detach_cuts_the_graph_but_keeps_the_values(backend_name):
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 3).detach()
    assert not d.requires_grad and d.is_leaf
    np.testing.assert_array_equal(d.numpy(), [3.0, 6.0])
    (d * x).sum().backward()  # d is a constant now: d(d*x)/dx = d
    np.testing.assert_array_equal(host(x.grad), [3.0, 6.0])


def test_backward_on_a_non_scalar_needs_a_gradient(backend_name):
    x = mm.tensor(np.ones((2, 3)), requires_grad=True)
    y = x * 2
    with pytest.raises(RuntimeError, match=r"non-scalar .*shape \(2, 3\)"):
        y.backward()
    with pytest.raises(ValueError, match=r"shape \(3,\).*shape \(2, 3\)"):
        y.backward(mm.tensor(np.ones(3)))
    y.backward(mm.tensor(np.full((2, 3), 0.5)))
    np.testing.assert_array_equal(host(x.grad), np.ones((2, 3)))


def test_backward_on_a_tensor_without_grad_says_so(backend_name):
    with pytest.raises(RuntimeError, match="does not require grad"):
        mm.tensor([1.0]).sum().backward()


def test_a_diamond_gets_the_summed_gradient(backend_name):
    """x feeds two branches that meet again: both paths' gradients must arrive."""
    x = mm.tensor([1.0, -2.0], dtype=np.float64, requires_grad=True)
    h = x * 2  # shared node: reached from both branches
    y = (h * h + h.exp() + x * 3).sum()
    y.backward()
    xs = np.array([1.0, -2.0])
    np.testing.assert_allclose(host(x.grad), 8 * xs + 2 * np.exp(2 * xs) + 3, rtol=1e-12)


class CountingIdentity(mm.Function):
    """The identity, counting how often its backward runs."""

    calls = 0

    def forward(self, x):
        return x.copy()

    def backward(self, g):
        CountingIdentity.calls += 1
        return (g,)


def test_each_node_runs_backward_once_with_all_its_gradient(backend_name):
    """Reverse topological order: a node used by three later ops waits for all three."""
    CountingIdentity.calls = 0
    x = mm.tensor([1.0, 2.0], requires_grad=True)
    h = CountingIdentity.apply(x)
    (h * 2 + h * h + h).sum().backward()
    assert CountingIdentity.calls == 1
    np.testing.assert_array_equal(host(x.grad), [2 + 2 * 1.0 + 1, 2 + 2 * 2.0 + 1])


def test_to_moves_a_tensor_and_keeps_it_a_leaf(backend_name):
    x = mm.tensor([[1.5, -2.0]], requires_grad=True)
    other = "numpy" if backend_name != "numpy" else "strict"
    moved = x.to(other)
    assert moved.backend == other and moved.requires_grad and moved.is_leaf
    assert moved.dtype == np.float32
    np.testing.assert_array_equal(moved.numpy(), [[1.5, -2.0]])
    assert x.to(backend_name) is x


def test_describing_a_tensor(backend_name):
    x = mm.tensor(np.arange(6.0).reshape(2, 3), requires_grad=True)
    assert x.shape == (2, 3) and x.ndim == 2 and x.size == 6 and len(x) == 2
    assert repr(x) == f"Tensor(shape=(2, 3), dtype=float32, backend={backend_name}, requires_grad=True)"
    assert x.sum().item() == 15.0
    with pytest.raises(ValueError, match=r"one element.*\(2, 3\)"):
        x.item()
    assert isinstance(x.numpy(), np.ndarray)


def test_numpy_gives_a_snapshot_and_tensor_copies_its_input(backend_name):
    """Both are copies on every backend, as a GPU forces: no hidden sharing on NumPy alone."""
    source = np.array([1.0, 2.0], dtype=np.float32)
    x = mm.tensor(source)
    snapshot = x.numpy()
    x.data += 1  # an in-place update, as the optimisers do
    np.testing.assert_array_equal(snapshot, [1.0, 2.0])
    np.testing.assert_array_equal(source, [1.0, 2.0])


def test_leaf_gradients_are_their_own_writable_arrays():
    """x + y hands both inputs the same gradient array, and sum's backward is a broadcast view:
    each leaf still gets an array of its own that it may scale in place."""
    x = mm.tensor(np.ones(3), requires_grad=True)
    y = mm.tensor(np.ones(3), requires_grad=True)
    (x + y).sum().backward()
    x.grad *= 2
    np.testing.assert_array_equal(mm.backend.to_numpy(x.grad), [2, 2, 2])
    np.testing.assert_array_equal(mm.backend.to_numpy(y.grad), [1, 1, 1])
