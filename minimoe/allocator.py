"""Freed memory kept for reuse: a training step's activations then cost no page faults.

A training step allocates and frees the same large arrays every step (activations saved for the
backward pass, their gradients). glibc's malloc hands arrays above 128 KiB to the kernel as fresh
mappings and returns them on free, so each step touches every page of them anew, and under a
hypervisor a page fault costs microseconds: on the reference workload about a tenth of a step went
on them. Raising malloc's mmap and trim thresholds keeps freed blocks in the process for the next
step, and one arena for all threads lets a block freed by one of the engine's threads be reused
by another (with an arena per thread, each would keep its own). Memory is returned to the system
when the process ends.
Other C libraries (macOS, Windows, musl) manage memory their own way and are left alone.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD, M_ARENA_MAX = -1, -3, -8  # glibc's mallopt parameters (malloc.h)
MMAP_THRESHOLD_MAX = 32 << 20  # glibc's ceiling on 64-bit systems; larger arrays are still mapped


def keep_freed_memory() -> bool:
    """Tells glibc's malloc to reuse freed blocks of up to 32 MiB, from one arena; False where libc
    is not glibc."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return False
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
    settings = ((M_MMAP_THRESHOLD, MMAP_THRESHOLD_MAX), (M_TRIM_THRESHOLD, 1 << 30), (M_ARENA_MAX, 1))
    return all([bool(libc.mallopt(option, value)) for option, value in settings])
