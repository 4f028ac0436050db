"""A strict stand-in for CuPy, so the GPU code path can be tested on a machine without a GPU.

Why it exists: minimoe is built and tested where there is no GPU, yet every op must also run on
CuPy. Code that is fine on NumPy can still fail on CuPy, because CuPy keeps arrays in device memory
and refuses *implicit* trips to the host: `np.asarray(cupy_array)` raises TypeError, and CuPy ufuncs
refuse NumPy arrays and lists ("Unsupported type ..."). Here a host NumPy array is wrapped in
`StrictDeviceArray`, and `xp` is a NumPy look-alike namespace that keeps CuPy's rules, so running
the tests with the "strict" backend catches a hidden host copy, or an op that calls `numpy` instead
of `xp`, before the code ever meets a GPU.

What it mimics (CuPy 13/14):
- anything that asks for `__array__` (`np.asarray(a)`, `np.savez`, `plt.plot`) raises CuPy's
  TypeError; the explicit ways out are `a.get()` and `xp.asnumpy(a)`, the way in `xp.asarray(host)`;
- functions, ufuncs and operators refuse NumPy arrays mixed with device arrays; ufuncs refuse lists;
- reductions and scalar indexing give 0-d device arrays; `float(a)`, `a.item()`, `bool(a)` work
  (each is a device sync on CuPy, so keep them out of inner loops);
- ufunc methods exist only where CuPy has them (`add.at`, but no `maximum.reduce`), and `add.at`
  takes only the dtypes of CuPy's atomic add (no int64);
- `xp.random.default_rng(seed)` has only `standard_normal`, `uniform`, `random`, `integers`.
Where it is stricter than CuPy, on purpose:
- NumPy functions called on a device array (`np.exp(a)`, `np.concatenate([a])`) raise; CuPy would
  dispatch them to itself (NEP 13/18), but ops must use the `xp` of their inputs;
- a NumPy array as an index or as the value of `a[i] = v` raises; CuPy would copy it to the device.
What it does not mimic: there is no device and no speed-up; float64 costs what float32 costs;
`a[idx] = v` with repeated indices keeps NumPy's last-write-wins (undefined on CuPy: use `add.at`);
out-of-range indices raise here but wrap around on CuPy.
"""

import functools
import types

import numpy as np

IMPLICIT_CONVERSION_ERROR = ("Implicit conversion to a NumPy array is not allowed. "
                             "Please use `.get()` to construct a NumPy array explicitly.")

# Ufunc methods CuPy implements, and for which ufuncs (cupy/_core/_kernel.pyx).
_CUPY_UFUNC_METHODS = {"at": {"add", "subtract", "maximum", "minimum"},
                       "reduce": {"add", "multiply"}, "accumulate": {"add", "multiply"},
                       "reduceat": {"add"}}
# CuPy's scatter-add is CUDA's atomicAdd: these dtypes only (no int64, no bool).
_ATOMIC_ADD_DTYPES = {np.dtype(t) for t in (np.int32, np.uint32, np.uint64,
                                            np.float16, np.float32, np.float64)}
_GENERATOR_METHODS = ("standard_normal", "uniform", "random", "integers")
_ABSENT = object()


def _unsupported(obj, fix="copy it to the device first with xp.asarray(...)"):
    return TypeError(f"Unsupported type {type(obj)}: {fix}")


def _to_host(obj, originals, allow_host=False):
    """Swap device arrays (also inside lists/tuples) for their data; refuse NumPy arrays."""
    if isinstance(obj, StrictDeviceArray):
        originals[id(obj._data)] = obj          # so `out=a` gives back `a` itself
        return obj._data
    if isinstance(obj, np.ndarray) and not allow_host:
        raise _unsupported(obj)
    if isinstance(obj, (list, tuple)):
        items = [_to_host(item, originals, allow_host) for item in obj]
        return items if isinstance(obj, list) else tuple(items)
    return obj


def _to_device(obj, originals):
    """Wrap array results; NumPy scalars become 0-d arrays, as CuPy returns them."""
    if isinstance(obj, np.ndarray):
        same = originals.get(id(obj))
        return same if same is not None else StrictDeviceArray(obj)
    if isinstance(obj, np.generic):
        return StrictDeviceArray(np.asarray(obj))
    if isinstance(obj, (list, tuple)):
        items = [_to_device(item, originals) for item in obj]
        if isinstance(obj, list):
            return items
        return type(obj)(*items) if hasattr(obj, "_fields") else tuple(items)  # namedtuple results
    return obj


def _call_on_device(func, *args, **kwargs):
    """Call a NumPy callable with device arrays swapped for their data, and wrap what comes back."""
    originals = {}
    args = _to_host(args, originals)
    kwargs = {key: _to_host(value, originals) for key, value in kwargs.items()}
    return _to_device(func(*args, **kwargs), originals)


