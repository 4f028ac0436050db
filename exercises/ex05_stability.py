"""Lesson 05, stability (ST-MoE, Zoph et al. 2022; Switch's selective precision; gradient clipping
and learning-rate warm-up): exercises.

Replace each `raise NotImplementedError(...)` with your answer, then grade:
    python -m minimoe.grade ex05
Each docstring is the contract the grader checks; the reference answers are in
`solutions/ex05_stability.py` (look there only when stuck).
"""
# ruff: noqa: F401  (the imports are there for your answers)
import math

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


def clip_grad_norm(grads, max_norm):
    """Clips gradients by their global L2 norm, as minimoe's trainer does before every update
    (Pascanu et al. 2013, Algorithm 1; the 1e-6 guard of PyTorch's `clip_grad_norm_`).

    grads: a list of float NumPy arrays, one per parameter (any shapes, any float dtypes).
    max_norm: a positive number; max_norm <= 0 raises ValueError.
    Returns (clipped, norm). `norm` is a Python float, the global norm *before* clipping: the
    square root of the sum over all arrays of their squared entries, as if they were one vector.
    `clipped` is a new list with the arrays in order, each of its input's shape and dtype: when
    norm > max_norm, every array multiplied by the same factor max_norm / (norm + 1e-6); otherwise
    the values unchanged (a norm of 0 included). The input arrays are never modified. A non-finite
    norm (an inf or NaN entry) is returned as it is, with the values unchanged, so the caller can
    stop (the trainer then raises TrainingDiverged). An empty list gives ([], 0.0).

    Hint: one norm over all arrays; scale only above max_norm, by a Python float (keeps the dtype).
    """
    raise NotImplementedError('ex05: one norm over all arrays; scale only above max_norm, by a Python '
                              'float (keeps the dtype).')


def warmup_cosine_lr(step, total_steps, peak_lr, warmup_steps, min_lr):
    """The learning rate of minimoe's trainer at 0-based `step` (the rate of the update that
    completes step + 1): a linear warm-up (Goyal et al. 2017, section 2.2), then a cosine decay
    (Loshchilov & Hutter 2017, eq. 5) that ends at `total_steps` and stays at min_lr after it.

    step: an int or an integer array of any shape, every value >= 0.
        step < warmup_steps:  peak_lr * (step + 1) / warmup_steps   (the first update already moves)
        otherwise:            min_lr + (peak_lr - min_lr) * (1 + cos(pi * p)) / 2,
                              p = min(1, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    So the rate is peak_lr at step warmup_steps - 1 and at step warmup_steps, min_lr from
    total_steps on; warmup_steps = 0 means no warm-up (peak_lr at step 0). Returns a float64
    ndarray of step's shape (shape () for an int).
    Bad input raises ValueError: a negative step, total_steps < 1, warmup_steps < 0, peak_lr <= 0,
    or min_lr outside [0, peak_lr].

    Hint: np.asarray(step); compute both branches for every step and pick with np.where.
    """
    raise NotImplementedError('ex05: np.asarray(step); compute both branches for every step and pick '
                              'with np.where.')
