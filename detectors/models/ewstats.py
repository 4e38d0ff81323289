"""Exponentially weighted mean and variance, in a form that fits in four bytes a number.

The maths are River's ``stats.EWMean`` and ``stats.EWVar`` (Finch, 2009): for a fading factor
``a``, ``diff = x - mean; mean += a * diff; var = (1 - a) * (var + a * diff ** 2)``, the first
value setting the mean. In river 0.26 both classes are thin wrappers over Rust objects whose state
cannot be read back or set, so they cannot live inside a 300-byte card state; this module keeps
the two floats itself and is tested against River (``tests/test_detectors_models.py``).

>>> from river import stats
>>> m, v = stats.EWMean(0.5), stats.EWVar(0.5)
>>> s = EWStats(0.5)
>>> for x in [1, 3, 5, 4, 6, 8, 7, 9, 11]:
...     m.update(x); v.update(x); s.learn_one(x)
>>> (s.mean, s.var) == (m.get(), v.get())
True
>>> round(s.score_one(30.0), 1)            # how many deviations above the mean
10.8
"""

from __future__ import annotations

import math


def ew_update(mean: float, var: float, n: int, x: float, a: float) -> tuple[float, float]:
    """One step of River's EWMean/EWVar; ``n`` is how many values came before ``x``."""
    if n == 0:
        return x, 0.0
    diff = x - mean
    incr = a * diff
    return mean + incr, (1.0 - a) * (var + diff * incr)


class EWStats:
    """Exponentially weighted mean and variance of a stream; ``score_one`` is a z-score."""

    __slots__ = ("fading_factor", "mean", "n", "var")

    def __init__(self, fading_factor: float = 0.3) -> None:
        if not 0 < fading_factor <= 1:
            raise ValueError("fading_factor must be in (0, 1]")
        self.fading_factor = fading_factor
        self.mean = 0.0
        self.var = 0.0
        self.n = 0

    def learn_one(self, x: float) -> None:
        self.mean, self.var = ew_update(self.mean, self.var, self.n, x, self.fading_factor)
        self.n += 1

    def score_one(self, x: float, floor: float = 0.25) -> float:
        """How many (floored) standard deviations ``x`` is above the mean; 0 before 2 values."""
        if self.n < 2:
            return 0.0
        return (x - self.mean) / math.sqrt(self.var + floor * floor)
