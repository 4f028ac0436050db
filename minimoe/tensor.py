"""The Tensor and reverse-mode autograd: the whole engine's idea in one file.

A `Tensor` holds a backend array (`data`), its gradient (`grad`, an array of the same shape) and,
when an op made it, that op (`_ctx`, a `Function`). Calling `loss.backward()` visits the graph in
reverse topological order -- iteratively, so a 10,000-op chain does not touch Python's recursion
limit -- and asks each op to turn the gradient of its output into gradients of its inputs.

Ops are coarse (a whole softmax, a whole layer norm) with hand-written backward passes in
`minimoe/ops/`, so a training step is a few hundred array calls, not millions of Python ones.
"""
from __future__ import annotations

import contextlib

import numpy as np

from . import backend

_grad_enabled = True
_profiler = None  # set by minimoe.profiler.profile(): then every op's forward and backward is timed


@contextlib.contextmanager
def no_grad():
    """Inside this block, ops record no graph (evaluation, optimiser updates, sampling)."""
    global _grad_enabled
    previous, _grad_enabled = _grad_enabled, False
    try:
        yield
    finally:
        _grad_enabled = previous


def is_grad_enabled() -> bool:
    return _grad_enabled


def set_profiler(profiler) -> None:
    """Time every op's forward and backward with `profiler` (see minimoe.profiler); None stops."""
    global _profiler
    _profiler = profiler


class Function:
    """One node of the graph. Subclasses write `forward(*arrays, **options)` and
    `backward(grad_output) -> one gradient (or None) per tensor input`.

    `forward` may keep what `backward` needs on `self`; the graph holds the node until backward
    has run (and frees it then unless `retain_graph=True`).
    """

    inputs: tuple[Tensor, ...] = ()

    @classmethod
    def apply(cls, *inputs, **options) -> Tensor:
        tensors = _as_tensors(cls.__name__, inputs)
        fn = cls()
        fn.xp = tensors[0].xp
        forward = fn.forward if _profiler is None else _profiler.timed(cls.__name__, "forward", fn.forward)
        out = Tensor(forward(*(t.data for t in tensors), **options))
        # An integer output (a cast to int, say) has no gradient: the graph stops there.
        if _grad_enabled and out.dtype.kind in "fc" and any(t.requires_grad for t in tensors):
            out.requires_grad = True
            out._ctx = fn
            fn.inputs = tensors
        return out

    def forward(self, *arrays, **options):
        raise NotImplementedError

    def backward(self, grad_output):
        raise NotImplementedError


def _as_tensors(op: str, inputs) -> tuple[Tensor, ...]:
    """Wraps Python numbers as constants of the tensors' dtype and checks that the inputs share
    one backend and one float dtype (mixing them is never silently right)."""
    first = next((x for x in inputs if isinstance(x, Tensor)), None)
    if first is None:
        raise TypeError(f"{op} needs at least one Tensor input")
    out = []
    for x in inputs:
        if isinstance(x, Tensor):
            if x.backend != first.backend:
                raise TypeError(
                    f"{op} got tensors on two backends ({first.backend} and {x.backend}); "
                    f"move one with .to({first.backend!r})"
                )
            if x.dtype != first.dtype and x.dtype.kind == "f" and first.dtype.kind == "f":
                raise TypeError(
                    f"{op} got tensors of two dtypes ({first.dtype} and {x.dtype}); "
                    f"convert one with .astype('{first.dtype}')"
                )
            out.append(x)
        elif isinstance(x, (int, float, np.integer, np.floating)):
            dtype = first.dtype
            if dtype.kind in "biu" and isinstance(x, (float, np.floating)):
                dtype = np.result_type(dtype, x)  # NumPy's promotion: int [1, 2] * 0.5 is [0.5, 1.0], never [0, 0]
            out.append(Tensor(first.xp.asarray(x, dtype=dtype)))
        else:
            if backend.name_of(x) != first.backend:
                raise TypeError(
                    f"{op} got a {backend.name_of(x)} array beside a {first.backend} tensor; "
                    f"make it a tensor on {first.backend!r} first (minimoe.tensor(..., backend_name=...))"
                )
            out.append(Tensor(x))
    return tuple(out)


