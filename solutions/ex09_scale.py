"""Lesson 09, scale and systems: the parameter and FLOP calculator, expert parallelism's
all-to-all, and serving's batch window: reference answers.

Try the exercise first (`exercises/ex09_scale.py`); grade it with
`python -m minimoe.grade ex09`.
"""
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


def _attention_params(shape):
    """q and o are d x (heads * head_dim); k and v have only n_kv_heads heads."""
    query_width = shape.n_heads * shape.head_dim
    kv_width = shape.n_kv_heads * shape.head_dim
    return 2 * shape.d_model * query_width + 2 * shape.d_model * kv_width


def _expert_params(shape):
    """A SwiGLU expert: gate and up (d x h) and down (h x d)."""
    return 3 * shape.d_model * shape.expert_hidden


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
    d, expert = shape.d_model, _expert_params(shape)
    always_on = (_attention_params(shape) + d * shape.n_experts  # attention, router
                 + shape.n_shared_experts * expert + 2 * d)  # shared experts, two norms
    embeddings = shape.vocab_size * d * (1 if shape.tied_embeddings else 2)
    total = shape.n_layers * (always_on + shape.n_experts * expert) + d + embeddings
    active = shape.n_layers * (always_on + shape.top_k * expert) + d + embeddings
    return int(total), int(active)


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
    d = shape.d_model
    per_block = (_attention_params(shape) + d * shape.n_experts
                 + (shape.top_k + shape.n_shared_experts) * _expert_params(shape))
    matmul_weights = shape.n_layers * per_block + shape.vocab_size * d
    attention_scores = shape.n_layers * 4 * seq_len * shape.n_heads * shape.head_dim
    return int(2 * matmul_weights + attention_scores)


def all_to_all_send_counts(expert_index, n_experts, n_ranks):
    """Expert parallelism: how many token rows this rank sends to every rank in the all-to-all.

    expert_index: int ndarray (T, k), the experts chosen for this rank's tokens, -1 where an
    assignment was dropped (nothing is sent). n_experts: int E; n_ranks: int R, dividing E
    (ValueError otherwise). Rank r holds the contiguous block of experts r*E/R .. (r+1)*E/R - 1.
    Every (token, expert) assignment sends one row, even when a token's two experts live on the
    same rank. Returns an int ndarray (R,) (the send counts of an Alltoallv; rank itself included).

    Hint: destination rank = expert // (E // R); np.bincount(..., minlength=n_ranks).
    """
    if n_experts % n_ranks:
        raise ValueError(f"n_experts={n_experts} must be divisible by n_ranks={n_ranks}")
    routed = expert_index[expert_index >= 0]  # dropped assignments travel nowhere
    return np.bincount(routed // (n_experts // n_ranks), minlength=n_ranks)


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
    times = np.asarray(arrival_times)
    if times.ndim != 1 or times.dtype.kind not in "iuf" or not np.isfinite(times).all():
        raise ValueError(f"arrival_times must be a 1-D array of finite real numbers, got shape {times.shape}")
    if not (np.isfinite(window) and window >= 0):
        raise ValueError(f"window must be a finite number of seconds >= 0, got {window!r}")
    if isinstance(max_batch, bool) or not isinstance(max_batch, (int, np.integer)) or max_batch < 1:
        raise ValueError(f"max_batch must be an int >= 1, got {max_batch!r}")
    n = times.size
    order = np.argsort(times, kind="stable")
    t = times[order].astype(np.float64)  # (N,) sorted
    end = np.minimum(np.searchsorted(t, t + window, side="right"), np.arange(n) + max_batch)  # (N,)
    starts = []
    start = 0
    while start < n:  # one step per batch
        starts.append(start)
        start = int(end[start])
    first = np.array(starts, dtype=np.int64)  # (n_batches,) sorted position of each batch's first token
    size = np.diff(np.append(first, n))
    dispatch = np.where(size == max_batch, t[first + size - 1], t[first] + window)  # full, or timed out
    batch_id = np.empty(n, dtype=np.int64)
    batch_id[order] = np.repeat(np.arange(first.size), size)
    return batch_id, dispatch[batch_id].astype(np.float64)
