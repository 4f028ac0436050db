import pytest

from minimoe.seeds import summarize, table, verdict


def test_summary_is_mean_and_half_range():
    s = summarize([1.0, 2.0, 4.0])
    assert s.mean == pytest.approx(7 / 3)
    assert s.spread == pytest.approx(1.5)
    assert summarize([3.0]).spread == 0.0


def test_verdict_applies_the_written_rule():
    # gap 0.5, larger spread 0.1: a clear difference, lower is better
    assert verdict([1.0, 1.2], [1.5, 1.7], "x", "y").startswith("x is better")
    assert verdict([1.0, 1.2], [1.5, 1.7], "x", "y", lower_is_better=False).startswith("y is better")
    # gap 0.05 inside the spread 0.1
    assert verdict([1.0, 1.2], [1.05, 1.25], "x", "y").startswith("no clear difference")


def test_bad_values_are_refused():
    with pytest.raises(ValueError, match="at least one"):
        summarize([])
    with pytest.raises(ValueError, match="non-finite"):
        summarize([1.0, float("nan")])


def test_table_lists_every_seed():
    text = table({"moe": [1.0, 2.0], "dense": [3.0, 3.5]}, "val loss")
    assert "moe" in text and "3.5" in text and "±" in text
