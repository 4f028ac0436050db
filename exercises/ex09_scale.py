"""Lesson 09, scale and systems: the parameter and FLOP calculator, expert parallelism's
all-to-all, and serving's batch window: exercises.

Replace each `raise NotImplementedError(...)` with your answer, then grade:
    python -m minimoe.grade ex09
Each docstring is the contract the grader checks; the reference answers are in
`solutions/ex09_scale.py` (look there only when stuck).
"""
# ruff: noqa: F401  (the imports are there for your answers)
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class MoETransformerShape:
    """Given (not an exercise): a decoder-only MoE Transformer in the style of Mixtral.

    Every block is pre-norm: RMSNorm, attention, RMSNorm, MoE FFN. No biases anywhere; rotary
    positions (no position table); one more RMSNorm after the last block.
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int  # query heads
    n_kv_heads: int  # key/value heads (grouped-query attention; = n_heads for plain multi-head)
    head_dim: int
    n_experts: int  # routed experts per MoE layer
    top_k: int  # routed experts each token runs
    expert_hidden: int  # hidden width of one expert
    n_shared_experts: int = 0  # always-on experts, each of width expert_hidden
    tied_embeddings: bool = False  # the LM head reuses the embedding matrix


def moe_param_count(shape):
    """Total and active (per-token) parameters of a MoETransformerShape.

    shape: MoETransformerShape (defined above). Count, with no biases:
      embedding vocab*d; LM head vocab*d unless tied_embeddings; per block: attention
      (q: d x n_heads*head_dim, k and v: d x n_kv_heads*head_dim each, o: n_heads*head_dim x d),
      router d x n_experts, experts 3*d*expert_hidden each (SwiGLU: gate, up, down), shared experts
      the same size each, two RMSNorm scales of d; and a final RMSNorm of d.
    Active counts the same, but with top_k routed experts per block instead of n_experts.
    Returns (total, active) as Python ints. Mixtral 8x7B: (46_702_792_704, 12_879_925_248).

    Hint: block = attention + router + experts + shared + 2d; n_layers * block + d + embeddings.
    """
    raise NotImplementedError(
        'ex09: block = attention + router + experts + shared + 2d; n_layers * block + d + '
        'embeddings.')


def moe_flops_per_token(shape, seq_len):
    """Forward-pass FLOPs per token at a sequence length, counted as Kaplan et al. (2020) do.

    shape: MoETransformerShape; seq_len: int.
    A multiply-add is 2 FLOPs, so every weight matrix a token goes through costs 2 x its entries:
    per block the attention projections, the router, top_k routed experts and the shared experts;
    plus the LM head (vocab*d, counted even when tied: it is still a matmul). The embedding is a
    lookup and norms are element-wise: not counted. Attention itself adds, per block,
    2 * seq_len * n_heads * head_dim for the scores q.k and as much for the weighted sum of values
    (the causal mask is not used to halve it).
    Returns a Python int.

    Hint: 2 * (n_layers * block weights + vocab * d) + n_layers * 4 * seq_len * heads * head_dim.
    """
    raise NotImplementedError(
        'ex09: 2 * (n_layers * block weights + vocab * d) + n_layers * 4 * seq_len * heads * '
        'head_dim.')


def all_to_all_send_counts(expert_index, n_experts, n_ranks):
    """Expert parallelism: how many token rows this rank sends to every rank in the all-to-all.

    expert_index: int ndarray (T, k), the experts chosen for this rank's tokens, -1 where an
    assignment was dropped (nothing is sent). n_experts: int E; n_ranks: int R, dividing E
    (ValueError otherwise). Rank r holds the contiguous block of experts r*E/R .. (r+1)*E/R - 1.
    Every (token, expert) assignment sends one row, even when a token's two experts live on the
    same rank. Returns an int ndarray (R,) (the send counts of an Alltoallv; rank itself included).

    Hint: destination rank = expert // (E // R); np.bincount(..., minlength=n_ranks).
    """
    raise NotImplementedError(
        'ex09: destination rank = expert // (E // R); np.bincount(..., minlength=n_ranks).')


def batch_window_schedule(arrival_times, window, max_batch):
    """Serving with a batch window: which tokens run together, and when their batch leaves.

    arrival_times: (N,) ndarray of real seconds, in any order (N may be 0); window: float >= 0,
    seconds; max_batch: int >= 1. The earliest token not yet in a batch opens one at its arrival
    time a; every later token arriving at or before a + window joins it (the comparison in float64:
    `t <= a + window`), until the batch holds max_batch tokens. The batch is dispatched when it is
    full (at the arrival of its max_batch-th token) or else when its window closes (at a + window).
    The next token not in a batch opens the next one. Tokens with equal arrival times are taken in
    input order (a stable sort). window = 0 batches only simultaneous arrivals; max_batch = 1
    runs every token alone (dispatched on arrival).
    Returns (batch_id, dispatch_time), both (N,) and in the input order: batch_id int64 numbered
    0, 1, 2, ... in order of dispatch, dispatch_time float64. Raises ValueError for arrival_times
    that are not 1-D or not finite, a window < 0 or not finite, or max_batch < 1 or not an int.

    Hint: on sorted times, end = min(searchsorted(t, t + window, 'right'), arange(N) + max_batch)
    is where the batch opened by token i would end; the batches start at 0, end[0], end[end[0]], ...
    (follow that chain: a loop over batches, not tokens).
    """
    raise NotImplementedError(
        "ex09: sort the times; end = min(searchsorted(t, t + window, 'right'), arange(N) + max_batch); "
        'batches start at 0, end[0], end[end[0]], ...')