class Tensor:
    """An array with a gradient and a memory of the op that made it."""

    __array_priority__ = 1000  # so `numpy_scalar * tensor` calls Tensor.__rmul__

    def __init__(self, data, requires_grad: bool = False):
        backend.name_of(data)  # raises a clear TypeError for anything that is not a backend array
        if data.dtype.kind not in "biufc":
            raise TypeError(f"a tensor holds numbers; got an array of dtype {data.dtype} (objects, strings "
                            "or dates); convert it to numbers first, e.g. np.asarray(x, dtype=np.float32)")
        self.data = data
        self.requires_grad = requires_grad
        self.grad = None
        self._ctx: Function | None = None

    @property
    def requires_grad(self) -> bool:
        return self._requires_grad

    @requires_grad.setter
    def requires_grad(self, value: bool) -> None:
        if value and self.data.dtype.kind not in "fc":
            raise TypeError(f"only a float tensor can require grad; this one is {self.data.dtype}, whose "
                            "gradient would be rounded to whole numbers. Make it float first: "
                            "minimoe.tensor(x, dtype=np.float32, requires_grad=True)")
        self._requires_grad = bool(value)

    # ---- what it is -------------------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def backend(self) -> str:
        return backend.name_of(self.data)

    @property
    def xp(self):
        return backend.xp_of(self.data)

    @property
    def is_leaf(self) -> bool:
        return self._ctx is None

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        return f"Tensor(shape={self.shape}, dtype={self.dtype}, backend={self.backend}{grad})"

    def __len__(self) -> int:
        return self.shape[0]

    # ---- leaving the graph or the device ------------------------------------------------------
    def detach(self) -> Tensor:
        """The same array, cut from the graph."""
        return Tensor(self.data)

    def numpy(self) -> np.ndarray:
        """A host copy of the values (an explicit device-to-host transfer on a GPU)."""
        return backend.to_numpy(self.data)

    def item(self) -> float:
        if self.size != 1:
            raise ValueError(f"item() needs a tensor with one element, this one has shape {self.shape}")
        return float(self.data.reshape(()))

    def to(self, name: str) -> Tensor:
        """A copy on backend `name` ('numpy', 'cupy' or 'strict'); a leaf that requires grad stays one."""
        if name == self.backend:
            return self
        return Tensor(backend.asarray(self.data, backend=name), requires_grad=self.requires_grad)

    def astype(self, dtype) -> Tensor:
        return ops.shape.Cast.apply(self, dtype=np.dtype(dtype))

    # ---- autograd ----------------------------------------------------------------------------
    def backward(self, grad=None, retain_graph: bool = False) -> None:
        """Fills `.grad` of every leaf that requires grad with d(self)/d(leaf), accumulating."""
        if not self.requires_grad:
            raise RuntimeError("backward() on a tensor that does not require grad (no input had requires_grad=True)")
        if grad is None:
            if self.size != 1:
                raise RuntimeError(
                    f"backward() on a non-scalar tensor of shape {self.shape} needs a gradient argument "
                    "of the same shape (or reduce it to a scalar first, e.g. with .sum())"
                )
            grad = self.xp.ones_like(self.data)
        elif isinstance(grad, Tensor):
            grad = grad.data
        if tuple(grad.shape) != self.shape:
            raise ValueError(f"backward() got a gradient of shape {tuple(grad.shape)} for a tensor of shape {self.shape}")

        grads = {id(self): grad}
        kept = set()  # ids of the arrays already stored as some leaf's .grad
        for node in reversed(_topological_order(self)):
            g = grads.pop(id(node), None)
            if g is None:
                continue
            fn = node._ctx
            if fn is None:  # a leaf: keep the gradient
                if g.dtype != node.data.dtype:  # a float64 gradient into a float32 leaf: the leaf's dtype
                    g = g.astype(node.data.dtype)
                if node.grad is not None:
                    g = node.grad + g
                elif g.base is not None or id(g) in kept or g is grad:
                    # A view (a broadcast, read-only) or an array another leaf or the caller also
                    # holds (x + y hands both the same one): give this leaf its own, writable copy.
                    g = g.copy()
                node.grad = g
                kept.add(id(g))
                continue
            if fn.inputs == ():
                raise RuntimeError(
                    "backward() through a graph that was already freed; call the first backward() "
                    "with retain_graph=True to go through it twice"
                )
            backward = fn.backward if _profiler is None else _profiler.timed(type(fn).__name__, "backward", fn.backward)
            for parent, pg in zip(fn.inputs, backward(g)):
                if pg is None or not parent.requires_grad:
                    continue
                if tuple(pg.shape) != parent.shape:
                    raise AssertionError(f"{type(fn).__name__}.backward gave shape {pg.shape} for an input of shape {parent.shape}")
                key = id(parent)
                grads[key] = pg if key not in grads else grads[key] + pg
            if not retain_graph:
                fn.inputs = ()  # frees the saved arrays' owners as soon as possible

    def zero_grad(self) -> None:
        self.grad = None

    # ---- operators and methods (each is an op in minimoe/ops) --------------------------------
    def __add__(self, other):
        return ops.arithmetic.Add.apply(self, other)

    def __radd__(self, other):
        return ops.arithmetic.Add.apply(other, self)

    def __sub__(self, other):
        return ops.arithmetic.Sub.apply(self, other)

    def __rsub__(self, other):
        return ops.arithmetic.Sub.apply(other, self)

    def __mul__(self, other):
        return ops.arithmetic.Mul.apply(self, other)

    def __rmul__(self, other):
        return ops.arithmetic.Mul.apply(other, self)

    def __truediv__(self, other):
        return ops.arithmetic.Div.apply(self, other)

    def __rtruediv__(self, other):
        return ops.arithmetic.Div.apply(other, self)

    def __neg__(self):
        return ops.arithmetic.Neg.apply(self)

    def __pow__(self, exponent):
        return ops.arithmetic.Pow.apply(self, exponent=float(exponent))

    def __matmul__(self, other):
        return ops.arithmetic.MatMul.apply(self, other)

    def __rmatmul__(self, other):
        return ops.arithmetic.MatMul.apply(other, self)

    def __getitem__(self, index):
        return ops.shape.GetItem.apply(self, index=index)

    def sum(self, axis=None, keepdims: bool = False):
        return ops.reduce.Sum.apply(self, axis=axis, keepdims=keepdims)

    def mean(self, axis=None, keepdims: bool = False):
        return ops.reduce.mean(self, axis=axis, keepdims=keepdims)

    def max(self, axis=None, keepdims: bool = False):
        return ops.reduce.Max.apply(self, axis=axis, keepdims=keepdims)

    def reshape(self, *shape):
        shape = shape[0] if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
        return ops.shape.Reshape.apply(self, shape=tuple(shape))

    def transpose(self, *axes):
        axes = axes[0] if len(axes) == 1 and isinstance(axes[0], (tuple, list)) else axes
        return ops.shape.Transpose.apply(self, axes=tuple(axes) if axes else None)

    permute = transpose

    @property
    def T(self):
        return self.transpose()

    def exp(self):
        return ops.pointwise.Exp.apply(self)

    def log(self):
        return ops.pointwise.Log.apply(self)

    def sqrt(self):
        return ops.pointwise.Sqrt.apply(self)

    def tanh(self):
        return ops.pointwise.Tanh.apply(self)

    def sigmoid(self):
        return ops.pointwise.Sigmoid.apply(self)

    def relu(self):
        return ops.pointwise.Relu.apply(self)


