"""How often something normally happens at a place: an exponentially decayed event rate.

``DecayedRate`` counts events with exponential forgetting (half-life ``half_life_hours``): the
decayed count ``c`` of a steady stream of ``r`` events per hour settles at ``r * tau`` with
``tau = half_life / ln 2`` (and at ``r * tau * (1 - exp(-age / tau))`` while the stream is
younger), so the rate is the count over that. Its state is three floats, so it lives inside a
Faust table value.
:func:`poisson_tail` then says how surprising a count in a window is against that rate.

>>> r = DecayedRate(half_life_hours=24)
>>> for i in range(48 * 4):            # four events an hour for two days
...     r.learn_one(1e9 + i * 900.0)
>>> round(r.rate(1e9 + 48 * 3600.0), 1)      # per hour
4.0
>>> poisson_tail(12, 2.0) < 1e-5 < poisson_tail(6, 2.0)
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

_LN2 = math.log(2)


@dataclass(frozen=True, slots=True)
class Params:
    """Per-location rate baselines (policy section ``models.location_rate``)."""

    long_half_life_hours: float = 72.0
    short_half_life_hours: float = 4.0
    prior_per_hour: float = 0.5


class DecayedRate:
    """An event rate per hour with exponential forgetting; state ``(count, t_ref, t_first)``."""

    __slots__ = ("half_life_hours", "count", "t_ref", "t_first")

    def __init__(self, half_life_hours: float = 72.0, state: list[float] | None = None) -> None:
        self.half_life_hours = half_life_hours
        self.count, self.t_ref, self.t_first = state if state else (0.0, 0.0, 0.0)

    def state(self) -> list[float]:
        return [round4(self.count), self.t_ref, self.t_first]

    def _decayed(self, ts: float) -> float:
        if not self.t_ref or ts <= self.t_ref:
            return self.count
        return self.count * math.exp(-_LN2 * (ts - self.t_ref) / (self.half_life_hours * 3600))

    def learn_one(self, ts: float, weight: float = 1.0) -> None:
        c = self._decayed(ts)
        self.count = c + weight
        self.t_ref = max(ts, self.t_ref)
        if not self.t_first:
            self.t_first = ts

    def rate(self, ts: float, prior: float = 0.0) -> float:
        """Events per hour at ``ts``; ``prior`` until there is history."""
        if not self.t_first:
            return prior
        tau_h = self.half_life_hours / _LN2
        age_h = max(1.0, (ts - self.t_first) / 3600.0)
        # A steady stream of r per hour has decayed count r * tau * (1 - exp(-age / tau)).
        return self._decayed(ts) / (tau_h * -math.expm1(-age_h / tau_h))


def round4(x: float) -> float:
    """``round(x, 4)``, bit for bit, several times faster for the counts kept in state.

    ``round`` converts to a decimal string and back. Here, for ``0 < x < 1e5``, ``x * 10**4`` is
    rounded to an integer ``n`` directly: its floating-point error is below ``6e-8`` (half a unit
    in the last place under ``2**30``), so when it lies more than ``1e-6`` from a tie (``k + 0.5``)
    the exact value rounds to the same ``n``, and ``n / 10**4`` is the double nearest
    ``n * 10**-4``, as the string round trip gives. Near a tie, and for any other ``x``, ``round``
    itself decides.

    >>> [round4(x) == round(x, 4) for x in (0.03125, 2.00005, 1.23456789, 0.0, -1.5, 1e300)]
    [True, True, True, True, True, True]
    """
    if 0.0 < x < 1e5:
        y = x * 10000.0
        n = round(y)
        if abs(y - n) < 0.499999:
            return n / 10000.0
    return round(x, 4)


def poisson_tail(n: int, lam: float) -> float:
    """P(N >= n) for N ~ Poisson(lam)."""
    if n <= 0:
        return 1.0
    if lam <= 0:
        return 0.0
    term = math.exp(-lam)
    cdf = term
    for k in range(1, n):
        term *= lam / k
        cdf += term
    return max(0.0, 1.0 - cdf)


def binomial_tail(k: int, n: int, p: float) -> float:
    """P(K >= k) for K ~ Binomial(n, p).

    >>> round(binomial_tail(9, 30, 0.27), 2), binomial_tail(10, 12, 0.27) < 1e-4
    (0.42, True)
    """
    if k <= 0:
        return 1.0
    if k > n or p <= 0:
        return 0.0
    if p >= 1:
        return 1.0
    q = 1.0 - p
    term = q ** n
    cdf = term
    for i in range(1, k):
        term *= (n - i + 1) / i * p / q
        cdf += term
    return max(0.0, 1.0 - cdf)
