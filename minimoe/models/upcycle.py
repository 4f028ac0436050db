"""Sparse upcycling: an MoE model started from a trained dense one (Komatsuzaki et al. 2022).

Every MoE layer's experts start as exact copies of the dense block's FFN; the attention, norms,
embeddings and read-out are carried over unchanged; only the router is new (drawn as a fresh MoE
layer draws it). With identical experts and gates that sum to one (top-k, renormalised: the
default here), a token's output is sum_i g_i FFN(x) = FFN(x), so the upcycled model computes
exactly what the dense model computed until training breaks the symmetry. With gates that do not
sum to one (Switch's top-1 probability, `renormalize=False`) the FFN's output starts scaled down
by the gate. Introduced in lesson 10 (scaling with experts, upcycling, fine-tuning).
"""
from __future__ import annotations

import dataclasses

import numpy as np

from ..config_checks import whole
from .transformer import Transformer

# What the upcycled layers are unless the caller says otherwise: top-k with renormalised gates (the
# output-preserving choice) and no shared experts (the dense FFN is copied into routed experts only).
UPCYCLE_DEFAULTS = {"router": "topk", "renormalize": True, "n_shared_experts": 0}


def upcycle(dense_model: Transformer, n_experts: int, top_k: int, **changes) -> Transformer:
    """A new MoE `Transformer` whose every MoE layer holds `n_experts` copies of the dense FFN of
    its block, routed top-`top_k` by a fresh router; all other weights copied from `dense_model`
    (which is left unchanged). `changes` are further `ModelConfig` fields for the new model
    (`moe_every=2` upcycles every other block, as the paper does; `router="switch"`, ...); blocks
    that stay dense keep the dense width. The router is drawn from minimoe's random generator:
    call `minimoe.manual_seed` first for a reproducible one."""
    if not isinstance(dense_model, Transformer) or not dense_model.config.dense:
        config = getattr(dense_model, "config", None)
        raise ValueError("upcycle starts from a dense Transformer (ModelConfig(dense=True), e.g. "
                         f"config.dense_twin()); got {type(dense_model).__name__} with config {config}")
    n_experts, top_k = whole(n_experts, "n_experts"), whole(top_k, "top_k")
    dense = dense_model.config
    config = dataclasses.replace(dense, **{**UPCYCLE_DEFAULTS, **changes}, dense=False, n_experts=n_experts,
                                 top_k=top_k, expert_hidden=dense.dense_hidden, ffn_hidden=dense.dense_hidden)
    model = Transformer(config)  # fresh weights everywhere; all but the routers are overwritten below
    like = dense_model.token_embedding.weight
    for p in model.parameters():
        p.data = p.data.astype(like.dtype)  # a float64 dense model gives a float64 upcycled one
    model.load_state_dict(upcycled_state(dense_model.state_dict(), model))
    model.to(like.backend)
    return model.train(dense_model.training)


def upcycled_state(dense_state: dict, moe_model: Transformer) -> dict:
    """The state dict of `moe_model` with every dense weight copied in by name and each MoE block's
    experts set to copies of that block's dense FFN; the routers keep `moe_model`'s own values."""
    state = moe_model.state_dict()
    state.update({name: value for name, value in dense_state.items() if name in state})
    for i, block in enumerate(moe_model.blocks):
        if not block.is_moe:
            continue
        ffn, n = f"blocks.{i}.ffn.", block.ffn.cfg.n_experts
        copies = {"experts.w_in": "fc1.weight", "experts.b_in": "fc1.bias",  # (E, d, h), (E, h)
                  "experts.w_out": "fc2.weight", "experts.b_out": "fc2.bias"}  # (E, h, d), (E, d)
        for expert_name, dense_name in copies.items():
            weight = dense_state[ffn + dense_name]
            state[ffn + expert_name] = np.broadcast_to(weight, (n,) + weight.shape).copy()
    return state
