"""N feed-forward experts held as stacked weights, and the grouped op that runs them.

Stacking (E, d, h) weights instead of keeping E separate modules lets one op run every expert
over its own contiguous block of tokens: the tokens are sorted by expert first (see dispatch.py),
so expert e's block is one matmul. The op is a single `Function` with a hand-written backward
that loops over experts (never over tokens), so the graph holds one node for all E experts.
"""
from __future__ import annotations

import math

import numpy as np

from ..nn import Module, Parameter
from ..ops.pointwise import gelu_forward, gelu_grad, silu_grad, stable_sigmoid
from ..ops.row_blocks import map_row_blocks
from ..tensor import Function

ACTIVATIONS = ("gelu", "swiglu")


def _blocks(group_sizes):
    """(expert, start, stop) of each non-empty block of rows."""
    stops = np.cumsum(group_sizes)
    return [(e, int(stop - n), int(stop)) for e, (n, stop) in enumerate(zip(group_sizes, stops)) if n]


class GroupedFFN(Function):
    """y[rows of e] = act(x[rows of e] @ W_in[e] + b_in[e]) @ W_out[e] + b_out[e], for every expert e.

    GELU experts: act(u) = gelu(u). SwiGLU experts (Shazeer 2020): act = silu(x W_gate[e]) * u
    (Mixtral's experts have no biases; here both kinds keep b_in and b_out, one code path). `keep_mask` (rows, h) is expert dropout on the hidden units.
    """

    def forward(self, x, w_in, b_in, w_out, b_out, *w_gate, group_sizes, activation, keep_mask=None):
        xp = self.xp
        rows, hidden = x.shape[0], w_in.shape[2]
        self.blocks = _blocks(group_sizes)
        self.x, self.w_in, self.w_out, self.activation = x, w_in, w_out, activation
        self.w_gate = w_gate[0] if w_gate else None
        u = xp.empty((rows, hidden), dtype=x.dtype)  # pre-activations of all experts, block by block
        v = xp.empty((rows, hidden), dtype=x.dtype) if self.w_gate is not None else None
        for e, start, stop in self.blocks:
            xp.matmul(x[start:stop], w_in[e], out=u[start:stop])
            u[start:stop] += b_in[e]
            if v is not None:
                xp.matmul(x[start:stop], self.w_gate[e], out=v[start:stop])
        if activation == "gelu":
            a, self.t = map_row_blocks(lambda u: gelu_forward(xp, u), u)
        else:  # swiglu: silu(v) * u
            a, self.s = map_row_blocks(lambda u, v: _swiglu_forward(xp, u, v), u, v)
        self.keep_mask = keep_mask
        if keep_mask is not None:
            a = a * keep_mask
        self.u, self.v, self.a = u, v, a
        y = xp.empty((rows, w_out.shape[2]), dtype=x.dtype)
        for e, start, stop in self.blocks:
            xp.matmul(a[start:stop], w_out[e], out=y[start:stop])
            y[start:stop] += b_out[e]
        return y

    def backward(self, g):
        xp, x, u, v, a = self.xp, self.x, self.u, self.v, self.a
        g_w_in, g_w_out = xp.zeros_like(self.w_in), xp.zeros_like(self.w_out)  # empty experts keep 0
        g_b_in = xp.zeros(self.w_in.shape[::2], dtype=g.dtype)  # (E, h)
        g_b_out = xp.zeros(self.w_out.shape[::2], dtype=g.dtype)  # (E, d)
        da = xp.empty_like(a)
        for e, start, stop in self.blocks:
            g_b_out[e] = g[start:stop].sum(axis=0)
            xp.matmul(a[start:stop].T, g[start:stop], out=g_w_out[e])
            xp.matmul(g[start:stop], self.w_out[e].T, out=da[start:stop])
        if self.keep_mask is not None:
            da *= self.keep_mask
        if self.activation == "gelu":
            du = map_row_blocks(lambda da, u, t: da * gelu_grad(u, t), da, u, self.t)
        else:
            du, dv = map_row_blocks(_swiglu_backward, da, u, v, self.s)
            g_gate = xp.zeros_like(self.w_gate)
        dx = xp.empty_like(x)
        for e, start, stop in self.blocks:
            xp.matmul(x[start:stop].T, du[start:stop], out=g_w_in[e])
            xp.matmul(du[start:stop], self.w_in[e].T, out=dx[start:stop])
            g_b_in[e] = du[start:stop].sum(axis=0)
            if self.activation == "swiglu":
                xp.matmul(x[start:stop].T, dv[start:stop], out=g_gate[e])
                dx[start:stop] += dv[start:stop] @ self.w_gate[e].T
        grads = (dx, g_w_in, g_b_in, g_w_out, g_b_out)
        return grads if self.activation == "gelu" else grads + (g_gate,)


def _swiglu_forward(xp, u, v):
    """(silu(v) * u, sigmoid(v))."""
    s = stable_sigmoid(xp, v)
    return v * s * u, s


def _swiglu_backward(da, u, v, s):
    """Gradients of silu(v) * u with respect to u and v."""
    return da * v * s, da * u * silu_grad(v, s)


class Experts(Module):
    """E experts of hidden size h over d_model, stored as w_in (E, d, h), b_in (E, h),
    w_out (E, h, d), b_out (E, d) [+ w_gate (E, d, h) for SwiGLU]. Fine-grained experts
    (DeepSeekMoE) are simply more, smaller experts."""

    def __init__(self, n_experts: int, d_model: int, hidden: int, activation: str = "gelu"):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown expert activation {activation!r}; choose one of {ACTIVATIONS}")
        self.n_experts, self.d_model, self.hidden, self.activation = n_experts, d_model, hidden, activation
        bound_in, bound_out = 1 / math.sqrt(d_model), 1 / math.sqrt(hidden)  # PyTorch's Linear init
        self.w_in = Parameter.uniform((n_experts, d_model, hidden), bound_in)
        self.b_in = Parameter.uniform((n_experts, hidden), bound_in)
        self.w_out = Parameter.uniform((n_experts, hidden, d_model), bound_out)
        self.b_out = Parameter.uniform((n_experts, d_model), bound_out)
        if activation == "swiglu":
            self.w_gate = Parameter.uniform((n_experts, d_model, hidden), bound_in)

    def forward(self, x_sorted, group_sizes, keep_mask=None):
        """x_sorted (rows, d): expert 0's rows first, then expert 1's...; group_sizes (E,) on the host."""
        group_sizes = np.asarray(group_sizes)
        if group_sizes.shape != (self.n_experts,) or group_sizes.sum() != x_sorted.shape[0]:
            raise ValueError(f"group_sizes {group_sizes.tolist()} must have one entry per expert ({self.n_experts}) "
                             f"adding up to the {x_sorted.shape[0]} rows")
        gate = (self.w_gate,) if self.activation == "swiglu" else ()
        return GroupedFFN.apply(x_sorted, self.w_in, self.b_in, self.w_out, self.b_out, *gate,
                                group_sizes=group_sizes, activation=self.activation, keep_mask=keep_mask)

    def select(self, first: int, count: int) -> Experts:
        """Experts first .. first+count-1 as an `Experts` of their own, with copies of their weights
        (expert parallelism gives each rank such a slice)."""
        part = Experts.__new__(Experts)  # not Experts(...): that would draw new random weights
        part.n_experts, part.d_model, part.hidden, part.activation = count, self.d_model, self.hidden, self.activation
        for name, p in self.named_parameters():
            setattr(part, name, Parameter(p.data[first:first + count].copy()))
        return part
