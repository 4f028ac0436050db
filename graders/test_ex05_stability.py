"""Grades exercises/ex05_stability.py: the router z-loss, bfloat16 rounding, gradient clipping by the
global norm and the warm-up + cosine learning rate."""
import math

import numpy as np
import pytest

import minimoe as mm
from graders._checks import (expect, expect_close, expect_dtype, expect_equal, expect_gradients, expect_raises,
                             expect_shape, lesson)
from minimoe import optim
from minimoe.moe import losses

MODULE = "ex05_stability"
see = lesson(MODULE)
TWINS = {"z_loss": [losses.z_loss], "clip_grad_norm": [optim.clip_grad_norm],
         "warmup_cosine_lr": [optim.warmup_cosine]}


def _log_partition(logits):
    m = logits.max(axis=-1, keepdims=True)
    return (m + np.log(np.exp(logits - m).sum(axis=-1, keepdims=True)))[..., 0]


@pytest.mark.exercise("z_loss", points=1)
def test_z_loss_values(fn, rng):
    section = see("The router z-loss")
    expect_close(fn(mm.tensor(np.zeros((3, 8)), dtype=np.float64)), math.log(8) ** 2,
                 "z_loss of zero logits over 8 experts ((log 8)^2)", section)
    logits = np.array([[1000.0, -1000.0], [0.0, math.log(3.0)]])  # log-partitions 1000 and log 4
    expect_close(fn(mm.tensor(logits, dtype=np.float64)), (1000.0**2 + math.log(4.0) ** 2) / 2,
                 "z_loss of [[1000, -1000], [0, log 3]] (mean of squared log-partitions)", section)
    logits = 5 * rng.standard_normal((7, 6))
    expect_close(fn(mm.tensor(logits, dtype=np.float32)), (_log_partition(logits) ** 2).mean(),
                 "z_loss of random float32 logits (7 tokens, 6 experts)", section, rtol=1e-5, dtype=np.float32)


@pytest.mark.exercise("z_loss", points=1)
def test_z_loss_gradients(fn, rng):
    logits = rng.standard_normal((5, 4))
    expect_close(fn(mm.tensor(logits, dtype=np.float64)), (_log_partition(logits) ** 2).mean(),
                 "z_loss of random logits (5 tokens, 4 experts)", see("The router z-loss"))
    expect_gradients(fn, [logits], "z_loss gradients", see("The router z-loss"))


def _bfloat16_by_hand(x):
    """Nearest of the two bfloat16 neighbours, compared in float64 (exact); ties to the even one."""
    single = np.asarray(x, dtype=np.float32)
    bits = single.view(np.uint32)
    low = (bits & np.uint32(0xFFFF0000)).view(np.float32).astype(np.float64)  # toward zero
    high = ((bits & np.uint32(0xFFFF0000)) + np.uint32(0x10000)).view(np.float32).astype(np.float64)
    value = single.astype(np.float64)
    below, above = np.abs(value - low), np.abs(high - value)
    low_is_even = ((bits >> np.uint32(16)) & np.uint32(1)) == 0
    with np.errstate(invalid="ignore"):
        rounded = np.where((below < above) | ((below == above) & low_is_even), low, high)
    rounded = np.where(np.isfinite(value), rounded, value)
    return rounded.astype(np.float32)


