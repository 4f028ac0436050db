"""Elementwise arithmetic with NumPy broadcasting, and matrix multiplication.

Broadcasting copies an input along new or size-1 axes in the forward pass, so in the backward pass
the gradient is *summed* over those axes to get back to the input's shape (`unbroadcast`).
"""
from ..tensor import Function
from .row_blocks import blocked, for_each_block


def unbroadcast(grad, shape):
    """Sums `grad` over the axes that broadcasting added or stretched, giving an array of `shape`."""
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad


class _Binary(Function):
    """Shared shape check and bookkeeping for two-input elementwise ops."""

    def forward(self, a, b):
        if a.shape != b.shape:
            try:
                self.xp.broadcast_shapes(a.shape, b.shape)
            except ValueError:
                raise ValueError(
                    f"{type(self).__name__}: shapes {tuple(a.shape)} and {tuple(b.shape)} cannot be broadcast together"
                ) from None
        self.a_shape, self.b_shape = a.shape, b.shape
        return self.compute(a, b)


class Add(_Binary):
    def compute(self, a, b):
        return a + b

    def backward(self, g):
        return unbroadcast(g, self.a_shape), unbroadcast(g, self.b_shape)


class Sub(_Binary):
    def compute(self, a, b):
        return a - b

    def backward(self, g):
        return unbroadcast(g, self.a_shape), unbroadcast(-g, self.b_shape)


class Mul(_Binary):
    def compute(self, a, b):
        self.a, self.b = a, b
        return a * b

    def backward(self, g):
        return unbroadcast(g * self.b, self.a_shape), unbroadcast(g * self.a, self.b_shape)


class Div(_Binary):
    def compute(self, a, b):
        self.a, self.b = a, b
        return a / b

    def backward(self, g):
        g_over_b = g / self.b
        return unbroadcast(g_over_b, self.a_shape), unbroadcast(-g_over_b * self.a / self.b, self.b_shape)


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Pow(Function):
    """x ** p for a constant exponent p: d/dx = p x^(p-1)."""

    def forward(self, a, exponent):
        self.a, self.p = a, exponent
        return a**exponent

    def backward(self, g):
        return (g * self.p * self.a ** (self.p - 1),)


PRODUCT_BLOCK_ROWS = 512  # fewer rows than this run below BLAS's best speed


def rows_matmul(xp, a, b, block_rows: int | None = None):
    """a @ b for 2-D a and b. On the fast path, blocks of a's rows (PRODUCT_BLOCK_ROWS rows by
    default) run side by side on the pool (row_blocks.py); the plain path is one call."""
    block_rows = block_rows or PRODUCT_BLOCK_ROWS
    if not blocked(a) or a.shape[0] <= block_rows:
        return xp.matmul(a, b)
    out = xp.empty((a.shape[0], b.shape[1]), dtype=xp.result_type(a, b))
    for_each_block(lambda rows: xp.matmul(a[rows], b, out=out[rows]), a.shape[0], block_rows)
    return out


class MatMul(Function):
    """a @ b, including batched (..., n, k) @ (..., k, m) with broadcast batch axes.

    d(a@b)/da = g @ b^T and d(a@b)/db = a^T @ g; 1-D operands are treated as a row / a column.
    The common case of a Linear layer, (..., n, k) @ (k, m), runs as one 2-D matmul over all rows
    (a batched matmul would compute a (batch, k, m) gradient only to sum it).
    """

    def forward(self, a, b):
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("MatMul: operands must have at least one axis; use * for scalars")
        inner_a, inner_b = a.shape[-1], b.shape[-2] if b.ndim > 1 else b.shape[0]
        if inner_a != inner_b:
            raise ValueError(
                f"MatMul: shapes {tuple(a.shape)} and {tuple(b.shape)} do not fit "
                f"(the last axis of the first, {inner_a}, must equal the "
                f"{'second-to-last' if b.ndim > 1 else 'only'} axis of the second, {inner_b})"
            )
        self.a, self.b = a, b
        xp = self.xp
        if a.ndim >= 2 and b.ndim == 2:  # rows times one matrix: a Linear layer
            return rows_matmul(xp, a.reshape(-1, inner_a), b).reshape(tuple(a.shape[:-1]) + (b.shape[1],))
        return xp.matmul(a, b)

    def backward(self, g):
        xp, a, b = self.xp, self.a, self.b
        if a.ndim >= 2 and b.ndim == 2:  # rows of a times one matrix
            a2, g2 = a.reshape(-1, a.shape[-1]), g.reshape(-1, g.shape[-1])
            weight_rows = max(PRODUCT_BLOCK_ROWS // 8, a2.shape[1] // 4)  # a weight's gradient: few, long rows
            return rows_matmul(xp, g2, b.T).reshape(a.shape), rows_matmul(xp, a2.T, g2, block_rows=weight_rows)
        a2 = a[None, :] if a.ndim == 1 else a  # (1, k) for a vector
        b2 = b[:, None] if b.ndim == 1 else b  # (k, 1) for a vector
        g2 = g  # back to (..., n, m): the column axis first, so vector @ vector works too
        if b.ndim == 1:
            g2 = xp.expand_dims(g2, -1)
        if a.ndim == 1:
            g2 = xp.expand_dims(g2, -2)
        ga = xp.matmul(g2, xp.swapaxes(b2, -1, -2))
        gb = xp.matmul(xp.swapaxes(a2, -1, -2), g2)
        ga = unbroadcast(ga, a2.shape).reshape(a.shape)
        gb = unbroadcast(gb, b2.shape).reshape(b.shape)
        return ga, gb
