"""The engine's fast path: work cut into cache-sized blocks, run on one thread pool that owns the cores.

NumPy runs each element-wise operation as its own pass over memory, on one core, and the BLAS
library runs each matrix product on threads of its own. On a small machine the two fight: after a
product, BLAS's threads spin for a while waiting for the next one, and slow whatever NumPy runs
next on the same cores; and BLAS's threads gain little on the engine's many small products (one
per expert, one per attention head). So on the fast path the BLAS library is held to one thread,
and the engine's own pool shares the work out instead, in blocks that are independent of each
other: blocks of rows of an element-wise chain (GELU and its gradient), the experts of an MoE
layer (`map_tasks`), blocks of (batch, head) pairs in attention, blocks of rows of a
large product. A block stays in cache from one operation to the next, and NumPy and BLAS release
the GIL while they work, so the blocks run side by side.

Every block is computed exactly as the whole would be by the same code, and the blocks depend on
the arrays' sizes, never on the thread count, so the numbers are the same whatever the number of
threads. Against the plain path they may differ in the last bits, where BLAS (on its own threads
there) sums a product in another order.

The plain path -- one NumPy call over the whole array, BLAS on its own threads, what the lessons
show -- is selected by `MINIMOE_PLAIN=1` in the environment or `use_plain(True)`; the tests run
every op both ways. CuPy arrays (one kernel per operation on the GPU already) and small arrays
always take one plain call.

Threads: `MINIMOE_NUM_THREADS` or `set_num_threads(n)`; the default is the number of cores. Under
MPI, give each rank one (`minimoe.parallel` does).
"""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from threadpoolctl import ThreadpoolController

BLOCK_BYTES = 1 << 20  # about what a core's L2 cache holds
_pool: ThreadPoolExecutor | None = None
_blas = ThreadpoolController().select(user_api="blas")
_blas_default = _blas.info()[0]["num_threads"] if _blas.info() else None
_plain = False
_threads = 1


def _threads_from_env() -> int:
    text = os.environ.get("MINIMOE_NUM_THREADS", "")
    if not text:
        return os.cpu_count() or 1
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"MINIMOE_NUM_THREADS must be a whole number >= 1, got {text!r}")
    return int(text)


def use_plain(plain: bool = True) -> None:
    """True: every op runs as one plain NumPy call (the readable twin), BLAS on its own threads;
    False: the fast path, BLAS held to one thread and the work shared out over the pool."""
    global _plain
    _plain = bool(plain)
    _blas.limit(limits=_blas_default if _plain else 1)


def is_plain() -> bool:
    return _plain


def set_num_threads(n: int) -> None:
    """Threads of the pool (1 runs the blocks one after another, still cache-sized)."""
    global _threads, _pool
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"set_num_threads needs a whole number >= 1, got {n!r}")
    if int(n) != _threads and _pool is not None:
        _pool.shutdown(wait=True)
        _pool = None
    _threads = int(n)


def num_threads() -> int:
    return _threads


def blocked(first) -> bool:
    """Whether an op on `first` takes the fast path: NumPy arrays, fast path on."""
    return not _plain and isinstance(first, np.ndarray)


def map_row_blocks(fn, *inputs, block_rows: int | None = None):
    """fn(*inputs) for a function that treats every row (index of the first axis) on its own,
    computed block by block of rows. Returns what fn returns: an array or a tuple of arrays.

    `block_rows` sets the rows of a block where fn's temporaries are much larger than a row of the
    first input (attention: a (T, T) score matrix per (batch, head) pair); by default a block holds
    about BLOCK_BYTES of the first input.
    """
    first = inputs[0]
    n = first.shape[0] if first.ndim else 0
    if block_rows is None:
        row_bytes = first.itemsize * (first.size // max(1, n))
        block_rows = max(1, BLOCK_BYTES // max(1, row_bytes))
    if not blocked(first) or n <= block_rows:
        return fn(*inputs)
    blocks = [slice(start, start + block_rows) for start in range(0, n, block_rows)]
    # fn on one row tells the outputs' shapes and dtypes, so that every block, the first included,
    # can run on the pool at once (a serial first block would leave a core idle)
    probe = fn(*(a[:1] for a in inputs))
    single = not isinstance(probe, tuple)
    outs = tuple(np.empty((n,) + r.shape[1:], dtype=r.dtype) for r in ((probe,) if single else probe))

    def run(block):
        results = fn(*(a[block] for a in inputs))
        for out, r in zip(outs, (results,) if single else results):
            out[block] = r

    _share_out(run, blocks)
    return outs[0] if single else outs


def for_each_block(fn, n: int, block_rows: int) -> None:
    """fn(rows) for the slices of block_rows rows that cover range(n), on the pool: for a fn that
    writes its block of an output allocated by the caller (no copy of the block's result)."""
    _share_out(fn, [slice(start, start + block_rows) for start in range(0, n, block_rows)])


def map_tasks(fn, items, like) -> list:
    """[fn(item) for item in items], the items shared out over the pool on the fast path (each
    item's work must be independent of the others': the experts of an MoE layer, say), where
    `like`, an array the work is on, is a NumPy array. Otherwise one after another."""
    items = list(items)
    if not blocked(like) or len(items) < 2:
        return [fn(item) for item in items]
    results = [None] * len(items)

    def run(i):
        results[i] = fn(items[i])

    _share_out(run, range(len(items)))
    return results


def _share_out(run, items) -> None:
    """run(item) for every item, on the pool's threads and the calling one; re-raises the first error."""
    pending = iter(items)  # shared: next() hands each item to exactly one thread

    def drain():
        for item in pending:
            run(item)

    helpers = [_executor().submit(drain) for _ in range(min(_threads, len(items)) - 1)]
    try:
        drain()
    finally:
        errors = [h.exception() for h in helpers]  # waits for every helper, even after an error here
    for error in errors:
        if error is not None:
            raise error


def _executor() -> ThreadPoolExecutor:
    global _pool
    if _pool is None:
        _pool = ThreadPoolExecutor(max_workers=_threads, thread_name_prefix="minimoe-rows")
    return _pool


set_num_threads(_threads_from_env())
use_plain(os.environ.get("MINIMOE_PLAIN", "") not in ("", "0"))