@pytest.mark.exercise("round_to_bfloat16", points=1)
def test_round_to_bfloat16_values(fn):
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 3 * 2**-9, -(1 + 3 * 2**-9), 257.0, 0.0], dtype=np.float32)
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0); 1 + 3*2^-8 is halfway
    # between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6; 1 + 3*2^-9 is nearer to 1 + 2^-7; 257 = 256 (1 + 2^-8).
    expected = np.array([1.0, 1.0, 1 + 2**-6, 1 + 2**-7, -(1 + 2**-7), 256.0, 0.0], dtype=np.float32)
    section = see("Router precision")
    got = fn(x)
    expect_close(got, expected, "round_to_bfloat16 (nearest, ties to even)", section, rtol=0, atol=0,
                 dtype=np.float32)
    special = fn(np.array([np.nan, np.inf, -np.inf, 3.4e38, -0.0], dtype=np.float32))
    expect(np.isnan(np.asarray(special)[0]), "round_to_bfloat16(NaN)", "NaN", str(np.asarray(special)[0]), section)
    expect_close(np.asarray(special)[1:], [np.inf, -np.inf, np.inf, 0.0],
                 "round_to_bfloat16 of [inf, -inf, 3.4e38, -0.0] (beyond the largest bfloat16: inf)", section,
                 rtol=0, atol=0)
    payload = np.array([0x7F800001, 0xFF800001], dtype=np.uint32).view(np.float32)  # NaNs with low bits only
    expect(np.all(np.isnan(np.asarray(fn(payload)))), "round_to_bfloat16 of NaNs whose payload is in the low 16 bits",
           "NaN (not inf)", str(np.asarray(fn(payload)).tolist()), section)
    scalar = fn(1 + 3 * 2**-8)
    expect_shape(scalar, (), "round_to_bfloat16 of a Python float", section)
    expect_close(scalar, 1 + 2**-6, "round_to_bfloat16(1 + 3 * 2^-8) (a 0-d input)", section, rtol=0, atol=0,
                 dtype=np.float32)


@pytest.mark.exercise("round_to_bfloat16", points=1)
def test_round_to_bfloat16_random(fn, rng):
    section = see("Router precision")
    wide = rng.standard_normal(1000) * 10.0 ** rng.integers(-30, 30, 1000)
    halfway = (rng.integers(0, 2**13, 500, dtype=np.uint32) << np.uint32(16)) | np.uint32(0x8000)
    halfway = (halfway + np.uint32(0x3F000000)).view(np.float32)  # exact ties between two bfloat16s
    for x, what in [(wide.astype(np.float32).reshape(10, 100), "1000 random float32 values of every magnitude"),
                    (halfway, "500 random exact halfway cases (ties to even)"),
                    (wide[:50], "50 random float64 values (converted to float32 first)")]:
        got = fn(x)
        expect_dtype(got, np.float32, f"round_to_bfloat16 of {what}", section)
        expect_equal(np.asarray(got).view(np.uint32), _bfloat16_by_hand(x).view(np.uint32),
                     f"round_to_bfloat16 of {what} (bit patterns)", section)


# ---- gradient clipping by the global norm ------------------------------------------------------------

def _clipped_by_hand(grads, max_norm):
    """The global norm of all entries as one float64 vector, and each array scaled by the trainer's rule."""
    norm = float(np.linalg.norm(np.concatenate([np.ravel(g).astype(np.float64) for g in grads])))
    scale = max_norm / (norm + 1e-6) if norm > max_norm else 1.0
    return [g.astype(np.float64) * scale for g in grads], norm


def _expect_clipped(fn, grads, max_norm, what, section, rtol=1e-9):
    before = [g.copy() for g in grads]
    got = fn(grads, max_norm)
    expect(isinstance(got, tuple) and len(got) == 2, what, "a pair (clipped list, norm)", repr(type(got)), section)
    clipped, norm = got
    expected, expected_norm = _clipped_by_hand(before, max_norm)
    expect_close(norm, expected_norm, f"{what}: the norm before clipping", section, rtol=rtol)
    expect(len(clipped) == len(grads), f"{what}: the clipped list", f"{len(grads)} arrays", f"{len(clipped)}", section)
    for i, (array, reference) in enumerate(zip(clipped, expected)):
        expect_close(array, reference, f"{what}: array {i}", section, rtol=rtol, atol=0, dtype=before[i].dtype)
    for i, (array, original) in enumerate(zip(grads, before)):
        expect(np.array_equal(array, original), f"{what}: input array {i} after the call", "unchanged (return new "
               "arrays; the caller's gradients stay as they were)", "modified in place", section)
    return clipped, norm


