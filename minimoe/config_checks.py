"""Field checks shared by the frozen configs (`ModelConfig`, `MoEConfig`, `TrainConfig`) and the
layers' sizes.

A config is checked when it is made, wherever it comes from (Python, the command line, a JSON file
or a checkpoint), so a wrong value fails with its field's name before any weight is built or any
file is touched. NumPy scalars are accepted and stored as Python numbers, so every config can be
written as JSON.
"""
from __future__ import annotations

import math
import numbers


def whole(value, what: str, at_least: int = 1, at_most: int | None = None) -> int:
    """`value` as an int, if it is one in [at_least, at_most] (a bool or a float like 2.0 is refused);
    else a ValueError that names `what`."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < at_least \
            or (at_most is not None and value > at_most):
        expected = f"between {at_least} and {at_most}" if at_most is not None else f"of at least {at_least}"
        raise ValueError(f"{what} must be a whole number {expected}, got {value!r}")
    return int(value)


def whole_number(config, name: str, at_least: int = 1, at_most: int | None = None) -> None:
    """`config.name` is an int in [at_least, at_most]."""
    value = whole(getattr(config, name), f"{type(config).__name__}.{name}", at_least, at_most)
    object.__setattr__(config, name, value)


def real_number(config, name: str, low: float | None = None, high: float | None = None,
                low_open: bool = False, high_open: bool = False) -> None:
    """`config.name` is a finite number inside the interval (open at an end where `*_open`)."""
    value = getattr(config, name)
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and (low is None or (value > low if low_open else value >= low))
    ok = ok and (high is None or (value < high if high_open else value <= high))
    if not ok:
        interval = (("(" if low_open else "[") + ("-inf" if low is None else f"{low:g}") + ", "
                    + ("inf" if high is None else f"{high:g}") + (")" if high_open or high is None else "]"))
        raise ValueError(f"{type(config).__name__}.{name} must be a finite number in {interval}, got {value!r}")
    object.__setattr__(config, name, float(value))


def flag(config, name: str) -> None:
    """`config.name` is True or False (not 0, 1 or the string "false")."""
    value = getattr(config, name)
    if not isinstance(value, bool):
        raise ValueError(f"{type(config).__name__}.{name} must be True or False, got {value!r}")
