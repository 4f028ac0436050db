"""Lesson 05, stability (ST-MoE, Zoph et al. 2022; Switch's selective precision): exercises.

Replace each `raise NotImplementedError(...)` with your answer, then grade:
    python -m minimoe.grade ex05
Each docstring is the contract the grader checks; the reference answers are in
`solutions/ex05_stability.py` (look there only when stuck).
"""
# ruff: noqa: F401  (the imports are there for your answers)
import numpy as np

import minimoe.functional as F


def z_loss(logits):
    """The router z-loss of ST-MoE (Zoph et al. 2022, eq. 5), without its coefficient.

    logits: Tensor (T, E), router logits. Returns a scalar Tensor, differentiable:
    the mean over tokens of (log sum_j exp(logits[t, j]))^2. Equals (log E)^2 for zero logits and
    stays finite for logits of +-1000.

    Hint: F.logsumexp over the last axis, square it, mean over tokens.
    """
    raise NotImplementedError('ex05: F.logsumexp over the last axis, square it, mean over tokens.')


def round_to_bfloat16(x):
    """Rounds values to the nearest bfloat16 (8 exponent bits, 7 mantissa bits), kept in float32.

    x: a number or an array of any shape (0-d included) and any float dtype; it is first converted
    to float32 (NumPy's rounding), then rounded to bfloat16. Returns a float32 ndarray of x's shape
    (shape () for a number) whose values are bfloat16 numbers (the low 16 bits of each float32 are
    zero), rounded to nearest, ties to even: what a router computed in bfloat16 sees (Switch,
    section 2.4, "selective precision"). NaN gives NaN, +-inf stay +-inf, and finite values beyond
    bfloat16's largest round to +-inf.

    Hint: view as np.uint32; add 0x7FFF + ((bits >> 16) & 1); clear the low 16 bits; NaN apart.
    """
    raise NotImplementedError(
        'ex05: view as np.uint32; add 0x7FFF + ((bits >> 16) & 1); clear the low 16 bits; NaN '
        'apart.')
