"""Random inputs for the op tests, kept away from each op's kinks and domain edges."""
import numpy as np

import minimoe as mm

_rng = np.random.default_rng(0)


def normal(*shape):
    return _rng.standard_normal(shape)


def positive(*shape):
    """Inputs for log, sqrt, fractional powers and divisors: well inside the domain."""
    return _rng.uniform(0.5, 2.0, shape)


def away_from_zero(*shape):
    """Inputs for relu: at least 0.1 from its kink."""
    return _rng.choice([-1.0, 1.0], shape) * _rng.uniform(0.1, 1.5, shape)


def ints(values):
    """An integer index array on the current backend (indices live where the data lives)."""
    return mm.backend.asarray(np.asarray(values))


def bools(values):
    return mm.backend.asarray(np.asarray(values, dtype=bool))
