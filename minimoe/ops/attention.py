"""Fused (causal) multi-head scaled dot-product attention (Vaswani et al. 2017, eq. 1) as one op.

softmax(Q K^T / sqrt(d) + mask) V, over q, k, v of shape (B, H, T, Dh). Written as one op so the
backward reuses the attention probabilities P instead of a chain of small saved tensors:
dV = P^T dO, dP = dO V^T, dS = P * (dP - sum(dP * P)), dQ = dS K / sqrt(d), dK = dS^T Q / sqrt(d).

`attention_forward` and `attention_backward` are the whole computation for any number of
(batch, head) pairs. The op runs them on all pairs at once (the plain path), or on blocks of a few
pairs at a time on the thread pool (row_blocks.py), so that a block's (T, T) scores stay in cache
from the product to the softmax to the next product: each pair is computed exactly as before.
"""
import math

from ..tensor import Function
from . import row_blocks
from .row_blocks import map_row_blocks


def attention_forward(xp, q, k, v, scale, causal):
    """(output, P) for q, k, v of shape (pairs, T, Dh)."""
    scores = xp.matmul(q, xp.swapaxes(k, -1, -2))  # (pairs, T, T)
    scores *= scale
    if causal:
        t = q.shape[-2]
        future = xp.triu(xp.full((t, t), -xp.inf, dtype=scores.dtype), k=1)  # -inf where key is after query
        scores += future
    scores -= scores.max(axis=-1, keepdims=True)
    p = xp.exp(scores, out=scores)
    p /= p.sum(axis=-1, keepdims=True)
    return xp.matmul(p, v), p


def attention_backward(xp, g, q, k, v, p, scale):
    """(dq, dk, dv) for the gradient g of the output, all of shape (pairs, T, Dh)."""
    dv = xp.matmul(xp.swapaxes(p, -1, -2), g)
    ds = xp.matmul(g, xp.swapaxes(v, -1, -2))  # dP, turned into dS in place
    ds -= (ds * p).sum(axis=-1, keepdims=True)
    ds *= p
    ds *= scale
    dq = xp.matmul(ds, k)
    dk = xp.matmul(xp.swapaxes(ds, -1, -2), q)
    return dq, dk, dv


class Attention(Function):
    def forward(self, q, k, v, causal):
        xp = self.xp
        if not (q.shape == k.shape == v.shape) or q.ndim != 4:
            raise ValueError(f"attention: q, k, v must share one shape (B, H, T, Dh), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
        self.shape = q.shape
        b, h, t, dh = q.shape
        self.scale = 1.0 / math.sqrt(dh)
        # Heads usually arrive as a transposed view; batched matmul on strided views is several
        # times slower than on contiguous copies, so copy once here.
        q, k, v = (xp.ascontiguousarray(a).reshape(b * h, t, dh) for a in (q, k, v))
        self.block = max(1, row_blocks.BLOCK_BYTES // (q.itemsize * t * t))  # pairs whose (T, T) scores fill a block
        out, p = map_row_blocks(lambda q, k, v: attention_forward(xp, q, k, v, self.scale, causal),
                                q, k, v, block_rows=self.block)
        self.q, self.k, self.v, self.p = q, k, v, p
        return out.reshape(self.shape)

    def backward(self, g):
        xp = self.xp
        g = xp.ascontiguousarray(g).reshape(self.q.shape)
        grads = map_row_blocks(lambda g, q, k, v, p: attention_backward(xp, g, q, k, v, p, self.scale),
                               g, self.q, self.k, self.v, self.p, block_rows=self.block)
        return tuple(a.reshape(self.shape) for a in grads)


def attention(q, k, v, causal=True):
    return Attention.apply(q, k, v, causal=causal)
