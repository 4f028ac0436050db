"""Grouped-query attention's key/value sharing (Ainslie et al. 2023, "GQA", §2.2).

With n_kv_heads < n_heads, each key/value head serves n_heads / n_kv_heads consecutive query
heads: query head h reads key/value head h // group (the layout of `repeat_kv` in the Hugging
Face Llama, Mixtral, OLMoE and Qwen2-MoE code). Repeating the heads is one op whose backward sums
the gradients of the copies back into their head.
"""
from ..tensor import Function


class RepeatHeads(Function):
    """(B, H_kv, T, Dh) -> (B, H_kv * group, T, Dh), each head repeated `group` times in place."""

    def forward(self, x, group):
        self.group, self.in_shape = group, x.shape
        return self.xp.repeat(x, group, axis=1)

    def backward(self, g):
        b, h, t, dh = self.in_shape
        return (g.reshape(b, h, self.group, t, dh).sum(axis=2),)


def repeat_heads(x, group: int):
    """Each of the H_kv heads of x (B, H_kv, T, Dh) repeated `group` times; the identity at 1."""
    if x.ndim != 4:
        raise ValueError(f"repeat_heads takes (batch, heads, time, head_dim), got shape {x.shape}")
    if group == 1:
        return x
    return RepeatHeads.apply(x, group=group)
