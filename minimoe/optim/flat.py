"""Parameters, gradients and optimiser moments as views of a few contiguous arrays.

A model has hundreds of parameters, most of them small (biases, norms). Updating them one by one
costs a handful of NumPy calls each, and the calls, not the arithmetic, take most of the time.
Held as slices of one flat array per quantity, every parameter's update is the same few array
operations over the flat arrays, run in cache-sized blocks on the thread pool (row_blocks.py).
Each parameter's `.data` is then a view into the flat parameter array; code that replaces `.data`
(loading a checkpoint, a bias update, sharding) is noticed before the next step, and the new
array is copied in and replaced by its view again, so the flat array stays the owner of record.
"""
from __future__ import annotations

import numpy as np


class FlatBuffers:
    """One flat array for the parameters, one for their gradients, and one per optimiser moment."""

    def __init__(self, params, moments: tuple[str, ...]):
        self.params = params
        self.sizes = [p.size for p in params]
        self.offsets = np.concatenate([[0], np.cumsum(self.sizes)]).astype(int)
        self.dtype = params[0].dtype
        total = int(self.offsets[-1])
        self.data = np.empty(total, dtype=self.dtype)
        self.grad = np.empty(total, dtype=self.dtype)
        self.moments = {name: np.zeros(total, dtype=self.dtype) for name in moments}
        self._views = [None] * len(params)
        self._grad_views = self._views_of(self.grad)
        self._moment_views = {name: self._views_of(flat) for name, flat in self.moments.items()}
        self.adopt()

    @staticmethod
    def suits(params) -> bool:
        """Flat buffers need every parameter on NumPy with one float dtype."""
        return (len(params) > 1 and all(isinstance(p.data, np.ndarray) for p in params)
                and len({p.dtype for p in params}) == 1 and params[0].dtype.kind == "f")

    def _views_of(self, flat: np.ndarray) -> list[np.ndarray]:
        return [flat[self.offsets[i]:self.offsets[i + 1]].reshape(p.shape) for i, p in enumerate(self.params)]

    def adopt(self) -> None:
        """Every parameter's `.data` a view of the flat array again (copying in whatever replaced it)."""
        views = None
        for i, p in enumerate(self.params):
            if p.data is not self._views[i]:
                views = views or self._views_of(self.data)
                views[i][...] = p.data
                p.data = self._views[i] = views[i]

    def adopt_moments(self, name: str, arrays: list) -> None:
        """`arrays` (one moment per parameter, None where not yet made) made views of the flat
        moment array again, copying in whatever replaced one (zeros for None)."""
        for i, view in enumerate(self._moment_views[name]):
            if arrays[i] is not view:
                view[...] = 0 if arrays[i] is None else arrays[i]
                arrays[i] = view

    def gather_grads(self) -> np.ndarray:
        """The gradients copied into the flat gradient array (they come from autograd one by one)."""
        for view, p in zip(self._grad_views, self.params):
            view[...] = p.grad
        return self.grad