def _device_function(func):
    """`func` made to take and return device arrays (and refuse host arrays)."""
    return functools.update_wrapper(functools.partial(_call_on_device, func), func)


class StrictDeviceArray:
    """A host NumPy array posing as a `cupy.ndarray`: same methods and operators, no implicit exit.

    Attributes and methods (shape, dtype, T, reshape, sum, astype, ...) are NumPy's, with array
    results wrapped again. Only `.get()` (and `xp.asnumpy`) hands back a NumPy array.
    """

    __slots__ = ("_data",)
    __hash__ = None   # unhashable, like NumPy and CuPy arrays

    def __init__(self, data):
        if not isinstance(data, np.ndarray):
            raise TypeError(f"StrictDeviceArray wraps a numpy.ndarray, got {type(data)}; "
                            "use xp.asarray(...) to make a device array")
        self._data = data

    def get(self):
        """The explicit device -> host copy, as `cupy.ndarray.get()`."""
        return self._data.copy()

    def __getattr__(self, name):
        if name.startswith("_"):   # keep NumPy's protocols (__array_interface__, ...) out of reach
            raise AttributeError(f"'StrictDeviceArray' object has no attribute '{name}'")
        attr = getattr(self._data, name)
        return functools.partial(_call_on_device, attr) if callable(attr) else _to_device(attr, {})

    def __getitem__(self, index):
        return _to_device(self._data[_to_host(index, {})], {})

    def __setitem__(self, index, value):
        self._data[_to_host(index, {})] = _to_host(value, {})

    # Syncs CuPy allows: each copies a value to the host.
    def __float__(self):
        return float(self._data)

    def __int__(self):
        return int(self._data)

    def __bool__(self):
        return bool(self._data)

    def __format__(self, spec):
        return format(self._data, spec)

    def __len__(self):
        return len(self._data)

    def __iter__(self):
        if self._data.ndim == 0:
            raise TypeError("iteration over a 0-d array")
        return (self[i] for i in range(len(self._data)))

    def __repr__(self):
        return "strict_device_" + repr(self._data)   # strict_device_array([...], dtype=...)

    def __str__(self):
        return str(self._data)

    # Refusals: the implicit trips to the host that CuPy forbids.
    def __array__(self, dtype=None, copy=None):
        raise TypeError(IMPLICIT_CONVERSION_ERROR)

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        # NumPy's operators land here for `np.float32(2) * a` (CuPy accepts it) and
        # `host_array + a` (CuPy refuses it); the strict ufunc does both. Other calls are refused.
        if method == "__call__" and any(isinstance(x, (np.generic, np.ndarray)) for x in inputs):
            return getattr(xp, ufunc.__name__)(*inputs, **kwargs)
        name = ufunc.__name__ + ("" if method == "__call__" else "." + method)
        raise TypeError(f"numpy.{name}() was given a strict device array; "
                        f"call xp.{name}() with xp the array module of the inputs")

    def __array_function__(self, func, types, args, kwargs):
        raise TypeError(f"numpy.{func.__name__}() was given a strict device array; "
                        f"call xp.{func.__name__}() with xp the array module of the inputs")


def _defers_to(other):
    """CuPy's rule (NEP 13): an operand that opts out of ufuncs gets its reflected operator."""
    opt_out = getattr(other, "__array_ufunc__", _ABSENT)   # None for, e.g., an autograd Tensor
    if opt_out is _ABSENT:
        return getattr(other, "__array_priority__", 0) > 0
    return opt_out is None


def _operator(ufunc_name, reflected=False, inplace=False):
    def apply(self, other):
        ufunc = getattr(xp, ufunc_name)
        if inplace:
            return ufunc(self, other, out=self)
        if reflected:
            return ufunc(other, self)
        return NotImplemented if _defers_to(other) else ufunc(self, other)
    return apply


def _unary_operator(ufunc_name):
    return lambda self: getattr(xp, ufunc_name)(self)


# Every operator goes through the strict ufunc, so `a + host_array` fails as on CuPy.
_BINARY = {"add": "add", "sub": "subtract", "mul": "multiply", "truediv": "divide",
           "floordiv": "floor_divide", "mod": "remainder", "pow": "power", "matmul": "matmul",
           "and": "bitwise_and", "or": "bitwise_or", "xor": "bitwise_xor",
           "lshift": "left_shift", "rshift": "right_shift"}
_COMPARISON = {"lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal",
               "eq": "equal", "ne": "not_equal"}
_UNARY = {"neg": "negative", "pos": "positive", "abs": "absolute", "invert": "invert"}
for _op, _name in _BINARY.items():
    setattr(StrictDeviceArray, f"__{_op}__", _operator(_name))
    setattr(StrictDeviceArray, f"__r{_op}__", _operator(_name, reflected=True))
    setattr(StrictDeviceArray, f"__i{_op}__", _operator(_name, inplace=True))
