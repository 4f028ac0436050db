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
from ..ops.row_blocks import map_tasks
from ..tensor import Function

ACTIVATIONS = ("gelu", "swiglu")


def _blocks(group_sizes):
    """(expert, start, stop) of each non-empty block of rows."""
    stops = np.cumsum(group_sizes)
    return [(e, int(stop - n), int(stop)) for e, (n, stop) in enumerate(zip(group_sizes, stops)) if n]


class GroupedFFN(Function):
    """y[rows of e] = act(x[rows of e] @ W_in[e] + b_in[e]) @ W_out[e] + b_out[e], for every expert e.

    GELU experts: act(u) = gelu(u). SwiGLU experts (Shazeer 2020): act = silu(x W_gate[e]) * u.
    The inputs are (x, w_in, w_out), then (b_in, b_out) if `biased`, then w_gate for SwiGLU:
    Mixtral's, OLMoE's, Qwen2-MoE's and DeepSeek's experts have no biases. `keep_mask` (rows, h)
    is expert dropout on the hidden units.

    Each expert's forward and backward is one function of its own rows (`_expert_forward`,
    `_expert_backward`). The plain path runs them one expert after another; the fast path shares
    the experts out over the thread pool (row_blocks.map_tasks), which also keeps an expert's
    activations in cache from its first product to its second.
    """

    def forward(self, x, w_in, w_out, *optional, group_sizes, activation, biased=True, keep_mask=None):
        xp = self.xp
        self.x, self.w_in, self.w_out, self.activation, self.keep_mask = x, w_in, w_out, activation, keep_mask
        self.biased = biased
        b_in, b_out = optional[:2] if biased else (None, None)
        self.w_gate = optional[-1] if activation == "swiglu" else None
        self.blocks = _blocks(group_sizes)
        y = xp.empty((x.shape[0], w_out.shape[2]), dtype=x.dtype)
        self.saved = map_tasks(lambda block: self._expert_forward(block, b_in, b_out, y), self.blocks, like=x)
        return y

    def _expert_forward(self, block, b_in, b_out, y):
        """Writes expert e's rows of y; returns what its backward needs."""
        xp, (e, start, stop) = self.xp, block
        x = self.x[start:stop]
        u = xp.matmul(x, self.w_in[e])
        if b_in is not None:
            u += b_in[e]
        v = None
        if self.activation == "gelu":
            a, saved = gelu_forward(xp, u)  # saved: the tanh
        else:  # swiglu: silu(v) * u
            v = xp.matmul(x, self.w_gate[e])
            a, saved = _swiglu_forward(xp, u, v)  # saved: sigmoid(v)
        if self.keep_mask is not None:
            a *= self.keep_mask[start:stop]
        xp.matmul(a, self.w_out[e], out=y[start:stop])
        if b_out is not None:
            y[start:stop] += b_out[e]
        return u, v, a, saved

    def backward(self, g):
        xp = self.xp
        grads = {"x": xp.empty_like(self.x),  # every row belongs to one expert's block
                 "w_in": xp.zeros_like(self.w_in), "w_out": xp.zeros_like(self.w_out),  # empty experts keep 0
                 "b_in": xp.zeros(self.w_in.shape[::2], dtype=g.dtype) if self.biased else None,  # (E, h)
                 "b_out": xp.zeros(self.w_out.shape[::2], dtype=g.dtype) if self.biased else None}  # (E, d)
        if self.activation == "swiglu":
            grads["w_gate"] = xp.zeros_like(self.w_gate)
        map_tasks(lambda i: self._expert_backward(self.blocks[i], self.saved[i], g, grads),
                  range(len(self.blocks)), like=g)
        names = ("x", "w_in", "w_out") + (("b_in", "b_out") if self.biased else ()) \
            + (("w_gate",) if self.activation == "swiglu" else ())
        return tuple(grads[name] for name in names)

    def _expert_backward(self, block, saved, g, grads):
        """Writes expert e's rows of dx and its slices of the weight gradients."""
        xp, (e, start, stop) = self.xp, block
        u, v, a, act_saved = saved
        x, g = self.x[start:stop], g[start:stop]
        if self.biased:
            grads["b_out"][e] = g.sum(axis=0)
        xp.matmul(a.T, g, out=grads["w_out"][e])
        da = xp.matmul(g, self.w_out[e].T)
        if self.keep_mask is not None:
            da *= self.keep_mask[start:stop]
        if self.activation == "gelu":
            du = da * gelu_grad(u, act_saved)
        else:
            du, dv = _swiglu_backward(da, u, v, act_saved)
        xp.matmul(x.T, du, out=grads["w_in"][e])
        dx = grads["x"][start:stop]
        xp.matmul(du, self.w_in[e].T, out=dx)
        if self.biased:
            grads["b_in"][e] = du.sum(axis=0)
        if self.activation == "swiglu":
            xp.matmul(x.T, dv, out=grads["w_gate"][e])
            dx += xp.matmul(dv, self.w_gate[e].T)


