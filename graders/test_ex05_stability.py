"""Grades exercises/ex05_stability.py: the router z-loss and bfloat16 rounding."""
import math

import numpy as np
import pytest

import minimoe as mm
from graders._checks import expect, expect_close, expect_dtype, expect_equal, expect_gradients, expect_shape, lesson
from minimoe.moe import losses

MODULE = "ex05_stability"
see = lesson(MODULE)
TWINS = {"z_loss": [losses.z_loss]}


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
