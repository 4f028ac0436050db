"""Bad input raises an error whose message names the problem (and, where there is one, the fix)."""
import re

import numpy as np
import pytest

import minimoe as mm
import minimoe.functional as F


def ones(*shape):
    return mm.tensor(np.ones(shape))


@pytest.mark.parametrize("op, name", [(lambda a, b: a + b, "Add"), (lambda a, b: a - b, "Sub"),
                                      (lambda a, b: a * b, "Mul"), (lambda a, b: a / b, "Div")])
def test_elementwise_shape_mismatch_names_the_op_and_both_shapes(op, name, backend_name):
    with pytest.raises(ValueError, match=rf"{name}.*\(2, 3\).*\(4,\).*cannot be broadcast"):
        op(ones(2, 3), ones(4))


def test_matmul_shape_mismatch_names_the_op_and_both_shapes(backend_name):
    with pytest.raises(ValueError, match=r"MatMul.*\(2, 3\).*\(4, 5\)"):
        ones(2, 3) @ ones(4, 5)
    with pytest.raises(ValueError, match=r"MatMul.*\(5, 2, 3\).*\(2,\)"):
        ones(5, 2, 3) @ ones(2)


def test_mixing_two_backends_raises_type_error():
    on_numpy = mm.tensor([1.0, 2.0])
    on_strict = mm.tensor([1.0, 2.0], backend_name="strict")
    with pytest.raises(TypeError, match=r"two backends \(numpy and strict\).*\.to\('numpy'\)"):
        on_numpy + on_strict
    with pytest.raises(TypeError, match=r"two backends \(strict and numpy\)"):
        on_strict * on_numpy
    with pytest.raises(TypeError, match="numpy array beside a strict tensor"):
        on_strict + np.ones(2)


def test_mixing_float32_and_float64_raises_type_error(backend_name):
    single, double = mm.tensor([1.0, 2.0]), mm.tensor([1.0, 2.0], dtype=np.float64)
    with pytest.raises(TypeError, match=r"two dtypes \(float32 and float64\).*astype\('float32'\)"):
        single + double
    with pytest.raises(TypeError, match=r"two dtypes \(float64 and float32\)"):
        double @ single


def test_an_unknown_backend_lists_the_known_ones():
    with pytest.raises(ValueError, match="unknown backend 'jax'.*numpy, cupy, strict"):
        mm.use("jax")
    with pytest.raises(ValueError, match="unknown backend 'gpu'.*numpy, cupy, strict"):
        mm.tensor([1.0]).to("gpu")
    assert mm.backend.current() == "numpy"


@pytest.mark.skipif(mm.backend.cupy_status()[0], reason="a GPU is usable here: use('cupy') works")
def test_cupy_without_a_gpu_says_what_is_missing_and_how_to_install():
    with pytest.raises(RuntimeError) as error:
        mm.use("cupy")
    message = str(error.value)
    assert "'cupy' backend is not usable" in message
    assert "pip install cupy-cuda12x" in message
    assert re.search(r"not installed|no GPU", message)
    assert mm.backend.current() == "numpy"  # a failed switch changes nothing


def test_cross_entropy_with_targets_out_of_range(backend_name):
    logits = ones(2, 3, 4)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, 4\), got values from 0 to 4"):
        F.cross_entropy(logits, mm.tensor([[0, 1, 2], [3, 4, 0]]))
    with pytest.raises(ValueError, match=r"\[0, 4\), got values from -1 to 2"):
        F.cross_entropy(logits, mm.tensor([[0, 1, 2], [-1, 1, 0]]))


def test_cross_entropy_with_targets_of_the_wrong_shape_or_dtype(backend_name):
    expected = r"targets of shape \(3,\).*logits of shape \(2, 3, 4\).*\(2, 3\)"
    with pytest.raises(ValueError, match=expected):
        F.cross_entropy(ones(2, 3, 4), mm.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="integer class ids.*float32"):
        F.cross_entropy(ones(2, 4), mm.tensor([0.0, 1.0]))