def _swiglu_forward(xp, u, v):
    """(silu(v) * u, sigmoid(v))."""
    s = stable_sigmoid(xp, v)
    return v * s * u, s


def _swiglu_backward(da, u, v, s):
    """Gradients of silu(v) * u with respect to u and v."""
    return da * v * s, da * u * silu_grad(v, s)


class Experts(Module):
    """E experts of hidden size h over d_model, stored as w_in (E, d, h), b_in (E, h),
    w_out (E, h, d), b_out (E, d) [+ w_gate (E, d, h) for SwiGLU]; `bias=False` leaves out b_in
    and b_out (the experts of Mixtral and its successors). For SwiGLU, w_in is the un-gated "up"
    branch and w_gate the branch through silu. Fine-grained experts (DeepSeekMoE) are simply
    more, smaller experts."""

    def __init__(self, n_experts: int, d_model: int, hidden: int, activation: str = "gelu", bias: bool = True):
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown expert activation {activation!r}; choose one of {ACTIVATIONS}")
        self.n_experts, self.d_model, self.hidden, self.activation = n_experts, d_model, hidden, activation
        self.biased = bool(bias)
        bound_in, bound_out = 1 / math.sqrt(d_model), 1 / math.sqrt(hidden)  # PyTorch's Linear init
        self.w_in = Parameter.uniform((n_experts, d_model, hidden), bound_in)
        if self.biased:
            self.b_in = Parameter.uniform((n_experts, hidden), bound_in)
        self.w_out = Parameter.uniform((n_experts, hidden, d_model), bound_out)
        if self.biased:
            self.b_out = Parameter.uniform((n_experts, d_model), bound_out)
        if activation == "swiglu":
            self.w_gate = Parameter.uniform((n_experts, d_model, hidden), bound_in)

    def forward(self, x_sorted, group_sizes, keep_mask=None):
        """x_sorted (rows, d): expert 0's rows first, then expert 1's...; group_sizes (E,) on the host."""
        group_sizes = np.asarray(group_sizes)
        if group_sizes.shape != (self.n_experts,) or group_sizes.sum() != x_sorted.shape[0]:
            raise ValueError(f"group_sizes {group_sizes.tolist()} must have one entry per expert ({self.n_experts}) "
                             f"adding up to the {x_sorted.shape[0]} rows")
        optional = (((self.b_in, self.b_out) if self.biased else ())
                    + ((self.w_gate,) if self.activation == "swiglu" else ()))
        return GroupedFFN.apply(x_sorted, self.w_in, self.w_out, *optional, group_sizes=group_sizes,
                                activation=self.activation, biased=self.biased, keep_mask=keep_mask)

    def select(self, first: int, count: int) -> Experts:
        """Experts first .. first+count-1 as an `Experts` of their own, with copies of their weights
        (expert parallelism gives each rank such a slice)."""
        part = Experts.__new__(Experts)  # not Experts(...): that would draw new random weights
        part.n_experts, part.d_model, part.hidden, part.activation = count, self.d_model, self.hidden, self.activation
        part.biased = self.biased
        for name, p in self.named_parameters():
            setattr(part, name, Parameter(p.data[first:first + count].copy()))
        return part