def _topological_order(root: Tensor) -> list[Tensor]:
    """Every tensor `root` depends on (through ops that need grad), inputs before outputs.

    An explicit stack instead of recursion: a node is emitted after all its inputs.
    """
    order, visited = [], set()
    stack = [(root, False)]
    while stack:
        node, inputs_done = stack.pop()
        if inputs_done:
            order.append(node)
            continue
        if id(node) in visited:
            continue
        visited.add(id(node))
        stack.append((node, True))
        if node._ctx is not None:
            stack.extend((p, False) for p in node._ctx.inputs if p.requires_grad and id(p) not in visited)
    return order


def tensor(data, requires_grad: bool = False, dtype=None, backend_name: str | None = None) -> Tensor:
    """A new tensor from a list, a scalar or an array; float data is float32 unless `dtype` says.

    `backend_name` picks the backend (default: the current one, see `minimoe.use`).
    """
    if isinstance(data, Tensor):
        data = data.data
    if dtype is None:
        probe = data if hasattr(data, "dtype") else np.asarray(data)
        dtype = np.float32 if probe.dtype.kind == "f" else probe.dtype
    array = backend.asarray(data, dtype=np.dtype(dtype), backend=backend_name or _backend_of(data))
    return Tensor(array, requires_grad=requires_grad)


def _backend_of(data) -> str:
    """Arrays stay where they are; lists and scalars go to the current backend."""
    if isinstance(data, (list, tuple, int, float, bool)):
        return backend.current()
    name = backend.name_of(data)
    return backend.current() if name == "numpy" else name


from . import ops  # noqa: E402  (the ops need Tensor and Function, defined above)
