"""A tiny decoder-only character Transformer whose FFN is an MoE layer, and its dense twin.

The block is the pre-norm GPT block (Radford et al. 2019; nanoGPT's `Block`):

    x = x + attention(layer_norm(x))
    x = x + ffn(layer_norm(x))

where `ffn` is `minimoe.moe.MoE` in every `moe_every`-th block (Shazeer et al. 2017 put the MoE
between LSTM layers; GShard and Switch replace every other FFN of a Transformer) and a dense GELU
MLP elsewhere -- and everywhere in the dense twin. One class builds both, so the comparison in
lesson 04 differs only in the FFN. Introduced in lesson 04 (a tiny MoE Transformer).

The config's checkpoint options turn the same block into the Llama-style decoders of Mixtral,
OLMoE, Qwen2-MoE and DeepSeek-V3 (RMSNorm, SwiGLU FFNs without biases, grouped-query or latent
attention; see minimoe.hub), each off by default.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import backend
from .. import functional as F
from ..calculator import count_parameters, flops_per_token, training_flops_per_token
from ..nn import MLP, Dropout, Embedding, GatedMLP, LayerNorm, Linear, Module, ModuleList, Parameter, RMSNorm, repeat_heads
from ..tensor import Tensor, no_grad
from .config import ModelConfig
from .latent_attention import LatentAttention
from .rotary import rotary


class CausalSelfAttention(Module):
    """Multi-head self-attention where position t sees only positions <= t (Vaswani et al. 2017
    §3.2), through the engine's fused attention op.

    Options for Llama-style checkpoints: fewer key/value heads than query heads (grouped-query
    attention, Ainslie et al. 2023), biases on q, k, v (Qwen2-MoE) or on all four projections,
    and OLMoE's QK-norm: one RMSNorm over the whole query projection and one over the whole key
    projection, before the heads are split (Muennighoff et al. 2024; OLMoE's Hugging Face code).
    """

    def __init__(self, config: ModelConfig):
        d, dh = config.d_model, config.head_dim
        self.n_heads, self.kv_heads = config.n_heads, config.kv_heads
        self.use_rotary, self.rope_theta = config.positions == "rotary", config.rope_theta
        self.query = Linear(d, d, bias=config.qkv_bias)
        self.key = Linear(d, self.kv_heads * dh, bias=config.qkv_bias)
        self.value = Linear(d, self.kv_heads * dh, bias=config.qkv_bias)
        self.out = Linear(d, d, bias=config.out_bias)
        if config.qk_norm:
            self.query_norm = RMSNorm(d, config.norm_eps)
            self.key_norm = RMSNorm(self.kv_heads * dh, config.norm_eps)
        self.qk_norm = config.qk_norm

    def split_heads(self, x, n_heads):
        batch, length, width = x.shape
        heads = x.reshape(batch, length, n_heads, width // n_heads)  # (B, T, H, Dh)
        return heads.transpose(0, 2, 1, 3)  # (B, H, T, Dh)

    def forward(self, x):
        if x.ndim != 3 or x.shape[1] == 0:
            raise ValueError(f"attention takes a (batch, time, d_model) tensor with at least one position, "
                             f"got shape {x.shape}")
        batch, length, d = x.shape
        q, k, v = self.query(x), self.key(x), self.value(x)
        if self.qk_norm:
            q, k = self.query_norm(q), self.key_norm(k)
        q = self.split_heads(q, self.n_heads)
        k, v = self.split_heads(k, self.kv_heads), self.split_heads(v, self.kv_heads)
        if self.use_rotary:  # positions enter through the q.k angle only
            q, k = rotary(q, self.rope_theta), rotary(k, self.rope_theta)
        group = self.n_heads // self.kv_heads
        k, v = repeat_heads(k, group), repeat_heads(v, group)  # query head h reads key/value head h // group
        y = F.attention(q, k, v, causal=True)  # (B, H, T, Dh)
        y = y.transpose(0, 2, 1, 3).reshape(batch, length, d)  # (B, T, d): heads side by side
        return self.out(y)


def make_norm(config: ModelConfig):
    """The norm the config names: LayerNorm (GPT-2, the course's model) or RMSNorm (Llama-style)."""
    if config.norm == "rms":
        return RMSNorm(config.d_model, config.norm_eps)
    return LayerNorm(config.d_model, config.norm_eps)


class Block(Module):
    """One pre-norm Transformer block with a dense or an MoE feed-forward layer."""

    def __init__(self, config: ModelConfig, moe: bool):
        d = config.d_model
        self.attention_norm = make_norm(config)
        self.attention = LatentAttention(config) if config.attention == "mla" else CausalSelfAttention(config)
        self.ffn_norm = make_norm(config)
        self.is_moe = moe
        self.routes_by_token = moe and config.router == "hash"
        if moe:
            from ..moe import MoE  # a dense model never needs the MoE package

            self.ffn = MoE(config.moe_config())
        elif config.activation == "swiglu":
            self.ffn = GatedMLP(d, config.dense_hidden, bias=config.ffn_bias)
        else:
            self.ffn = MLP(d, config.dense_hidden, d, activation="gelu")
        self.dropout = Dropout(config.dropout)

    def forward(self, x, ids):
        x = x + self.dropout(self.attention(self.attention_norm(x)))  # (B, T, d)
        h = self.ffn_norm(x)
        h = self.ffn(h, token_ids=ids) if self.routes_by_token else self.ffn(h)  # hash routing reads the ids
        return x + self.dropout(h)


class Transformer(Module):
    """`model(ids)` maps token ids (B, T) to next-token logits (B, T, vocab)."""

    def __init__(self, config: ModelConfig):
        if not isinstance(config, ModelConfig):
            raise TypeError(f"Transformer needs a ModelConfig, got {type(config).__name__}")
        self.config = config
        d = config.d_model
        self.token_embedding = Embedding(config.vocab_size, d)
        self.position_embedding = Embedding(config.context, d) if config.positions == "learned" else None
        self.dropout = Dropout(config.dropout)
        self.blocks = ModuleList([Block(config, config.is_moe_layer(i)) for i in range(config.n_layers)])
        self.final_norm = make_norm(config)
        self.head = None
        if not config.tie_weights:
            self.head = Linear(d, config.vocab_size, bias=False)
            # Small initial logits, so the loss starts at ln(vocab): no character is favoured yet.
            self.head.weight = Parameter.normal((d, config.vocab_size), std=0.02)

    def forward(self, ids):
        ids = self.as_ids(ids)  # (B, T) int64 on the model's backend
        length = ids.shape[1]
        x = self.token_embedding(ids)  # (B, T, d)
        if self.position_embedding is not None:
            x = x + self.position_embedding(self.xp.arange(length))  # (T, d), broadcast over B
        x = self.dropout(x)
        for block in self.blocks:
            x = block(x, ids)
        x = self.final_norm(x)
        if self.head is None:
            return x @ self.token_embedding.weight.T  # (B, T, V): the embedding read backwards
        return self.head(x)  # (B, T, V)

    # ---- inputs --------------------------------------------------------------------------------
    @property
    def xp(self):
        return self.token_embedding.weight.xp

    def as_ids(self, ids):
        """Token ids (a list, a NumPy array or a Tensor) as a (B, T) int64 array on the model's
        backend, checked against the context length."""
        if isinstance(ids, Tensor):
            ids = ids.data
        kind = (ids if hasattr(ids, "dtype") else np.asarray(ids)).dtype
        if kind.kind not in "iu":
            raise TypeError(f"token ids must be integers, got {kind}; a float id would be truncated to "
                            "another token (use CharTokenizer().encode or an int64 array)")
        ids = backend.asarray(ids, dtype=np.int64, backend=self.token_embedding.weight.backend)
        if ids.ndim != 2:
            raise ValueError(f"the model takes token ids of shape (batch, time), "
                             f"got shape {tuple(ids.shape)}")
        if ids.shape[1] > self.config.context:
            raise ValueError(f"the sequence has {ids.shape[1]} tokens but the model's context is "
                             f"{self.config.context}; keep only the last {self.config.context}")
        return ids

    # ---- what the MoE layers did in the last forward -------------------------------------------
    def moe_layers(self) -> list:
        return [block.ffn for block in self.blocks if block.is_moe]

    def aux_loss(self) -> Tensor:
        """The sum of every MoE layer's auxiliary losses (already weighted by their coefficients);
        a zero scalar for a dense model. Add it to the language-modelling loss."""
        losses = [layer.aux_loss for layer in self.moe_layers()]
        if not losses:
            return Tensor(self.xp.zeros((), dtype=self.token_embedding.weight.dtype))
        return sum(losses[1:], losses[0])

    def routing_reports(self) -> list:
        """One `RoutingReport` per MoE layer, in block order (empty for a dense model)."""
        return [layer.report for layer in self.moe_layers()]

    def update_router_biases(self) -> None:
        """DeepSeek-V3's auxiliary-loss-free balancing step; call after `optimizer.step()`.
        A no-op for every other router."""
        for layer in self.moe_layers():
            layer.update_bias()


def generate(model: Transformer, prompt_ids, n: int, temperature: float = 1.0, seed: int = 0) -> np.ndarray:
    """Samples `n` tokens after `prompt_ids` (1-D) and returns prompt + sample as host int64 ids.

    Each step reads at most the last `context` tokens. `temperature` divides the logits (below 1:
    safer, above 1: wilder); 0 picks the most likely token. The draws use their own NumPy
    generator seeded by `seed`, so sampling never disturbs the training random state.
    """
    prompt = np.asarray(prompt_ids, dtype=np.int64)
    return np.concatenate([prompt, np.fromiter(generate_stream(model, prompt, n, temperature, seed), np.int64)])


def generate_stream(model: Transformer, prompt_ids, n: int, temperature: float = 1.0, seed: int = 0):
    """`generate`, one new token id at a time, as each is drawn (to print text as it comes)."""
    prompt = np.asarray(prompt_ids)
    if prompt.ndim != 1 or prompt.size == 0 or prompt.dtype.kind not in "iu":
        raise ValueError(f"generate needs a non-empty 1-D prompt of integer token ids, got shape "
                         f"{prompt.shape} and dtype {prompt.dtype}")
    if not (isinstance(n, (int, np.integer)) and n >= 0 and 0 <= temperature < np.inf):
        raise ValueError(f"generate needs a whole n >= 0 and a finite temperature >= 0, got n={n!r}, "
                         f"temperature={temperature!r}")
    rng = np.random.default_rng(seed)
    ids = list(prompt.tolist())
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            for _ in range(n):
                window = np.asarray(ids[-model.config.context:], dtype=np.int64)[None]  # (1, T)
                logits = model(window).data[0, -1]  # (V,) on the device
                ids.append(_pick(backend.to_numpy(logits).astype(np.float64), temperature, rng))
                yield ids[-1]
    finally:
        model.train(was_training)


def _pick(logits: np.ndarray, temperature: float, rng: np.random.Generator) -> int:
    if temperature == 0:
        return int(np.argmax(logits))
    scaled = (logits - logits.max()) / temperature
    probs = np.exp(scaled)
    return int(rng.choice(len(probs), p=probs / probs.sum()))


@dataclass(frozen=True)
class ModelSummary:
    """Sizes of a config, from the calculator: what memory holds and what one token computes."""

    total_params: int
    active_params: int
    flops_per_token: float           # forward matmul FLOPs at the full context
    training_flops_per_token: float  # forward + backward (3x the forward)

    def __str__(self) -> str:
        return (f"{self.total_params / 1e6:.2f} M parameters ({self.active_params / 1e6:.2f} M active "
                f"per token), {self.flops_per_token / 1e6:.2f} MFLOPs per token forward")


def model_summary(config: ModelConfig) -> ModelSummary:
    """Total and active parameters and FLOPs per token of `config` (via `minimoe.calculator`)."""
    spec = config.transformer_spec()
    count = count_parameters(spec)
    return ModelSummary(count.total, count.active, flops_per_token(spec, config.context),
                        training_flops_per_token(spec, config.context))
