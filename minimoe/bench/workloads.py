"""The benchmark's workloads on minimoe's engine, each returning a zero-argument step function.

Sizes follow the reference workload of docs/performance.md where it gives them.
"""
import numpy as np

from .. import functional as F
from ..models import ModelConfig, Transformer
from ..moe import MoE, MoEConfig
from ..nn import MLP, LayerNorm, Linear, Module
from ..optim import AdamW
from ..tensor import tensor


class Block(Module):
    """A pre-LN Transformer block with a dense GELU FFN, written with the engine's ops."""

    def __init__(self, d, n_heads, hidden):
        self.n_heads = n_heads
        self.ln1, self.ln2 = LayerNorm(d), LayerNorm(d)
        self.qkv, self.proj = Linear(d, 3 * d), Linear(d, d)
        self.ffn = MLP(d, hidden, d)

    def forward(self, x):
        b, t, d = x.shape
        qkv = self.qkv(self.ln1(x)).reshape(b, t, 3, self.n_heads, d // self.n_heads).transpose(2, 0, 3, 1, 4)
        a = F.attention(qkv[0], qkv[1], qkv[2], causal=True).transpose(0, 2, 1, 3).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.ffn(self.ln2(x))


def train_step(model, loss_fn, lr=3e-4):
    opt = AdamW(model.parameters(), lr=lr)

    def step():
        opt.zero_grad()
        loss_fn().backward()
        opt.step()

    return step


def random_input(shape, seed=0):
    return tensor(np.random.default_rng(seed).standard_normal(shape).astype(np.float32))


def mlp_step(batch=256, width=512, n_layers=3):
    class DeepMLP(Module):
        def __init__(self):
            self.inp = MLP(width, width, width)
            self.out = Linear(width, 10)

        def forward(self, x):
            return self.out(F.gelu(self.inp(x)))

    model = DeepMLP()
    x = random_input((batch, width))
    y = np.random.default_rng(1).integers(0, 10, batch)
    return train_step(model, lambda: F.cross_entropy(model(x), y))


def block_step(batch=16, seq=128, d=128, n_heads=4, hidden=512):
    model = Block(d, n_heads, hidden)
    x = random_input((batch, seq, d))
    return train_step(model, lambda: (model(x) * 0.01).sum())


def reference_model_config(dense=False, **changes):
    """The reference workload (docs/performance.md): 4 layers, d 128, 4 heads, context 128, 8 experts
    top-2 of hidden 512, Switch loss 0.01, dropless; dense twin: one FFN of hidden 1024."""
    fields = dict(vocab_size=96, d_model=128, n_layers=4, n_heads=4, context=128, positions="learned",
                  tie_weights=False, n_experts=8, top_k=2, expert_hidden=512, router="topk",
                  balance_loss="switch", balance_coef=0.01, capacity_factor=None, dense=dense)
    fields.update(changes)
    return ModelConfig(**fields)


def model_step(config, batch=16):
    model = Transformer(config)
    rng = np.random.default_rng(0)
    ids = rng.integers(0, config.vocab_size, (batch, config.context))
    targets = rng.integers(0, config.vocab_size, (batch, config.context))
    return train_step(model, lambda: F.cross_entropy(model(ids), targets) + model.aux_loss())


def moe_layer_fwd_bwd(n_experts, k=2, hidden=512, d=128, tokens=2048, n_shared=0):
    layer = MoE(MoEConfig(d_model=d, n_experts=n_experts, top_k=k, expert_hidden=hidden, n_shared_experts=n_shared))
    x = random_input((tokens, d))
    x.requires_grad = True

    def step():
        layer.zero_grad()
        y = layer(x)
        ((y * 0.01).sum() + layer.aux_loss).backward()

    return step


def dense_ffn_fwd_bwd(hidden, d=128, tokens=2048):
    ffn = MLP(d, hidden, d)
    x = random_input((tokens, d))
    x.requires_grad = True

    def step():
        ffn.zero_grad()
        (ffn(x) * 0.01).sum().backward()

    return step
