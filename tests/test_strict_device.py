"""The strict CuPy stand-in: NumPy's values, CuPy's refusals."""

import copy
import operator
import re

import numpy as np
import pytest

from minimoe.strict_device import (
    IMPLICIT_CONVERSION_ERROR,
    StrictDeviceArray,
    is_strict_array,
    xp,
)

HOST_A = np.arange(12, dtype=np.float64).reshape(3, 4) - 5.5   # (3, 4), no zeros
HOST_ROW = np.array([1.0, -2.0, 0.5, 4.0])                      # (4,) broadcasts over rows
HOST_ARRAY_REFUSED = re.escape("Unsupported type <class 'numpy.ndarray'>")   # CuPy's message


def device(host):
    return xp.asarray(host)


# --- values equal NumPy's -------------------------------------------------------------------

@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv,
                                operator.floordiv, operator.mod, operator.lt, operator.ge,
                                operator.eq, operator.ne, operator.pow])
def test_binary_operators_broadcast_like_numpy(op):
    host_b = np.abs(HOST_ROW) if op is operator.pow else HOST_ROW
    host_a = np.abs(HOST_A) if op is operator.pow else HOST_A
    result = op(device(host_a), device(host_b))
    assert is_strict_array(result)
    np.testing.assert_array_equal(result.get(), op(host_a, host_b))


@pytest.mark.parametrize("scalar", [2, 2.5, np.float32(2.5), np.int64(3)])
def test_scalars_on_either_side_are_accepted(scalar):
    a = device(HOST_A)
    for result, expected in [(a * scalar, HOST_A * scalar), (scalar * a, scalar * HOST_A),
                             (scalar - a, scalar - HOST_A), (a < scalar, HOST_A < scalar)]:
        assert is_strict_array(result)
        np.testing.assert_array_equal(result.get(), expected)


def test_operands_that_opt_out_of_ufuncs_get_their_reflected_operator():
    class TensorLike:                       # what an autograd Tensor does, on NumPy and CuPy
        __array_ufunc__ = None

        def __radd__(self, other):
            return "TensorLike.__radd__"

        def __rmatmul__(self, other):
            return "TensorLike.__rmatmul__"

    a = device(HOST_A)
    assert a + TensorLike() == "TensorLike.__radd__"
    assert a @ TensorLike() == "TensorLike.__rmatmul__"


def test_matmul_unary_and_integer_operators():
    a, w = device(HOST_A), device(HOST_A.T.copy())
    np.testing.assert_allclose((a @ w).get(), HOST_A @ HOST_A.T)
    np.testing.assert_array_equal((-a).get(), -HOST_A)
    np.testing.assert_array_equal(abs(a).get(), np.abs(HOST_A))
    bits = device(np.array([1, 2, 3]))
    np.testing.assert_array_equal((bits & 1).get(), [1, 0, 1])
    np.testing.assert_array_equal((~(bits > 1)).get(), [True, False, False])


def test_namespace_functions_match_numpy():
    a = device(HOST_A)
    softmax = xp.exp(a - a.max(axis=-1, keepdims=True))
    softmax = softmax / softmax.sum(axis=-1, keepdims=True)                    # (3, 4)
    expected = np.exp(HOST_A - HOST_A.max(axis=-1, keepdims=True))
    np.testing.assert_allclose(softmax.get(), expected / expected.sum(axis=-1, keepdims=True))
    top2 = xp.argsort(-a, axis=-1, kind="stable")[:, :2]                      # (3, 2)
    np.testing.assert_array_equal(top2.get(), [[3, 2]] * 3)
    np.testing.assert_array_equal(xp.take_along_axis(a, top2, axis=-1).get(),
                                  HOST_A[:, [3, 2]])
    np.testing.assert_array_equal(xp.where(a > 0, a, 0.0).get(), np.where(HOST_A > 0, HOST_A, 0))
    np.testing.assert_allclose(xp.einsum("td,ed->te", a, a).get(), HOST_A @ HOST_A.T)
    stacked = xp.concatenate([a, a[:1]], axis=0)
    assert stacked.shape == (4, 4) and is_strict_array(stacked)


def test_reductions_with_keepdims_give_device_arrays():
    a = device(HOST_A)
    for method in ("sum", "mean", "max", "min"):
        kept = getattr(a, method)(axis=1, keepdims=True)
        assert is_strict_array(kept) and kept.shape == (3, 1)
        np.testing.assert_allclose(kept.get(), getattr(HOST_A, method)(axis=1, keepdims=True))
    total = a.sum()
    assert is_strict_array(total) and total.ndim == 0       # CuPy: a 0-d array, not a scalar
    assert float(total) == pytest.approx(HOST_A.sum())
    assert int(a.argmax()) == 11
    assert a[1, 2].ndim == 0 and a[1, 2].item() == HOST_A[1, 2]


