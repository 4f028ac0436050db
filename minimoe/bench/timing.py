"""Median-of-repetitions timing, the two sides of a comparison interleaved.

The machine's speed drifts while a benchmark runs (other work, clock changes), so minimoe and its
peer are timed in alternating rounds of a few repetitions each: a drift then slows both alike and
the ratio of the medians stays fair. Rounds rather than single repetitions, because each side's
thread pools keep spinning for a moment after its last call and would slow the other's first one.
"""
import statistics
import time


def _once(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def paired_median_ms(ours, theirs, reps: int, warmup: int = 2, round_size: int = 3):
    """(median ms of `ours`, median ms of `theirs` or None) over `reps` repetitions each, timed in
    alternating rounds of `round_size`; the first `warmup` calls of each round are not counted."""
    ours_times, theirs_times = [], []
    while len(ours_times) < reps:
        for fn, times in ((ours, ours_times), (theirs, theirs_times)):
            if fn is None:
                continue
            for _ in range(warmup):
                fn()
            times.extend(_once(fn) for _ in range(round_size))
    median = lambda times: 1e3 * statistics.median(times) if times else None  # noqa: E731
    return median(ours_times), median(theirs_times)
