"""Serving with a batch window: which decoding tokens run together, and when each batch finishes.

A server that generates text receives one token per request per step, at times it does not choose.
Running each token alone wastes the cost every call pays whatever its size (on a GPU, reading the
experts' weights from memory; here also the per-call work of the MoE layer). A *batch window*
waits for company: the first waiting token opens a window of W seconds, and the batch leaves when
the window closes or when it holds B tokens, whichever comes first. These are the two knobs of
Triton Inference Server's dynamic batcher (`max_queue_delay_microseconds`, `max_batch_size`).
Then one server runs the batches in order, first come, first served. Lesson 09 measures what the
window buys (throughput) and costs (latency) on the tiny model.

No step loops over tokens: the batches are a chain (each starts where the previous ended), which
`batch_window_schedule` follows by pointer doubling, and the queue is Lindley's recursion in closed
form.
"""
from __future__ import annotations

import numbers

import numpy as np


def batch_window_schedule(arrival_times, window: float, max_batch: int):
    """(batch_id, dispatch_time) of every token under a batch window of `window` seconds and at
    most `max_batch` tokens.

    arrival_times: (N,) real, in any order; ties are taken in input order (a stable sort). The
    earliest token not yet in a batch opens one at its arrival time a; every later token arriving at
    or before a + window joins it, up to max_batch tokens. The batch is dispatched when it is full
    (at the arrival of its max_batch-th token) or else when the window closes (a + window).
    window = 0 batches only simultaneous arrivals; max_batch = 1 runs every token alone.
    Returns batch_id (N,) int64, numbered 0, 1, ... in order of dispatch, and dispatch_time (N,)
    float64, both in the input order. Lesson 09, section 8.
    """
    times = np.asarray(arrival_times)
    if times.ndim != 1 or times.dtype.kind not in "iuf":
        raise ValueError(f"arrival_times must be a 1-D array of real numbers, got shape {times.shape} "
                         f"and dtype {times.dtype}")
    times = times.astype(np.float64)
    if not np.isfinite(times).all():
        raise ValueError("arrival_times must all be finite; drop the tokens that never arrive")
    if not (isinstance(window, numbers.Real) and np.isfinite(window) and window >= 0):
        raise ValueError(f"window must be a finite number of seconds >= 0 (0: no waiting), got {window!r}")
    if isinstance(max_batch, bool) or not (isinstance(max_batch, numbers.Integral) and max_batch >= 1):
        raise ValueError(f"max_batch must be a whole number >= 1 (1: every token alone), got {max_batch!r}")
    n = times.size
    order = np.argsort(times, kind="stable")
    arrival = times[order]  # (N,) sorted
    position = np.arange(n)
    # if token i opened a batch, the batch would be tokens i .. end[i] - 1
    end = np.minimum(np.searchsorted(arrival, arrival + window, side="right"), position + max_batch)  # (N,)
    first = _chain(end, n)  # (n_batches,) the sorted position of each batch's first token
    size = np.diff(np.append(first, n))  # (n_batches,)
    closes = np.where(size == max_batch, arrival[first + size - 1], arrival[first] + window)  # full, or timed out
    batch_sorted = np.repeat(np.arange(first.size), size)  # (N,)
    batch_id = np.empty(n, dtype=np.int64)
    batch_id[order] = batch_sorted
    return batch_id, closes[batch_id].astype(np.float64)


def _chain(step, n: int):
    """The positions 0, step[0], step[step[0]], ... below n (step[i] > i), by pointer doubling:
    knowing the first m positions and the 2^s-fold jump, the next m are one gather away, so log2 of
    the chain's length array operations find all of it."""
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    jump = np.append(step, n)  # (N+1,) position n is the end: it jumps to itself
    path = np.zeros(1, dtype=np.int64)
    while path[-1] < n:
        path = np.concatenate([path, jump[path]])  # positions m .. 2m-1 of the chain
        jump = jump[jump]  # twice as far
    return path[path < n]


def serve_in_order(ready_times, compute_times):
    """Finish time of each batch when one server runs them first come, first served.

    ready_times (n,): when each batch is dispatched, non-decreasing; compute_times (n,) >= 0: how
    long each runs. A batch starts when it is ready and the server is free:
        finish[b] = max(ready[b], finish[b - 1]) + compute[b]     (Lindley's recursion),
    which unrolls to finish[b] = S[b] + max over a <= b of (ready[a] - S[a - 1]) with S the running
    sum of the compute times, so it needs no loop. Returns finish (n,) float64.
    """
    ready = np.asarray(ready_times, dtype=np.float64)
    compute = np.asarray(compute_times, dtype=np.float64)
    if ready.ndim != 1 or ready.shape != compute.shape:
        raise ValueError(f"ready_times and compute_times must be 1-D of the same length, got shapes "
                         f"{ready.shape} and {compute.shape}")
    if np.any(np.diff(ready) < 0):
        raise ValueError("ready_times must be non-decreasing: batches are served in the order they are ready")
    if np.any(compute < 0) or not np.isfinite(compute).all():
        raise ValueError("compute_times must be finite and >= 0")
    done = np.cumsum(compute)  # S[b]
    before = done - compute  # S[b - 1]
    return done + np.maximum.accumulate(ready - before)