def test_attributes_and_methods_are_numpy_s():
    a = device(HOST_A.astype(np.float32))
    assert (a.shape, a.ndim, a.size, a.dtype) == ((3, 4), 2, 12, np.float32)
    assert a.T.shape == (4, 3) and is_strict_array(a.T)
    assert a.strides == (16, 4) and a.flags["C_CONTIGUOUS"]
    assert a.reshape(2, 6).shape == (2, 6) and a.ravel().shape == (12,)
    assert a.astype(xp.float64).dtype == np.float64
    clone = a.copy()
    clone[0, 0] = 100.0
    assert a[0, 0].item() != 100.0
    assert isinstance(a, xp.ndarray)
    assert len(a) == 3 and [row.shape for row in a] == [(4,)] * 3
    assert f"{a[0, 0]:.2f}" == "-5.50" and "strict" in repr(a)
    assert bool(a[0, 0] < 0)


def test_dtypes_and_constants_pass_through():
    assert xp.float32 is np.float32 and xp.int64 is np.int64
    assert xp.newaxis is None and xp.inf == np.inf
    assert xp.finfo(xp.float32).eps == np.finfo(np.float32).eps
    assert xp.zeros((2, 3), dtype=xp.float32).dtype == np.float32
    assert xp.isfinite(device(HOST_A)).all()


def test_tuple_results_and_submodules_are_wrapped():
    values, counts = xp.unique(device(np.array([3, 1, 3])), return_counts=True)
    np.testing.assert_array_equal(values.get(), [1, 3])
    np.testing.assert_array_equal(counts.get(), [1, 2])
    rows, cols = xp.nonzero(device(np.eye(2)))
    assert is_strict_array(rows) and rows.get().tolist() == cols.get().tolist() == [0, 1]
    norm = xp.linalg.norm(device(np.array([3.0, 4.0])))
    assert is_strict_array(norm) and float(norm) == 5.0


# --- indexing -----------------------------------------------------------------------------

def test_fancy_and_boolean_indexing_read():
    a = device(HOST_A)
    np.testing.assert_array_equal(a[device(np.array([2, 0, 2]))].get(), HOST_A[[2, 0, 2]])
    np.testing.assert_array_equal(a[[0, 1], [1, 2]].get(), HOST_A[[0, 1], [1, 2]])
    np.testing.assert_array_equal(a[a > 0].get(), HOST_A[HOST_A > 0])
    np.testing.assert_array_equal(a[:, None, 1:3].get(), HOST_A[:, None, 1:3])


def test_fancy_indexing_write_and_views():
    a = device(np.zeros((3, 4)))
    a[device(np.array([0, 2])), 1] = device(np.array([5.0, 7.0]))
    a[a > 6] = -1.0
    a[1][3] = 9.0                                        # a row is a view, as in NumPy and CuPy
    expected = np.zeros((3, 4))
    expected[[0, 2], 1] = [5.0, -1.0]
    expected[1, 3] = 9.0
    np.testing.assert_array_equal(a.get(), expected)


def test_add_at_accumulates_repeated_indices():
    out = xp.zeros(4, dtype=xp.float32)
    xp.add.at(out, device(np.array([0, 2, 2, 1, 2])), device(np.array([1., 2., 3., 4., 5.],
                                                                      dtype=np.float32)))
    np.testing.assert_array_equal(out.get(), [1.0, 4.0, 10.0, 0.0])
    rows = xp.zeros((3, 2))                                # the MoE combine / embedding backward
    xp.add.at(rows, device(np.array([1, 1])), device(np.ones((2, 2))))
    np.testing.assert_array_equal(rows.get(), [[0, 0], [2, 2], [0, 0]])


def test_in_place_operators_keep_the_wrapper():
    a = device(HOST_A.copy())
    same = a
    a += 1.0
    a *= device(HOST_ROW)
    a -= 2
    a /= 4
    assert a is same and is_strict_array(a)
    np.testing.assert_allclose(a.get(), ((HOST_A + 1.0) * HOST_ROW - 2) / 4)
    assert xp.multiply(a, 2.0, out=a) is a
    index = device(np.array([0, 0]))
    a[index] += 1.0                                         # NumPy semantics: adds once
    np.testing.assert_allclose(a[0].get(), ((HOST_A[0] + 1.0) * HOST_ROW - 2) / 2 + 1.0)


def test_float_int_bool_only_on_single_values():
    assert float(device(np.array(2.5))) == 2.5
    assert int(device(np.array(7))) == 7
    assert device(np.array(3.0)).item() == 3.0
    with pytest.raises(TypeError):
        float(device(HOST_A))
    with pytest.raises(ValueError):
        bool(device(HOST_A))
    with pytest.raises(TypeError):
        iter(device(np.array(1.0)))


# --- explicit transfers --------------------------------------------------------------------

def test_get_is_a_host_copy_round_trip():
    host = HOST_A.copy()
    a = xp.asarray(host)
    host[0, 0] = 1000.0                                    # the device copy does not follow
    back = a.get()
    assert type(back) is np.ndarray
    np.testing.assert_array_equal(back, HOST_A)
    back[0, 0] = -1000.0                                   # nor does the host copy lead
    assert a[0, 0].item() == HOST_A[0, 0]
    np.testing.assert_array_equal(xp.asnumpy(a), HOST_A)
    np.testing.assert_array_equal(xp.asnumpy(HOST_A), HOST_A)