@pytest.mark.exercise("clip_grad_norm", points=1)
def test_clip_grad_norm_values(fn, rng):
    section = see("Clipping by the global norm")
    clipped, _ = _expect_clipped(fn, [np.array([3.0, 4.0]), np.array([[12.0], [0.0]])], 6.5,
                                 "clip_grad_norm of [3, 4] and [[12], [0]] at max_norm 6.5 (norm 13)", section)
    expect_close(clipped[0], [1.5, 2.0], "clip_grad_norm of [3, 4] and [[12], [0]]: array 0 (halved)", section,
                 rtol=1e-6)
    shapes = [(int(rng.integers(1, 6)), int(rng.integers(1, 6))), (int(rng.integers(1, 9)),), (2, 3, 4)]
    grads = [rng.standard_normal(shape) * 10.0 ** rng.uniform(-1, 1) for shape in shapes]
    norm = _clipped_by_hand(grads, 1.0)[1]
    for factor, case in ((0.3, "above max_norm: scaled"), (3.0, "below max_norm: unchanged")):
        _expect_clipped(fn, grads, factor * norm, f"clip_grad_norm of 3 random arrays, {case}", section)
    _expect_clipped(fn, [np.zeros((2, 3)), np.zeros(4)], 1.0, "clip_grad_norm of zero gradients (norm 0)", section)


@pytest.mark.exercise("clip_grad_norm", points=1)
def test_clip_grad_norm_is_global(fn, rng):
    section = see("Clipping by the global norm")
    # Every array's own norm is below max_norm, their global norm is above it: all are scaled.
    grads = [rng.standard_normal(int(rng.integers(3, 8))) for _ in range(6)]
    own = max(float(np.linalg.norm(g)) for g in grads)
    total = _clipped_by_hand(grads, 1.0)[1]
    _expect_clipped(fn, grads, (own + total) / 2, "clip_grad_norm of 6 random arrays, each under max_norm, "
                    "together over it (one norm for all, one factor for all)", section)
    # One large array among small ones: the small ones shrink with it, by the same factor.
    grads = [100 * rng.standard_normal((4, 4)), 0.01 * rng.standard_normal(5), 0.01 * rng.standard_normal(3)]
    _expect_clipped(fn, grads, 1.0, "clip_grad_norm of one large and two small random arrays", section)


@pytest.mark.exercise("clip_grad_norm", points=1)
def test_clip_grad_norm_dtypes_and_edge_cases(fn, rng):
    section = see("Clipping by the global norm")
    for dtype, rtol in ((np.float32, 1e-5), (np.float16, 1e-2)):  # float16 sums round at about 1e-3
        grads = [rng.standard_normal((3, 5)).astype(dtype), rng.standard_normal(7).astype(dtype)]
        _expect_clipped(fn, grads, 0.5, f"clip_grad_norm of random {np.dtype(dtype).name} arrays (the dtype kept)",
                        section, rtol=rtol)
    grads = [rng.standard_normal(4), np.array([1.0, np.inf]), rng.standard_normal(3)]
    clipped, norm = fn([g.copy() for g in grads], 1.0)
    expect(math.isinf(float(norm)), "clip_grad_norm with an inf entry: the norm", "inf (returned as it is)",
           repr(norm), section)
    for i, (array, original) in enumerate(zip(clipped, grads)):
        expect_close(array, original, f"clip_grad_norm with an inf entry: array {i} (values unchanged, not scaled "
                     "by max_norm / inf = 0)", section, rtol=0, atol=0)
    expect_raises(ValueError, lambda: fn([np.ones(3)], 0.0), "clip_grad_norm with max_norm 0", section)
    expect_raises(ValueError, lambda: fn([np.ones(3)], -1.0), "clip_grad_norm with max_norm -1", section)
    empty = fn([], 1.0)
    expect(list(empty[0]) == [] and float(empty[1]) == 0.0, "clip_grad_norm of an empty list", "([], 0.0)",
           repr(empty), section)


# ---- linear warm-up, then cosine decay ------------------------------------------------------------------

