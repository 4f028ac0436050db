"""Ops that pick or place entries by integer index: gather, index-add (scatter-add), where, masked
fill and top-k. Indices are plain integer arrays: they carry no gradient."""
from ..tensor import Function, Tensor, _as_tensors
from .arithmetic import unbroadcast


def _raw(index):
    return index.data if isinstance(index, Tensor) else index


def along_axis_positions(xp, index, axis):
    """A tuple of integer arrays that addresses `x[..., index, ...]` entry by entry, i.e. the
    positions `take_along_axis(x, index, axis)` reads (other axes by broadcasting aranges)."""
    positions = []
    for d in range(index.ndim):
        if d == axis:
            positions.append(index)
        else:
            shape = [1] * index.ndim
            shape[d] = index.shape[d]
            positions.append(xp.arange(index.shape[d]).reshape(shape))
    return tuple(positions)


class Gather(Function):
    """out = take_along_axis(x, index, axis). Backward: scatter-add the gradient back to the
    positions read (a position read twice collects both gradients)."""

    def forward(self, x, index, axis):
        if index.ndim != x.ndim:
            raise ValueError(f"gather: index has {index.ndim} axes but x has {x.ndim} (shapes {tuple(index.shape)} and {tuple(x.shape)})")
        self.in_shape, self.axis = x.shape, axis % x.ndim
        self.positions = along_axis_positions(self.xp, index, self.axis)
        return x[self.positions]

    def backward(self, g):
        grad = self.xp.zeros(self.in_shape, dtype=g.dtype)
        self.xp.add.at(grad, self.positions, g)
        return (grad,)


def gather(x, index, axis=-1):
    return Gather.apply(x, index=_raw(index), axis=axis)


class IndexAdd(Function):
    """out = x, then out[index[i]] += source[i] along `axis` (torch's index_add; a scatter-add).
    Repeated indices accumulate. Backward: x gets g, source gets g read back at index."""

    def forward(self, x, source, index, axis):
        axis = axis % x.ndim
        expected = x.shape[:axis] + (len(index),) + x.shape[axis + 1 :]
        if tuple(source.shape) != tuple(expected):
            raise ValueError(f"index_add: source has shape {tuple(source.shape)}, expected {expected} for x {tuple(x.shape)} and {len(index)} indices along axis {axis}")
        self.index, self.axis = index, axis
        out = x.copy()
        self.xp.add.at(out, (slice(None),) * axis + (index,), source)
        return out

    def backward(self, g):
        return g, self.xp.take(g, self.index, axis=self.axis)


def index_add(x, index, source, axis=0):
    return IndexAdd.apply(x, source, index=_raw(index), axis=axis)


class PermuteRows(Function):
    """Rows `x[index]` for an index with no repeats (a permutation, or a selection of distinct rows).

    Because no row is read twice, the backward is a plain write of the gradient back to the rows
    read -- much cheaper than the scatter-add a general gather needs. The MoE dispatch uses it to
    sort token copies by expert.
    """

    def forward(self, x, index):
        self.index, self.in_shape = index, x.shape
        return x[index]

    def backward(self, g):
        grad = self.xp.zeros(self.in_shape, dtype=g.dtype)
        grad[self.index] = g
        return (grad,)


def permute_rows(x, index):
    return PermuteRows.apply(x, index=_raw(index))


class UnpermuteRows(Function):
    """The inverse of `PermuteRows`: a zero array of `n_rows` rows with row index[i] set to x[i]
    (rows not named stay zero: the MoE uses them for dropped tokens)."""

    def forward(self, x, index, n_rows):
        self.index = index
        out = self.xp.zeros((n_rows,) + tuple(x.shape[1:]), dtype=x.dtype)
        out[index] = x
        return out

    def backward(self, g):
        return (g[self.index],)


def unpermute_rows(x, index, n_rows):
    return UnpermuteRows.apply(x, index=_raw(index), n_rows=n_rows)


class DispatchRows(Function):
    """Rows of the k-major copies [x; x; ...; x] named by `index`, read as x[index % n] without
    making the k copies: the MoE dispatch (each token's copy for its c-th choice is row c*n + t).

    Backward: each token's gradient is the sum over its copies (zero for a copy not dispatched).
    """

    def forward(self, x, index, copies):
        self.index, self.copies, self.in_shape = index, copies, x.shape
        return x[index % x.shape[0]]

    def backward(self, g):
        n = self.in_shape[0]
        full = self.xp.zeros((self.copies * n,) + tuple(g.shape[1:]), dtype=g.dtype)
        full[self.index] = g
        return (full.reshape((self.copies,) + tuple(self.in_shape)).sum(axis=0),)


def dispatch_rows(x, index, copies):
    return DispatchRows.apply(x, index=_raw(index), copies=copies)


class CombineRows(Function):
    """y[t] = sum over the dispatched copies r of token t of gate[r] * rows[r]: the MoE combine.

    rows (M, d) are the experts' outputs in dispatch order, gate (M, 1) their gates, index (M,) the
    copy each row came from (copy c of token t is c*n + t). One op instead of a product, an
    unpermute and a sum over the k copies: no (k*n, d) temporaries in the backward pass.
    Backward: d rows[r] = gate[r] * g[t(r)], d gate[r] = rows[r] . g[t(r)].
    """

    def forward(self, rows, gate, index, copies, n_tokens):
        xp = self.xp
        self.rows, self.gate, self.tokens = rows, gate, index % n_tokens
        full = xp.zeros((copies * n_tokens,) + tuple(rows.shape[1:]), dtype=rows.dtype)
        full[index] = rows * gate
        return full.reshape((copies, n_tokens) + tuple(rows.shape[1:])).sum(axis=0)

    def backward(self, g):
        g_rows = g[self.tokens]  # (M, d) each row's token's gradient
        g_gate = self.xp.einsum("ij,ij->i", g_rows, self.rows)[:, None]
        g_rows *= self.gate
        return g_rows, g_gate


def combine_rows(rows, gate, index, copies, n_tokens):
    return CombineRows.apply(rows, gate, index=_raw(index), copies=copies, n_tokens=n_tokens)


class Where(Function):
    """cond ? a : b elementwise; the gradient flows to whichever side was chosen."""

    def forward(self, a, b, cond):
        self.cond, self.a_shape, self.b_shape = cond, a.shape, b.shape
        return self.xp.where(cond, a, b)

    def backward(self, g):
        zero = self.xp.zeros((), dtype=g.dtype)
        return unbroadcast(self.xp.where(self.cond, g, zero), self.a_shape), unbroadcast(self.xp.where(self.cond, zero, g), self.b_shape)


def where(cond, a, b):
    a, b = _as_tensors("where", (a, b))
    return Where.apply(a, b, cond=_raw(cond))


def masked_fill(x, mask, value):
    """x with `value` wherever `mask` is True (e.g. -inf on future positions); no gradient there."""
    return where(mask, value, x)


def topk(x, k, axis=-1):
    """The k largest entries along `axis`, in descending order: (values, indices).

    Values are a gather of x, so they carry the gradient; indices are a plain integer array. Ties
    go to the lower index (a stable sort), the same on NumPy and CuPy.
    """
    n = x.shape[axis]
    if not 1 <= k <= n:
        raise ValueError(f"topk: k={k} must be between 1 and the size of axis {axis}, which is {n}")
    xp = x.xp
    order = xp.argsort(-x.data, axis=axis, kind="stable")
    indices = xp.take(order, xp.arange(k), axis=axis)
    return gather(x, indices, axis=axis), indices
