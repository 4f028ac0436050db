"""Results over several seeds: mean, spread, and one written rule for "no clear difference".

A verdict that one method beats another must survive the seed: the same experiment with another
random start can move a validation loss by more than the gap between two methods. Every lesson that
compares methods runs each on several seeds and reports them through this module, so the rule is
the same everywhere:

    The spread of a method is half the range of its values over seeds (max - min) / 2.
    Two methods differ clearly only when the gap between their means is larger than the larger of
    their two spreads; otherwise the lesson says "no clear difference".

With three seeds half the range is a rough but honest gauge (a standard deviation from three
values is no better), and the rule is deliberately strict: a clear difference under it is one no
seed of either method contradicts by much.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SeedSummary:
    """The values of one measure over seeds."""

    values: tuple

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def spread(self) -> float:
        """Half the range over seeds (0 for one seed)."""
        return float((max(self.values) - min(self.values)) / 2)

    def __str__(self) -> str:
        return f"{self.mean:.4g} ± {self.spread:.2g} (n={len(self.values)})"


def summarize(values) -> SeedSummary:
    """Mean and spread of one measure's values over seeds; refuses an empty or non-finite list."""
    values = tuple(float(v) for v in values)
    if not values:
        raise ValueError("summarize needs at least one value (one per seed), got none")
    if not all(np.isfinite(values)):
        raise ValueError(f"summarize got a non-finite value among {values}: a run diverged; "
                         "report it rather than average it")
    return SeedSummary(values)


def verdict(a, b, name_a: str = "a", name_b: str = "b", lower_is_better: bool = True) -> str:
    """One sentence comparing two methods' values over seeds by the rule of this module.

    `a` and `b` are lists of values (one per seed) or `SeedSummary`s.
    """
    a = a if isinstance(a, SeedSummary) else summarize(a)
    b = b if isinstance(b, SeedSummary) else summarize(b)
    gap = a.mean - b.mean
    margin = max(a.spread, b.spread)
    if abs(gap) <= margin:
        return (f"no clear difference: {name_a} {a} vs {name_b} {b}; "
                f"the gap {abs(gap):.2g} is within the larger spread {margin:.2g}")
    a_better = (gap < 0) == lower_is_better
    better, worse = (name_a, name_b) if a_better else (name_b, name_a)
    return (f"{better} is better: {name_a} {a} vs {name_b} {b}; "
            f"the gap {abs(gap):.2g} exceeds the larger spread {margin:.2g}")


def table(results: dict, measure: str = "value") -> str:
    """A plain-text table of {method: values over seeds}: mean ± spread and every seed's value."""
    rows = [f"{'method':<24} {measure + ' mean ± spread':>26}   per seed"]
    for name, values in results.items():
        s = summarize(values)
        per_seed = "  ".join(f"{v:.4g}" for v in s.values)
        rows.append(f"{name:<24} {str(s):>26}   {per_seed}")
    return "\n".join(rows)
