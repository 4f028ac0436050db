"""Lesson 05, stability (ST-MoE, Zoph et al. 2022; Switch's selective precision): reference answers.

Try the exercise first (`exercises/ex05_stability.py`); grade it with
`python -m minimoe.grade ex05`.
"""
import numpy as np

import minimoe.functional as F


def z_loss(logits):
    """The router z-loss of ST-MoE (Zoph et al. 2022, eq. 5), without its coefficient.

    logits: Tensor (T, E), router logits. Returns a scalar Tensor, differentiable:
    the mean over tokens of (log sum_j exp(logits[t, j]))^2. Equals (log E)^2 for zero logits and
    stays finite for logits of +-1000.

    Hint: F.logsumexp over the last axis, square it, mean over tokens.
    """
    log_partition = F.logsumexp(logits, axis=-1)  # (T,), computed stably by the engine
    return (log_partition * log_partition).mean()


def round_to_bfloat16(x):
    """Rounds float32 values to the nearest bfloat16 (8 exponent bits, 7 mantissa bits).

    x: ndarray, converted to float32. Returns a float32 ndarray of x's shape whose values are
    bfloat16 numbers (the low 16 bits of each float32 are zero), rounded to nearest, ties to even:
    what a router computed in bfloat16 sees (Switch, section 2.4, "selective precision").

    Hint: view as np.uint32; add 0x7FFF + ((bits >> 16) & 1); clear the low 16 bits; view back.
    """
    bits = np.asarray(x, dtype=np.float32).view(np.uint32)
    lowest_kept_bit = (bits >> np.uint32(16)) & np.uint32(1)  # decides ties: round to even
    rounded = (bits + np.uint32(0x7FFF) + lowest_kept_bit) & np.uint32(0xFFFF0000)
    return rounded.view(np.float32)