for _op, _name in _COMPARISON.items():
    setattr(StrictDeviceArray, f"__{_op}__", _operator(_name))
for _op, _name in _UNARY.items():
    setattr(StrictDeviceArray, f"__{_op}__", _unary_operator(_name))
del _op, _name


class StrictUfunc:
    """A NumPy ufunc with CuPy's rules: operands are device arrays or scalars (no lists, no host
    arrays), and only the methods CuPy implements (`xp.add.at` is `cupy.add.at`)."""

    def __init__(self, ufunc):
        self._ufunc = ufunc
        self._call = _device_function(ufunc)
        self.__name__ = ufunc.__name__

    def __call__(self, *operands, **kwargs):
        for operand in operands:
            if isinstance(operand, (list, tuple)):
                raise _unsupported(operand, "ufuncs take arrays or scalars; use xp.asarray(...)")
        return self._call(*operands, **kwargs)

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        supported = _CUPY_UFUNC_METHODS.get(name)
        if supported is not None and self.__name__ not in supported:
            raise NotImplementedError(f"`cupy_{self.__name__}.{name}` is not supported yet "
                                      f"(CuPy has {name} only for {sorted(supported)})")
        if name == "at" and self.__name__ == "add":
            return self._add_at
        attr = getattr(self._ufunc, name)
        return _device_function(attr) if callable(attr) else attr

    def _add_at(self, a, indices, values=None):
        if a.dtype not in _ATOMIC_ADD_DTYPES:
            raise TypeError(f"add.at on {a.dtype}: CuPy's scatter-add supports only int32, "
                            "float16, float32, float64, uint32, uint64")
        _device_function(self._ufunc.at)(a, indices, values)

    def __repr__(self):
        return f"<strict ufunc '{self.__name__}'>"


class StrictGenerator:
    """`xp.random.default_rng(seed)`: NumPy's generator, drawing device arrays.

    Like `cupy.random.Generator` it has no `normal`, `choice`, `permutation` or `shuffle`: draw
    those on the host with `np.random.default_rng` and `xp.asarray` the result. The streams
    differ from CuPy's, so seeded runs match across backends only for host draws.
    """

    def __init__(self, seed=None):
        self._host = np.random.default_rng(seed)

    def __getattr__(self, name):
        if name not in _GENERATOR_METHODS:
            raise AttributeError(f"cupy.random.Generator has no '{name}' (it has "
                                 f"{', '.join(_GENERATOR_METHODS)}); draw it on the host "
                                 "with numpy.random.default_rng and copy it with xp.asarray")
        return _device_function(getattr(self._host, name))


class StrictNamespace:
    """Mirrors a NumPy module: functions and ufuncs are wrapped; dtypes and constants pass."""

    def __init__(self, module):
        self._module = module
        self.__name__ = f"strict_device({module.__name__})"

    def __getattr__(self, name):
        if name.startswith("_"):
            raise AttributeError(name)
        if name == "errstate":
            raise AttributeError("CuPy has no errstate (only cupyx.errstate); "
                                 "write the op so that it needs no floating-point error state")
        attr = getattr(self._module, name)
        if isinstance(attr, types.ModuleType):
            wrapped = StrictNamespace(attr)
        elif isinstance(attr, np.ufunc):
            wrapped = StrictUfunc(attr)
        elif callable(attr) and not isinstance(attr, type):
            wrapped = _device_function(attr)
        else:
            wrapped = attr   # dtypes, finfo, iinfo, newaxis, inf, pi, ...
        setattr(self, name, wrapped)   # cache: the next look-up skips __getattr__
        return wrapped

    def __repr__(self):
        return f"<strict stand-in for module '{self._module.__name__}'>"


def is_strict_array(obj):
    return isinstance(obj, StrictDeviceArray)


def asarray(obj, dtype=None):
    """Host data -> device array (a copy, like `cupy.asarray`); a device array is returned as is."""
    if isinstance(obj, StrictDeviceArray):
        return obj if dtype is None else obj.astype(dtype, copy=False)
    return array(obj, dtype)


def array(obj, dtype=None):
    """Always a new device array; host NumPy data is welcome, this is the explicit copy."""
    return StrictDeviceArray(np.array(_to_host(obj, {}, allow_host=True), dtype=dtype))


def asnumpy(obj):
    """The explicit device -> host copy (`cupy.asnumpy`); host input comes back as NumPy."""
    return obj.get() if isinstance(obj, StrictDeviceArray) else np.asarray(obj)


xp = StrictNamespace(np)
xp.ndarray = StrictDeviceArray
xp.asarray, xp.array, xp.asnumpy = asarray, array, asnumpy
xp.random = types.SimpleNamespace(default_rng=StrictGenerator)