def test_load_state_dict_with_a_wrong_shape_names_the_key_and_changes_nothing(backend_name):
    model = mm.nn.MLP(3, 4, 2)
    before = model.state_dict()
    bad = {name: value + 1 for name, value in before.items()}
    bad["fc2.weight"] = np.zeros((5, 2), dtype=np.float32)
    expected = r"'fc2\.weight' has shape \(5, 2\), the model expects \(4, 2\)"
    with pytest.raises(ValueError, match=expected):
        model.load_state_dict(bad)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name], err_msg=name)  # fc1 unwritten too


def test_load_state_dict_with_missing_or_extra_keys_names_them(backend_name):
    model = mm.nn.MLP(3, 4, 2)
    state = model.state_dict()
    del state["fc1.bias"]
    state["fc3.weight"] = np.zeros(2)
    with pytest.raises(ValueError, match=r"missing \['fc1\.bias'\], unexpected \['fc3\.weight'\]"):
        model.load_state_dict(state)


def error(name, make_error, kind, message):
    return pytest.param(make_error, kind, message, id=name)


ERRORS = [
    error("reshape", lambda: ones(2, 3).reshape(4, 2),
          ValueError, r"Reshape.*\(2, 3\) \(6 elements\) to \(4, 2\)"),
    error("transpose", lambda: ones(2, 3).transpose(0, 0), ValueError, "Transpose.*not a permutation"),
    error("concatenate", lambda: F.concatenate([ones(2, 3), ones(2, 4)]),
          ValueError, r"\(2, 3\), \(2, 4\) differ outside axis 0"),
    error("stack", lambda: F.stack([ones(2, 3), ones(3, 2)]),
          ValueError, "stack: all tensors need the same shape"),
    error("split", lambda: F.split(ones(5, 2), 2), ValueError, "size 5 does not divide into 2"),
    error("split-sizes", lambda: F.split(ones(5, 2), [2, 2]),
          ValueError, "add up to 4, not the axis size 5"),
    error("topk", lambda: F.topk(ones(2, 3), 4), ValueError, "k=4 must be between 1 and .* 3"),
    error("gather", lambda: F.gather(ones(2, 3), mm.tensor([0, 1])),
          ValueError, "gather: index has 1 axes but x has 2"),
    error("index_add", lambda: F.index_add(ones(3, 2), mm.tensor([0, 1]), ones(2, 3)),
          ValueError, r"source has shape \(2, 3\), expected \(2, 2\)"),
    error("layer_norm", lambda: F.layer_norm(ones(2, 3), ones(4), ones(4)),
          ValueError, r"layer_norm.*\(2, 3\).*\(4,\)"),
    error("rms_norm", lambda: F.rms_norm(ones(2, 3), ones(4)),
          ValueError, r"rms_norm.*\(2, 3\).*\(4,\)"),
    error("dropout", lambda: F.dropout(ones(2), 1.0), ValueError, r"p must be in \[0, 1\), got 1.0"),
    error("attention", lambda: F.attention(ones(1, 1, 2, 4), ones(1, 1, 3, 4), ones(1, 1, 3, 4)),
          ValueError, "q, k, v must share one shape"),
    error("linear", lambda: mm.nn.Linear(3, 2)(ones(5, 4)),
          ValueError, r"last axis 3, got shape \(5, 4\)"),
    error("embedding", lambda: mm.nn.Embedding(4, 2)(mm.tensor([1, 4])),
          ValueError, "4 rows; got ids from 1 to 4"),
    error("mlp-activation", lambda: mm.nn.MLP(2, 3, 1, activation="swish"),
          ValueError, "unknown activation 'swish'"),
    error("optimiser-lr", lambda: mm.optim.SGD(mm.nn.Linear(2, 2).parameters(), lr=0),
          ValueError, "learning rate must be positive"),
    error("optimiser-empty", lambda: mm.optim.Adam([]), ValueError, "got no parameters"),
    error("not-an-array", lambda: mm.Tensor([1.0, 2.0]),
          TypeError, "expected a NumPy, CuPy or strict-device array, got list"),
]


@pytest.mark.parametrize("make_error, kind, message", ERRORS)
def test_bad_input_raises_a_clear_error(make_error, kind, message, backend_name):
    with pytest.raises(kind, match=message):
        make_error()
