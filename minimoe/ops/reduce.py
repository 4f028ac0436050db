"""Reductions: sum, mean, max over any axes."""
from ..tensor import Function


def _expand_back(g, in_shape, axis, keepdims):
    """Re-inserts reduced axes (as size 1) so the gradient broadcasts against the input."""
    if axis is None:
        return g.reshape((1,) * len(in_shape))
    if keepdims:
        return g
    axes = (axis,) if isinstance(axis, int) else axis
    axes = sorted(a % len(in_shape) for a in axes)
    shape = list(g.shape)
    for a in axes:
        shape.insert(a, 1)
    return g.reshape(shape)


class Sum(Function):
    def forward(self, x, axis=None, keepdims=False):
        self.in_shape, self.axis, self.keepdims = x.shape, axis, keepdims
        return x.sum(axis=axis, keepdims=keepdims)

    def backward(self, g):
        g = _expand_back(g, self.in_shape, self.axis, self.keepdims)
        return (self.xp.broadcast_to(g, self.in_shape),)


def mean(x, axis=None, keepdims=False):
    """The sum divided by the number of elements reduced."""
    if axis is None:
        count = x.size
    else:
        axes = (axis,) if isinstance(axis, int) else axis
        count = 1
        for a in axes:
            count *= x.shape[a]
    return Sum.apply(x, axis=axis, keepdims=keepdims) * (1.0 / count)


class Max(Function):
    """The gradient goes to the maximal entries; ties share it equally, so it stays a true
    (sub)gradient whatever order the maxima come in."""

    def forward(self, x, axis=None, keepdims=False):
        self.in_shape, self.axis, self.keepdims = x.shape, axis, keepdims
        out = x.max(axis=axis, keepdims=True)
        self.is_max = (x == out).astype(x.dtype)
        if keepdims:
            return out
        axes = range(x.ndim) if axis is None else [a % x.ndim for a in ((axis,) if isinstance(axis, int) else axis)]
        return out.reshape(tuple(n for i, n in enumerate(x.shape) if i not in axes))

    def backward(self, g):
        g = _expand_back(g, self.in_shape, self.axis, self.keepdims)
        share = self.is_max / self.is_max.sum(axis=self.axis, keepdims=True)
        return (g * share,)
