"""Rotary position embeddings (RoPE; Su et al. 2021, "RoFormer", eq. 34).

Instead of adding a position vector to the input, RoPE rotates each pair of query/key features
by an angle proportional to the position, so the dot product q_m . k_n depends only on m - n.
Pairs are (x_i, x_{i + Dh/2}), the "rotate half" layout of GPT-NeoX and Llama:

    y = x * cos + rotate_half(x) * sin,   rotate_half([x1, x2]) = [-x2, x1]

Rotation is linear and orthogonal, so the backward rotates the gradient back by the same angle:
dx = g * cos + rotate_half^T(g * sin), with rotate_half^T([u1, u2]) = [u2, -u1].
"""
from ..tensor import Function


def rotary_tables(xp, length: int, head_dim: int, dtype, base: float = 10000.0):
    """cos and sin of the angles m * base^(-2i/Dh), each (length, head_dim), both halves equal."""
    inverse_frequency = base ** (-xp.arange(0, head_dim, 2, dtype=xp.float64) / head_dim)  # (Dh/2,)
    angles = xp.arange(length, dtype=xp.float64)[:, None] * inverse_frequency[None, :]  # (T, Dh/2)
    angles = xp.concatenate([angles, angles], axis=1)  # (T, Dh)
    return xp.cos(angles).astype(dtype), xp.sin(angles).astype(dtype)


def _rotate_half(xp, x, sign: int):
    """[-x2, x1] for sign=+1 (the rotation by 90 degrees), [x2, -x1] for sign=-1 (its transpose)."""
    half = x.shape[-1] // 2
    x1, x2 = x[..., :half], x[..., half:]
    return xp.concatenate([-sign * x2, sign * x1], axis=-1)


class Rotary(Function):
    """Rotates x (..., T, Dh) by position; the positions are 0 .. T-1 along axis -2. `base` is
    theta of the angles (10000 in RoFormer; a checkpoint's `rope_theta`, 1e6 for Mixtral)."""

    def forward(self, x, base=10000.0):
        xp = self.xp
        self.cos, self.sin = rotary_tables(xp, x.shape[-2], x.shape[-1], x.dtype, base)  # (T, Dh) each
        return x * self.cos + _rotate_half(xp, x, +1) * self.sin

    def backward(self, g):
        return (g * self.cos + _rotate_half(self.xp, g * self.sin, -1),)


def rotary(x, base: float = 10000.0):
    """Applies rotary position embeddings to queries or keys of shape (B, H, T, Dh)."""
    if x.shape[-1] % 2:
        raise ValueError(f"rotary: the last axis (head_dim) must be even, got shape {x.shape}")
    if not 1 < base < float("inf"):
        raise ValueError(f"rotary: the base theta must be a finite number > 1, got {base!r}")
    return Rotary.apply(x, base=float(base))
