"""Grades exercises/ex05_stability.py: the router z-loss and bfloat16 rounding."""
import math

import numpy as np
import pytest

import minimoe as mm
from graders._checks import expect, expect_close, expect_gradients, lesson

MODULE = "ex05_stability"
see = lesson(MODULE)


@pytest.mark.exercise("z_loss", points=1)
def test_z_loss_values(fn):
    section = see("The router z-loss")
    expect_close(fn(mm.tensor(np.zeros((3, 8)), dtype=np.float64)), math.log(8) ** 2,
                 "z_loss of zero logits over 8 experts ((log 8)^2)", section)
    logits = np.array([[1000.0, -1000.0], [0.0, math.log(3.0)]])  # log-partitions 1000 and log 4
    expect_close(fn(mm.tensor(logits, dtype=np.float64)), (1000.0**2 + math.log(4.0) ** 2) / 2,
                 "z_loss of [[1000, -1000], [0, log 3]] (mean of squared log-partitions)", section)


@pytest.mark.exercise("z_loss", points=1)
def test_z_loss_gradients(fn):
    logits = np.random.default_rng(16).standard_normal((5, 4))
    expect_gradients(fn, [logits], "z_loss gradients", see("The router z-loss"))


@pytest.mark.exercise("round_to_bfloat16", points=1)
def test_round_to_bfloat16_values(fn):
    x = np.array([1.0, 1 + 2**-8, 1 + 3 * 2**-8, 1 + 3 * 2**-9, -(1 + 3 * 2**-9), 257.0, 0.0], dtype=np.float32)
    # 1 + 2^-8 is halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1.0); 1 + 3*2^-8 is halfway
    # between 1 + 2^-7 and 1 + 2^-6: ties go to 1 + 2^-6; 1 + 3*2^-9 is nearer to 1 + 2^-7; 257 = 256 (1 + 2^-8).
    expected = np.array([1.0, 1.0, 1 + 2**-6, 1 + 2**-7, -(1 + 2**-7), 256.0, 0.0], dtype=np.float32)
    got = fn(x)
    expect(np.asarray(got).dtype == np.float32, "round_to_bfloat16 dtype", "float32", str(np.asarray(got).dtype),
           see("Router precision"))
    expect_close(got, expected, "round_to_bfloat16 (nearest, ties to even)", see("Router precision"), rtol=0, atol=0)


@pytest.mark.exercise("round_to_bfloat16", points=1)
def test_round_to_bfloat16_is_nearest(fn):
    x = (np.random.default_rng(17).standard_normal(1000) * 10.0**np.arange(-5, 5).repeat(100)).astype(np.float32)
    got = np.asarray(fn(x), dtype=np.float32)
    section = see("Router precision")
    expect(np.all(got.view(np.uint32) & 0xFFFF == 0), "low 16 bits of the results", "all zero (bfloat16 values)",
           "some set", section)
    expect(np.all(np.abs(got - x) <= np.abs(x) * 2.0**-8), "rounding error", "at most half a bfloat16 step "
           "(|x| * 2^-8)", f"up to {np.max(np.abs(got - x) / np.abs(x)):.2e} of |x|", section)
