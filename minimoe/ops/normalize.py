"""The fused ops of a network: softmax and its log forms, cross-entropy, layer and RMS norm, dropout.

Each is one op with a hand-derived backward, not a chain of small ops: fewer passes over memory
and a numerically stable form (subtract the max before exponentiating).
"""
from ..tensor import Function
from .row_blocks import map_row_blocks


def _softmax(xp, x, axis):
    z = xp.exp(x - x.max(axis=axis, keepdims=True))  # exp of at most 0: never overflows
    z /= z.sum(axis=axis, keepdims=True)
    return z


class Softmax(Function):
    """y = exp(x - max) / sum exp(x - max). Backward: dx = y * (g - sum(g * y))."""

    def forward(self, x, axis):
        self.axis = axis
        self.y = _softmax(self.xp, x, axis)
        return self.y

    def backward(self, g):
        y = self.y
        return (y * (g - (g * y).sum(axis=self.axis, keepdims=True)),)


class LogSoftmax(Function):
    """y = x - logsumexp(x). Backward: dx = g - softmax(x) * sum(g)."""

    def forward(self, x, axis):
        xp, self.axis = self.xp, axis
        shifted = x - x.max(axis=axis, keepdims=True)
        y = shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))
        self.y = y
        return y

    def backward(self, g):
        return (g - self.xp.exp(self.y) * g.sum(axis=self.axis, keepdims=True),)


class LogSumExp(Function):
    """log sum_j exp(x_j) = m + log sum_j exp(x_j - m); its gradient is softmax(x)."""

    def forward(self, x, axis, keepdims):
        xp = self.xp
        m = x.max(axis=axis, keepdims=True)
        e = xp.exp(x - m)
        s = e.sum(axis=axis, keepdims=True)
        self.p, self.kept_shape = e / s, s.shape
        out = m + xp.log(s)
        return out if keepdims else out.squeeze(axis)

    def backward(self, g):
        return (g.reshape(self.kept_shape) * self.p,)  # reduced axes back as size 1 (any `axis`)


class CrossEntropy(Function):
    """Mean over positions of -log softmax(logits)[target], fused: the gradient is
    (softmax - onehot(target)) / n, with no log-softmax tensor kept for the backward."""

    def forward(self, logits, targets):
        xp = self.xp
        if tuple(targets.shape) != tuple(logits.shape[:-1]):
            raise ValueError(f"cross_entropy: targets of shape {tuple(targets.shape)} do not match logits of shape {tuple(logits.shape)} (expected {tuple(logits.shape[:-1])})")
        if targets.dtype.kind not in "iu":
            raise TypeError(f"cross_entropy: targets must be integer class ids, got dtype {targets.dtype}")
        n_classes = logits.shape[-1]
        flat = logits.reshape(-1, n_classes)
        t = targets.reshape(-1)
        if t.size and (int(t.min()) < 0 or int(t.max()) >= n_classes):
            raise ValueError(f"cross_entropy: targets must lie in [0, {n_classes}), got values from {int(t.min())} to {int(t.max())}")
        shifted = flat - flat.max(axis=-1, keepdims=True)  # (N, C), at most 0
        e = xp.exp(shifted)
        total = e.sum(axis=-1, keepdims=True)  # (N, 1)
        self.p = e / total
        self.t, self.shape = t, logits.shape
        # -log p[target] = log(sum exp) - shifted[target]: exact even where p[target] underflows to 0
        picked = shifted[xp.arange(t.size), t]  # (N,)
        return (xp.log(total[:, 0]) - picked).mean()

    def backward(self, g):
        grad = self.p.copy()
        grad[self.xp.arange(self.t.size), self.t] -= 1
        grad *= g / self.t.size
        return (grad.reshape(self.shape),)


def _reduce_to_last_axis(xp, a):
    return a.reshape(-1, a.shape[-1]).sum(axis=0)


def layer_norm_forward(xp, x, weight, bias, eps):
    """(y, x_hat, rstd) over the last axis of x, in place where it can (fewer passes over memory)."""
    mu = x.mean(axis=-1, keepdims=True)
    x_hat = x - mu
    var = xp.einsum("...i,...i->...", x_hat, x_hat)[..., None]  # sum of squares, no squared copy
    var /= x.shape[-1]
    var += eps
    rstd = xp.sqrt(var, out=var)
    rstd = xp.divide(1.0, rstd, out=rstd)
    x_hat *= rstd
    y = x_hat * weight
    y += bias
    return y, x_hat, rstd


def layer_norm_input_grad(xp, g, x_hat, rstd, weight):
    """dx = rstd * (d - mean(d) - x_hat * mean(d * x_hat)), d = g * weight."""
    d = g * weight
    d_mean = d.mean(axis=-1, keepdims=True)
    dx_hat_mean = xp.einsum("...i,...i->...", d, x_hat)[..., None] / d.shape[-1]
    d -= d_mean
    d -= x_hat * dx_hat_mean
    d *= rstd
    return d


class LayerNorm(Function):
    """y = (x - mean) / sqrt(var + eps) * weight + bias over the last axis (Ba et al. 2016).

    Backward with x_hat = normalised x and d = g * weight:
    dx = rstd * (d - mean(d) - x_hat * mean(d * x_hat)).
    Rows are independent, so both run in blocks of rows on the fast path (row_blocks.py).
    """

    def forward(self, x, weight, bias, eps):
        xp = self.xp
        y, self.x_hat, self.rstd = map_row_blocks(lambda x: layer_norm_forward(xp, x, weight, bias, eps), x)
        self.weight = weight
        return y

    def backward(self, g):
        xp, x_hat = self.xp, self.x_hat
        dx = map_row_blocks(lambda g, x_hat, rstd: layer_norm_input_grad(xp, g, x_hat, rstd, self.weight),
                            g, x_hat, self.rstd)
        return dx, _reduce_to_last_axis(xp, g * x_hat), _reduce_to_last_axis(xp, g)


class RMSNorm(Function):
    """y = x / sqrt(mean(x^2) + eps) * weight (Zhang & Sennrich 2019): layer norm without the
    centring or the bias. dx = rstd * (d - x_hat * mean(d * x_hat)), d = g * weight."""

    def forward(self, x, weight, eps):
        xp = self.xp
        self.rstd = 1.0 / xp.sqrt((x * x).mean(axis=-1, keepdims=True) + eps)
        self.x_hat = x * self.rstd
        self.weight = weight
        return self.x_hat * weight

    def backward(self, g):
        x_hat = self.x_hat
        d = g * self.weight
        dx = self.rstd * (d - x_hat * (d * x_hat).mean(axis=-1, keepdims=True))
        return dx, _reduce_to_last_axis(self.xp, g * x_hat)


class Dropout(Function):
    """Zeroes each entry with probability p and scales the rest by 1/(1-p) ("inverted" dropout,
    Srivastava et al. 2014), so evaluation needs no rescaling. The mask is drawn by the caller."""

    def forward(self, x, keep_mask, p):
        self.scale = keep_mask.astype(x.dtype) * (1.0 / (1.0 - p))  # in x's dtype: bool * float is float64
        return x * self.scale

    def backward(self, g):
        return (g * self.scale,)
