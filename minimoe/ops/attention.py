"""Fused (causal) multi-head scaled dot-product attention (Vaswani et al. 2017, eq. 1) as one op.

softmax(Q K^T / sqrt(d) + mask) V, over q, k, v of shape (B, H, T, Dh). Written as one op so the
backward reuses the attention probabilities P instead of a chain of small saved tensors:
dV = P^T dO, dP = dO V^T, dS = P * (dP - sum(dP * P)), dQ = dS K / sqrt(d), dK = dS^T Q / sqrt(d).
"""
import math

from ..tensor import Function


class Attention(Function):
    def forward(self, q, k, v, causal):
        xp = self.xp
        if not (q.shape == k.shape == v.shape) or q.ndim != 4:
            raise ValueError(f"attention: q, k, v must share one shape (B, H, T, Dh), got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}")
        self.scale = 1.0 / math.sqrt(q.shape[-1])
        # Heads usually arrive as a transposed view; batched matmul on strided views is several
        # times slower than on contiguous copies, so copy once here.
        q, k, v = (xp.ascontiguousarray(a) for a in (q, k, v))
        scores = (q @ xp.swapaxes(k, -1, -2)) * self.scale  # (B, H, T, T)
        if causal:
            t = q.shape[-2]
            future = xp.triu(xp.full((t, t), -xp.inf, dtype=scores.dtype), k=1)  # (T, T): -inf where key is after query
            scores += future
        scores -= scores.max(axis=-1, keepdims=True)
        p = xp.exp(scores, out=scores)
        p /= p.sum(axis=-1, keepdims=True)
        self.q, self.k, self.v, self.p = q, k, v, p
        return p @ v  # (B, H, T, Dh)

    def backward(self, g):
        xp, p = self.xp, self.p
        g = xp.ascontiguousarray(g)
        dv = xp.swapaxes(p, -1, -2) @ g
        dp = g @ xp.swapaxes(self.v, -1, -2)
        ds = p * (dp - (dp * p).sum(axis=-1, keepdims=True))
        ds *= self.scale
        dq = ds @ self.k
        dk = xp.swapaxes(ds, -1, -2) @ self.q
        return dq, dk, dv


def attention(q, k, v, causal=True):
    return Attention.apply(q, k, v, causal=causal)
