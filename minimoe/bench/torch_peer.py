"""The same workloads in PyTorch eager: the benchmark's peer, used only where torch is installed.

PyTorch is never a dependency of minimoe; this module is imported only when `import torch` works.
"""
import math

import torch
import torch.nn.functional as TF


class MoEFFN(torch.nn.Module):
    """Top-k MoE with stacked GELU experts, dispatched by sorting tokens by expert (one gather,
    one matmul per expert block, one scatter): the same algorithm as minimoe's layer.

    The stacked weights are split with one `unbind` per step: indexing `self.w_in[e]` once per
    expert would make each slice's backward write a full (E, d, h) gradient, a cost growing with
    E squared that no careful PyTorch user would pay."""

    def __init__(self, d, n_experts, k, hidden, n_shared=0, shared_hidden=0):
        super().__init__()
        self.k, self.n_experts = k, n_experts
        self.router = torch.nn.Linear(d, n_experts, bias=False)
        self.w_in = torch.nn.Parameter(torch.randn(n_experts, d, hidden) / math.sqrt(d))
        self.b_in = torch.nn.Parameter(torch.zeros(n_experts, hidden))
        self.w_out = torch.nn.Parameter(torch.randn(n_experts, hidden, d) / math.sqrt(hidden))
        self.b_out = torch.nn.Parameter(torch.zeros(n_experts, d))
        self.shared = DenseFFN(d, shared_hidden * n_shared) if n_shared else None

    def forward(self, x):
        n, d = x.shape
        probs = torch.softmax(self.router(x), dim=-1)  # (N, E)
        top, index = probs.topk(self.k, dim=-1)
        gates = top / top.sum(-1, keepdim=True)
        flat = index.T.reshape(-1)  # k-major assignments
        order = torch.argsort(flat, stable=True)
        counts = torch.bincount(flat, minlength=self.n_experts).tolist()
        x_sorted = x.repeat(self.k, 1)[order]
        w_in, b_in, w_out, b_out = (w.unbind(0) for w in (self.w_in, self.b_in, self.w_out, self.b_out))
        outs, start = [], 0
        for e, c in enumerate(counts):
            if c:
                h = TF.gelu(x_sorted[start:start + c] @ w_in[e] + b_in[e], approximate="tanh")
                outs.append(h @ w_out[e] + b_out[e])
            start += c
        out = torch.cat(outs) * gates.T.reshape(-1, 1)[order]
        rows = torch.zeros(self.k * n, d, dtype=x.dtype).index_copy(0, order, out)
        y = rows.view(self.k, n, d).sum(0)
        f = torch.bincount(flat, minlength=self.n_experts).to(x.dtype) / flat.numel()
        aux = self.n_experts * (f * probs.mean(0)).sum() * 0.01
        return (y + self.shared(x) if self.shared is not None else y), aux


class DenseFFN(torch.nn.Module):
    def __init__(self, d, hidden):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, d)

    def forward(self, x):
        return self.fc2(TF.gelu(self.fc1(x), approximate="tanh"))


class MLP(torch.nn.Module):
    def __init__(self, d_in, width, n_layers, n_out):
        super().__init__()
        dims = [d_in] + [width] * (n_layers - 1) + [n_out]
        self.layers = torch.nn.ModuleList(torch.nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = TF.gelu(x, approximate="tanh")
        return x


class Block(torch.nn.Module):
    """A pre-LN Transformer block with a dense GELU FFN (the engine's block-sized workload)."""

    def __init__(self, d, n_heads, hidden):
        super().__init__()
        self.n_heads = n_heads
        self.ln1, self.ln2 = torch.nn.LayerNorm(d), torch.nn.LayerNorm(d)
        self.qkv, self.proj = torch.nn.Linear(d, 3 * d), torch.nn.Linear(d, d)
        self.ffn = DenseFFN(d, hidden)

    def forward(self, x):
        b, t, d = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(b, t, 3, self.n_heads, d // self.n_heads).permute(2, 0, 3, 1, 4)
        a = TF.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, d)
        x = x + self.proj(a)
        return x + self.ffn(self.ln2(x))


def train_step_fn(model, inputs, loss_fn, lr=3e-4):
    opt = torch.optim.AdamW(model.parameters(), lr=lr)

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(model, *inputs).backward()
        opt.step()

    return step


class TinyTransformer(torch.nn.Module):
    """The reference workload's model: pre-LN blocks whose FFN is MoEFFN (or DenseFFN)."""

    def __init__(self, vocab, d, n_layers, n_heads, context, n_experts=8, k=2, expert_hidden=512, dense_hidden=None):
        super().__init__()
        self.tok, self.pos = torch.nn.Embedding(vocab, d), torch.nn.Embedding(context, d)
        self.blocks = torch.nn.ModuleList(Block(d, n_heads, 1) for _ in range(n_layers))
        for block in self.blocks:
            block.ffn = DenseFFN(d, dense_hidden) if dense_hidden else MoEFFN(d, n_experts, k, expert_hidden)
        self.ln, self.head = torch.nn.LayerNorm(d), torch.nn.Linear(d, vocab, bias=False)

    def forward(self, ids, targets):
        b, t = ids.shape
        x = self.tok(ids) + self.pos(torch.arange(t))
        aux = 0.0
        for block in self.blocks:
            q, k, v = block.qkv(block.ln1(x)).view(b, t, 3, block.n_heads, -1).permute(2, 0, 3, 1, 4)
            a = TF.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).reshape(b, t, -1)
            x = x + block.proj(a)
            out = block.ffn(block.ln2(x).reshape(b * t, -1))
            y, layer_aux = out if isinstance(out, tuple) else (out, 0.0)
            x = x + y.view(b, t, -1)
            aux = aux + layer_aux
        logits = self.head(self.ln(x))
        return TF.cross_entropy(logits.view(b * t, -1), targets.view(-1)) + aux