def _trainer_rate(steps, total_steps, peak_lr, warmup_steps, min_lr):
    """The trainer's own schedule, step by step (the grader may call the library; the exercise may not)."""
    rates = [optim.warmup_cosine(int(s), peak_lr, warmup_steps, total_steps, min_lr / peak_lr) for s in np.ravel(steps)]
    return np.array(rates, dtype=np.float64).reshape(np.shape(steps))


@pytest.mark.exercise("warmup_cosine_lr", points=1)
def test_warmup_cosine_lr_by_hand(fn):
    section = see("Linear warm-up, then cosine decay")
    steps = np.array([[0, 4, 9], [10, 60, 110], [111, 500, 35]])
    expected = [[0.1, 0.5, 1.0], [1.0, 0.55, 0.1], [0.1, 0.1, 0.1 + 0.45 * (1 + math.cos(math.pi / 4))]]
    expect_close(fn(steps, 110, 1.0, 10, 0.1), expected, "warmup_cosine_lr(steps, total 110, peak 1, warm-up 10, "
                 "min 0.1): 1/10 at step 0, the peak at steps 9 and 10, half-way at 60, the minimum from 110 on",
                 section, rtol=1e-12, dtype=np.float64)
    expect_close(fn(np.array([0, 1, 50, 100]), 100, 2.0, 0, 0.0), [2.0, 2.0 * (1 + math.cos(math.pi / 100)) / 2,
                 1.0, 0.0], "warmup_cosine_lr with warmup_steps 0 (the peak at step 0)", section, rtol=1e-12)
    scalar = fn(3, 10, 1.0, 4, 0.0)
    expect_shape(scalar, (), "warmup_cosine_lr of an int step", section)
    expect_close(scalar, 1.0, "warmup_cosine_lr(3, total 10, peak 1, warm-up 4, min 0) (the last warm-up step)",
                 section, rtol=1e-12, dtype=np.float64)


@pytest.mark.exercise("warmup_cosine_lr", points=1)
def test_warmup_cosine_lr_random(fn, rng):
    section = see("Linear warm-up, then cosine decay")
    for _ in range(4):
        total = int(rng.integers(2, 400))
        warmup = int(rng.integers(0, total + 1))
        peak = float(10.0 ** rng.uniform(-4, -1))
        low = float(peak * rng.uniform(0, 1))
        steps = np.arange(total + 20).reshape(-1, 1) if total % 2 else np.arange(total + 20)
        expect_close(fn(steps, total, peak, warmup, low), _trainer_rate(steps, total, peak, warmup, low),
                     f"warmup_cosine_lr over steps 0..{total + 19} (total {total}, warm-up {warmup}, peak {peak:.3g}, "
                     f"min {low:.3g}): the trainer's rates", section, rtol=1e-12, atol=0, dtype=np.float64)
    expect_close(fn(np.array([4, 5, 6]), 5, 1.0, 5, 0.2), [1.0, 1.0, 0.2],
                 "warmup_cosine_lr when the warm-up fills the run (total 5 = warm-up 5)", section, rtol=1e-12)


@pytest.mark.exercise("warmup_cosine_lr", points=1)
def test_warmup_cosine_lr_refuses_bad_input(fn, rng):
    section = see("Linear warm-up, then cosine decay")
    total = int(rng.integers(20, 200))
    expect_close(fn(np.arange(total), total, 0.01, 5, 0.001), _trainer_rate(np.arange(total), total, 0.01, 5, 0.001),
                 f"warmup_cosine_lr over steps 0..{total - 1} (total {total}, warm-up 5)", section, rtol=1e-12, atol=0)
    for args, what in [((np.array([3, -1]), 10, 1.0, 2, 0.0), "a negative step"),
                       ((0, 0, 1.0, 0, 0.0), "total_steps 0"), ((0, 10, 1.0, -1, 0.0), "warmup_steps -1"),
                       ((0, 10, 0.0, 2, 0.0), "peak_lr 0"), ((0, 10, 1.0, 2, 2.0), "min_lr above peak_lr"),
                       ((0, 10, 1.0, 2, -0.1), "a negative min_lr")]:
        expect_raises(ValueError, lambda args=args: fn(*args), f"warmup_cosine_lr with {what}", section)
