"""Ops that move values around without changing them: reshape, transpose, indexing, concatenate,
stack, split, dtype casts. Their backward passes move the gradient back the same way."""
from ..tensor import Function, Tensor, _as_tensors


class Reshape(Function):
    def forward(self, x, shape):
        self.in_shape = x.shape
        try:
            return x.reshape(shape)
        except ValueError:
            raise ValueError(f"Reshape: cannot reshape a tensor of shape {tuple(x.shape)} ({x.size} elements) to {shape}") from None

    def backward(self, g):
        return (g.reshape(self.in_shape),)


class Transpose(Function):
    """Permutes axes (all reversed when `axes` is None, as NumPy); backward applies the inverse."""

    def forward(self, x, axes=None):
        self.axes = tuple(reversed(range(x.ndim))) if axes is None else tuple(a % x.ndim for a in axes)
        if sorted(self.axes) != list(range(x.ndim)):
            raise ValueError(f"Transpose: axes {axes} are not a permutation of the {x.ndim} axes of shape {tuple(x.shape)}")
        return x.transpose(self.axes)

    def backward(self, g):
        inverse = [0] * len(self.axes)
        for i, a in enumerate(self.axes):
            inverse[a] = i
        return (g.transpose(inverse),)


def _unwrap_index(index):
    """Tensors used as indices (e.g. expert ids) index by their arrays."""
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    return index


class GetItem(Function):
    """x[index] with basic or fancy indexing. The backward adds the gradient into a zero array at
    the same positions with `add.at`, so an index that appears twice gets both contributions."""

    def forward(self, x, index):
        self.in_shape, self.index = x.shape, _unwrap_index(index)
        return x[self.index]

    def backward(self, g):
        xp = self.xp
        grad = xp.zeros(self.in_shape, dtype=g.dtype)
        if _is_basic(self.index):
            grad[self.index] = g  # slices and ints never repeat a position: a plain write is enough
        elif _is_row_lookup(self.index):  # an embedding lookup: rows picked by an integer array
            rows = self.index.reshape(-1)
            grad += scatter_add_rows(xp, rows, g.reshape((rows.size,) + self.in_shape[1:]), self.in_shape[0])
        else:
            xp.add.at(grad, self.index, g)
        return (grad,)


def _is_row_lookup(index) -> bool:
    return hasattr(index, "dtype") and index.dtype.kind in "iu"


def scatter_add_rows(xp, rows, values, n_rows):
    """out[rows[i]] += values[i] into zeros of n_rows rows, as `add.at` does, but by sorting: the
    rows of one index are summed together by `add.reduceat`, at a fraction of add.at's time
    (add.at goes element by element). The sums agree with add.at's to float rounding (reduceat
    adds in pairs, add.at one after another)."""
    out = xp.zeros((n_rows,) + tuple(values.shape[1:]), dtype=values.dtype)
    if rows.size == 0:
        return out
    rows = xp.where(rows < 0, rows + n_rows, rows)  # negative ids count from the end, as in x[ids]
    order = xp.argsort(rows, kind="stable")
    sorted_rows = rows[order]
    starts = xp.flatnonzero(xp.concatenate([xp.ones(1, dtype=bool), sorted_rows[1:] != sorted_rows[:-1]]))
    out[sorted_rows[starts]] = xp.add.reduceat(values[order], starts, axis=0)
    return out


def _is_basic(index) -> bool:
    parts = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, slice)) or i is None or i is Ellipsis for i in parts)


class Cast(Function):
    def forward(self, x, dtype):
        self.in_dtype = x.dtype
        return x.astype(dtype)

    def backward(self, g):
        return (g.astype(self.in_dtype),)


class Concatenate(Function):
    def forward(self, *xs, axis=0):
        self.axis = axis
        self.sizes = [x.shape[axis] for x in xs]
        try:
            return self.xp.concatenate(xs, axis=axis)
        except ValueError:
            shapes = ", ".join(str(tuple(x.shape)) for x in xs)
            raise ValueError(f"concatenate: shapes {shapes} differ outside axis {axis}") from None

    def backward(self, g):
        bounds = [sum(self.sizes[: i + 1]) for i in range(len(self.sizes) - 1)]
        return tuple(self.xp.split(g, bounds, axis=self.axis))


def concatenate(tensors, axis=0):
    return Concatenate.apply(*tensors, axis=axis)


def stack(tensors, axis=0):
    """Stacks along a new axis: each input gains a size-1 axis, then they are concatenated."""
    tensors = _as_tensors("stack", tensors)
    shapes = {t.shape for t in tensors}
    if len(shapes) != 1:
        raise ValueError(f"stack: all tensors need the same shape, got {sorted(shapes)}")
    axis = axis % (tensors[0].ndim + 1)
    expanded = [t.reshape(t.shape[:axis] + (1,) + t.shape[axis:]) for t in tensors]
    return concatenate(expanded, axis=axis)


def split(x, sections, axis=0):
    """Splits into `sections` equal parts (an int) or at the given sizes (a list); each part is a
    slice of x, so the gradients of all parts flow back into x."""
    n = x.shape[axis]
    if isinstance(sections, int):
        if n % sections:
            raise ValueError(f"split: axis {axis} of size {n} does not divide into {sections} equal parts")
        sizes = [n // sections] * sections
    else:
        sizes = list(sections)
        if sum(sizes) != n:
            raise ValueError(f"split: sizes {sizes} add up to {sum(sizes)}, not the axis size {n}")
    parts, start = [], 0
    axis = axis % x.ndim
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        parts.append(x[index])
        start += size
    return parts
