"""Batches of (input, next-character target, domain) windows cut from a token stream.

A window starting at s gives x[t] = ids[s + t] and y[t] = ids[s + t + 1]: the model learns to
predict each character from the ones before it. The domain labels ride along so that lesson 08
can sort every routing decision by the domain of the token that was routed.

The arrays are NumPy; move a batch to the GPU with the backend's `to_device`.
"""
from __future__ import annotations

import numpy as np

Batch = tuple[np.ndarray, np.ndarray, np.ndarray]  # x, y, d: each (B, T) int64


class BatchSampler:
    """Random windows (with replacement) for training, reproducible from `seed`.

    `state()` returns the generator's state as plain JSON-able data and `set_state()` restores
    it, so a resumed run draws exactly the batches the uninterrupted run would have drawn.
    Introduced in lesson 04 (a tiny MoE Transformer).
    """

    def __init__(self, ids, domains, batch_size: int, context: int, seed: int = 0):
        self.ids, self.domains = _check_stream(ids, domains, batch_size, context)
        self.batch_size = batch_size
        self.context = context
        self.rng = np.random.default_rng(seed)

    def sample(self) -> Batch:
        """One batch (x, y, d), each (batch_size, context) int64."""
        # The last start leaves room for the target after the window: s + context <= N - 1.
        starts = self.rng.integers(0, len(self.ids) - self.context, size=self.batch_size)  # (B,)
        return _windows(self.ids, self.domains, starts, self.context)

    def state(self) -> dict:
        """The random generator's state (PCG64's 128-bit integers are plain Python ints)."""
        return self.rng.bit_generator.state

    def set_state(self, state: dict) -> None:
        """Restore a state from `state()`, for instance after a JSON round trip."""
        expected = self.rng.bit_generator.state["bit_generator"]
        if not isinstance(state, dict) or state.get("bit_generator") != expected:
            raise ValueError(
                f"set_state() needs a dict saved by BatchSampler.state() (a {expected} state), "
                f"got {type(state).__name__} {str(state)[:80]}"
            )
        self.rng.bit_generator.state = state


def eval_batches(ids, domains, batch_size: int, context: int, n_batches: int) -> list[Batch]:
    """A fixed list of `n_batches` batches whose windows are evenly spaced over the whole stream.

    No randomness: every evaluation, in every run, sees the same windows, so validation losses
    can be compared across steps and runs.
    """
    ids, domains = _check_stream(ids, domains, batch_size, context)
    if not (isinstance(n_batches, (int, np.integer)) and n_batches >= 1):
        raise ValueError(f"n_batches must be a whole number of at least 1, got {n_batches!r}")
    last_start = len(ids) - context - 1
    starts = np.linspace(0, last_start, n_batches * batch_size).round().astype(np.int64)
    starts = starts.reshape(n_batches, batch_size)  # (n_batches, B)
    return [_windows(ids, domains, batch_starts, context) for batch_starts in starts]


def _windows(ids: np.ndarray, domains: np.ndarray, starts: np.ndarray, context: int) -> Batch:
    index = starts[:, None] + np.arange(context)[None, :]  # (B, T)
    return ids[index], ids[index + 1], domains[index].astype(np.int64)


def _check_stream(ids, domains, batch_size, context) -> tuple[np.ndarray, np.ndarray]:
    ids, domains = np.asarray(ids), np.asarray(domains)
    if ids.ndim != 1 or not np.issubdtype(ids.dtype, np.integer):
        raise ValueError(f"ids must be a 1-D integer array, got shape {ids.shape} and {ids.dtype}")
    if domains.shape != ids.shape:
        raise ValueError(
            f"domains must label every id: ids has shape {ids.shape}, domains {domains.shape}"
        )
    for name, value in (("batch_size", batch_size), ("context", context)):
        if not (isinstance(value, (int, np.integer)) and value >= 1):
            raise ValueError(f"{name} must be a whole number of at least 1, got {value!r}")
    if context >= len(ids):
        raise ValueError(
            f"context {context} needs at least {context + 1} ids (a window plus its next-character "
            f"target), but the stream has {len(ids)}; use a context below {len(ids)}"
        )
    return ids.astype(np.int64, copy=False), domains