def test_asarray_accepts_scalars_lists_and_device_arrays():
    assert xp.asarray(3.0).ndim == 0
    assert xp.asarray([[1, 2]], dtype=xp.float32).dtype == np.float32
    a = device(HOST_A)
    assert xp.asarray(a) is a
    assert xp.asarray(a, dtype=xp.float32).dtype == np.float32
    assert xp.asarray([a[0, 0], a[1, 1]]).shape == (2,)


def test_deepcopy_copies_device_data():
    a = device(HOST_A)
    clone = copy.deepcopy(a)
    clone[0, 0] = 99.0
    assert is_strict_array(clone) and a[0, 0].item() == HOST_A[0, 0]


# --- refusals, as CuPy ---------------------------------------------------------------------

def test_implicit_host_conversion_raises_cupy_message():
    a = device(HOST_A)
    for convert in (np.asarray, np.array, lambda x: np.array([x, x])):
        with pytest.raises(TypeError) as error:
            convert(a)
        assert str(error.value) == IMPLICIT_CONVERSION_ERROR
    assert IMPLICIT_CONVERSION_ERROR == ("Implicit conversion to a NumPy array is not allowed. "
                                         "Please use `.get()` to construct a NumPy array "
                                         "explicitly.")


@pytest.mark.parametrize("numpy_call", [np.exp, np.sum, np.zeros_like,
                                        lambda x: np.concatenate([x]),
                                        lambda x: np.add.reduce(x)])
def test_numpy_functions_refuse_device_arrays(numpy_call):
    with pytest.raises(TypeError, match="xp"):
        numpy_call(device(HOST_A))


@pytest.mark.parametrize("mix", [lambda a, h: a + h, lambda a, h: h + a, lambda a, h: a @ h.T,
                                 lambda a, h: h * a, lambda a, h: a < h])
def test_mixing_host_and_device_in_an_operator_raises(mix):
    with pytest.raises(TypeError, match=HOST_ARRAY_REFUSED):
        mix(device(HOST_A), HOST_A)


def test_namespace_refuses_host_arrays_and_ufuncs_refuse_lists():
    a = device(HOST_A)
    with pytest.raises(TypeError, match=HOST_ARRAY_REFUSED):
        xp.exp(HOST_A)
    with pytest.raises(TypeError, match=HOST_ARRAY_REFUSED):
        xp.concatenate([a, HOST_A])
    with pytest.raises(TypeError, match=HOST_ARRAY_REFUSED):
        xp.matmul(a, HOST_A.T, out=None)
    with pytest.raises(TypeError, match=re.escape("Unsupported type <class 'list'>")):
        xp.exp([1.0, 2.0])
    with pytest.raises(TypeError, match=HOST_ARRAY_REFUSED):
        xp.add.at(a, np.array([0]), 1.0)


def test_host_arrays_refused_as_index_or_value():
    a = device(HOST_A.copy())
    with pytest.raises(TypeError, match=HOST_ARRAY_REFUSED):
        a[np.array([0, 1])]
    with pytest.raises(TypeError, match=HOST_ARRAY_REFUSED):
        a[0] = HOST_A[1]
    with pytest.raises(TypeError, match=HOST_ARRAY_REFUSED):
        a.dot(HOST_A.T)


def test_only_the_ufunc_methods_cupy_has():
    a = device(HOST_A)
    np.testing.assert_array_equal(xp.add.reduce(a, axis=0).get(), HOST_A.sum(axis=0))
    with pytest.raises(NotImplementedError, match=re.escape("maximum.reduce")):
        xp.maximum.reduce(a, axis=0)
    with pytest.raises(TypeError, match="int64"):            # CuPy's atomic add has no int64
        xp.add.at(xp.zeros(3, dtype=xp.int64), device(np.array([0, 0])), 1)
    counts = xp.zeros(3, dtype=xp.int32)
    xp.add.at(counts, device(np.array([0, 0, 2])), 1)
    assert counts.get().tolist() == [2, 0, 1]
    with pytest.raises(AttributeError, match="errstate"):
        xp.errstate(over="ignore")


def test_random_generator_draws_device_arrays_with_cupy_methods_only():
    first, second = xp.random.default_rng(7), xp.random.default_rng(7)
    draw = first.standard_normal((2, 3), dtype=xp.float32)
    assert is_strict_array(draw) and draw.shape == (2, 3) and draw.dtype == np.float32
    again = second.standard_normal((2, 3), dtype=np.float32)
    np.testing.assert_array_equal(draw.get(), again.get())
    assert is_strict_array(first.uniform(-1.0, 1.0, size=4))
    assert is_strict_array(first.random(3)) and is_strict_array(first.integers(0, 5, size=3))
    for missing in ("normal", "choice", "permutation", "shuffle"):
        assert not hasattr(first, missing)


def test_wrapper_refuses_non_arrays():
    with pytest.raises(TypeError, match=re.escape("xp.asarray")):
        StrictDeviceArray([1, 2, 3])
    assert not is_strict_array(HOST_A)
