"""Multi-head latent attention (MLA; DeepSeek-V2, Liu et al. 2024, §2.1; used again by
DeepSeek-V3 §2.1.1), as the Hugging Face `DeepseekV3Attention` computes it.

Keys and values come from one small latent per token instead of per-head projections, so a KV
cache holds kv_lora_rank + qk_rope_head_dim numbers per token (eqs. 1-5 of V3):

    c_kv = RMSNorm(x W_dkv)                    the latent, width kv_lora_rank
    [k_nope, v] = c_kv W_ukv                   per head: qk_nope_head_dim and v_head_dim wide
    k_rope = RoPE(x W_kr)                      one rotary key of qk_rope_head_dim, shared by all heads
    q = [q_nope, RoPE(q_rope)] from x W_q, or through a low-rank c_q = RMSNorm(x W_dq) (q_lora_rank)

and attention runs on q = [q_nope, q_rope], k = [k_nope, k_rope] with the scale
1 / sqrt(qk_nope_head_dim + qk_rope_head_dim). `rope_interleave` reads the rotary features as
interleaved pairs (x0, x1), (x2, x3), ... (DeepSeek's own layout, transformers' default for V3):
that is the usual rotate-half rotary after moving the even features before the odd ones.
"""
from __future__ import annotations

import numpy as np

from .. import functional as F
from ..nn import Linear, Module, RMSNorm, repeat_heads
from ..tensor import Tensor
from .rotary import rotary

LATENT_NORM_EPS = 1e-6  # DeepseekV3RMSNorm's default, which q_a_layernorm and kv_a_layernorm keep


class LatentAttention(Module):
    def __init__(self, config):
        d, heads = config.d_model, config.n_heads
        self.n_heads, self.rope_theta, self.interleave = heads, config.rope_theta, config.rope_interleave
        self.nope, self.rope, self.v_dim = config.qk_nope_head_dim, config.qk_rope_head_dim, config.v_head_dim
        self.kv_rank = config.kv_lora_rank
        qk = self.nope + self.rope
        bias = config.qkv_bias
        if config.q_lora_rank is None:
            self.query = Linear(d, heads * qk, bias=False)
        else:
            self.query_down = Linear(d, config.q_lora_rank, bias=bias)
            self.query_norm = RMSNorm(config.q_lora_rank, LATENT_NORM_EPS)
            self.query_up = Linear(config.q_lora_rank, heads * qk, bias=False)
        self.kv_down = Linear(d, self.kv_rank + self.rope, bias=bias)
        self.kv_norm = RMSNorm(self.kv_rank, LATENT_NORM_EPS)
        self.kv_up = Linear(self.kv_rank, heads * (self.nope + self.v_dim), bias=False)
        self.out = Linear(heads * self.v_dim, d, bias=config.out_bias)

    def _rotate(self, x):
        if self.interleave:
            order = np.concatenate([np.arange(0, self.rope, 2), np.arange(1, self.rope, 2)])
            x = x[..., x.xp.asarray(order)]
        return rotary(x, self.rope_theta)

    def _heads(self, x, width):
        batch, length, _ = x.shape
        return x.reshape(batch, length, -1, width).transpose(0, 2, 1, 3)  # (B, H, T, width)

    def forward(self, x):
        if x.ndim != 3 or x.shape[1] == 0:
            raise ValueError(f"attention takes a (batch, time, d_model) tensor with at least one position, "
                             f"got shape {x.shape}")
        batch, length, _ = x.shape
        q = self.query(x) if hasattr(self, "query") else self.query_up(self.query_norm(self.query_down(x)))
        q_nope, q_rope = F.split(self._heads(q, self.nope + self.rope), [self.nope, self.rope], axis=-1)
        latent, k_rope = F.split(self.kv_down(x), [self.kv_rank, self.rope], axis=-1)
        k_nope, v = F.split(self._heads(self.kv_up(self.kv_norm(latent)), self.nope + self.v_dim),
                            [self.nope, self.v_dim], axis=-1)  # (B, H, T, nope) and (B, H, T, v)
        k_rope = repeat_heads(self._rotate(k_rope.reshape(batch, 1, length, self.rope)), self.n_heads)
        q = F.concatenate([q_nope, self._rotate(q_rope)], axis=-1)  # (B, H, T, nope + rope)
        k = F.concatenate([k_nope, k_rope], axis=-1)
        # The fused attention op takes one head width: the values are padded with zero features up to
        # the query width, which only adds zero columns to the output (sliced off again).
        pad = q.shape[-1] - self.v_dim
        if pad:
            v = F.concatenate([v, Tensor(v.xp.zeros(v.shape[:-1] + (pad,), dtype=v.dtype))], axis=-1)
        y = F.attention(q, k, v, causal=True)[..., : self.v_dim]  # (B, H, T, v)
        return self.out(y.transpose(0, 2, 1, 3).reshape(batch, length, self.n_heads * self.v_dim))
