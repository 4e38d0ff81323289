"""Per-location models of card sales: a normal rate of high-value sales, and Half-Space Trees.

Kept in the location's entity state (``loc:<id>``):

* two decayed-rate baselines (:class:`~detectors.models.rate.DecayedRate`'s maths on floats)
  of high-value sales (half-lives of days and of hours), giving the number of such sales to
  *expect* in the bulk-purchase window — the short one follows a holiday rush within hours, the
  long one remembers a normal week. High-value sales enter them only when they leave the window,
  so the baseline is what came *before* the window; plus the share of sales that are high-value;
* Half-Space Trees (:class:`~detectors.models.compact_hst.CompactHST`, River's algorithm) over
  scaled features of each *high-value* sale — amount, local hour, recent pace of sales against
  the baseline, high-value sales in the window — with a running upper-quantile threshold of its
  own scores (a one-float stochastic quantile estimate). A sale scoring above the location's
  threshold adds a model signal to the risk score. Only high-value sales go through the trees:
  they are the ones a bulk fraud is made of, and skipping the everyday ones keeps the cost down.

Sales that raised an alert are not learned (River's ``protect_anomaly_detector`` idea): a bulk
batch must not teach the store that batches are normal.

>>> from detectors.entity import EntityState
>>> from detectors.locations import Locations
>>> from detectors.testing import ev
>>> m, es = LocationModel(Params(window_size=20)), EntityState()
>>> for i in range(200):                       # a $100 card every 20 minutes, all week
...     e = ev("activate", 10000, i * 20, loc="S1", card=f"c{i}")
...     m.learn_one(es, e, e.ts, Locations())
>>> e = ev("activate", 50000, 200 * 20, loc="S1", card="odd")
>>> [(name, round(v, 2)) for name, v in m.score_one(es, e, e.ts, Locations())]
[('location_anomaly', 0.03)]
>>> m.expected_big(es, e.ts, 3600)   # high-value sales expected in an hour: the floor here
0.5
>>> m.expected_big(EntityState(), e.ts, 3600) is None   # a new location has no baseline
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from detectors.entity import EntityState
from detectors.events import Event
from detectors.locations import Locations
from detectors.models.compact_hst import CompactHST, HSTState
from detectors.models.rate import round4

FEATURES = ("amount", "hour", "pace", "big_in_window")
_LN2 = math.log(2)


@dataclass(frozen=True, slots=True)
class Params:
    """Settings of :class:`LocationModel` (policy section ``models.location_model``)."""

    enabled: bool = True
    long_half_life_hours: float = 72.0
    short_half_life_hours: float = 3.0
    min_big_per_hour: float = 0.5    # a floor on the expected rate of high-value sales
    min_history_hours: float = 24.0  # before this, a location has no baseline to compare with
    big_amount_minor: int = 10000
    hst: bool = True
    n_trees: int = 6
    height: int = 4
    window_size: int = 100
    seed: int = 42
    quantile: float = 0.98
    quantile_rate: float = 0.02
    max_signal: float = 0.2


# Entity stats layout: three floats (count, t_ref, t_first) per rate, then the score quantile.
# Then a ring of sales counts per 10-minute bucket (the last two hours) and its newest bucket.
_BIG_LONG, _BIG_SHORT, _ALL_LONG, _ALL_SHORT, _Q, _LAST_BUCKET, _BUCKETS = 0, 3, 6, 9, 12, 13, 14
_BUCKET_S, _N_BUCKETS = 600, 12
_N_STATS = _BUCKETS + _N_BUCKETS


def _rate(st: list[float], at: int, half_life_h: float, ts: float, prior: float) -> float:
    """:meth:`DecayedRate.rate` on the three floats at ``st[at:at + 3]`` (no object)."""
    count, t_ref, t_first = st[at], st[at + 1], st[at + 2]
    if not t_first:
        return prior
    if ts > t_ref:
        count *= math.exp(-_LN2 * (ts - t_ref) / (half_life_h * 3600))
    tau_h = half_life_h / _LN2
    age_h = (ts - t_first) / 3600.0
    age_h = age_h if age_h > 1.0 else 1.0          # max(1.0, age_h), without the call
    return count / (tau_h * -math.expm1(-age_h / tau_h))


def _count(st: list[float], at: int, half_life_h: float, ts: float) -> None:
    """:meth:`DecayedRate.learn_one` on the three floats at ``st[at:at + 3]``; an event older
    than the last one counts with the weight it has decayed to since."""
    count, t_ref = st[at], st[at + 1]
    if t_ref and ts > t_ref:
        count *= math.exp(-_LN2 * (ts - t_ref) / (half_life_h * 3600))
        weight = 1.0
    elif t_ref:
        weight = math.exp(-_LN2 * (t_ref - ts) / (half_life_h * 3600))
    else:
        weight = 1.0
    st[at] = round4(count + weight)
    st[at + 1] = t_ref if t_ref > ts else ts       # max(ts, t_ref), without the call
    if not st[at + 2] or ts < st[at + 2]:
        st[at + 2] = ts


class Assessment:
    """One sale as the location model saw it: its rates, features, trees and anomaly score.

    :meth:`LocationModel.assess` has already learned the sale into the trees provisionally;
    :meth:`LocationModel.commit` keeps it (or takes it back when the sale was flagged).
    """

    __slots__ = ("all_long", "all_short", "big_long", "big_short", "hst", "score", "x")

    def __init__(self) -> None:
        self.x: list[float] | None = None
        self.hst: HSTState | None = None
        self.score = 0.0


class LocationModel:
    """Rate baselines and Half-Space Trees of one location's sales (see the module docstring)."""

    name = "location_model"
    Params = Params

    def __init__(self, params: Params | None = None) -> None:
        self.params = p = params or Params()
        self.hst = CompactHST(list(FEATURES), n_trees=p.n_trees, height=p.height,
                              window_size=p.window_size, seed=p.seed)

    @staticmethod
    def _stats(es: EntityState) -> list[float]:
        if len(es.stats) != _N_STATS:
            es.stats = [0.0] * _N_STATS
        return es.stats

    def _rates(self, es: EntityState, ts: float) -> Assessment:
        p = self.params
        st = self._stats(es)
        a = Assessment()
        a.big_long = _rate(st, _BIG_LONG, p.long_half_life_hours, ts, 0.0)
        a.big_short = _rate(st, _BIG_SHORT, p.short_half_life_hours, ts, 0.0)
        a.all_long = _rate(st, _ALL_LONG, p.long_half_life_hours, ts, 0.0)
        a.all_short = _rate(st, _ALL_SHORT, p.short_half_life_hours, ts, 0.0)
        return a

    def expected_big(self, es: EntityState, ts: float, window_s: float,
                     a: Assessment | None = None) -> float | None:
        """High-value sales a normal window of ``window_s`` seconds holds here; ``None`` while
        the location is younger than ``min_history_hours`` (no baseline yet)."""
        p = self.params
        st = self._stats(es)
        if not st[_ALL_LONG + 2] or ts - st[_ALL_LONG + 2] < p.min_history_hours * 3600:
            return None
        a = a or self._rates(es, ts)
        return max(a.big_long, a.big_short, p.min_big_per_hour) * window_s / 3600.0

    def usual_big_share(self, es: EntityState, ts: float, a: Assessment | None = None) -> float:
        """The share of this location's sales that are high-value, normally (0.05-0.95)."""
        a = a or self._rates(es, ts)
        share = a.big_long / a.all_long if a.all_long > 0 else 0.25
        return min(0.95, max(0.05, share))

    @staticmethod
    def _count_sale(st: list[float], ts: float) -> None:
        b = int(ts // _BUCKET_S)
        last = int(st[_LAST_BUCKET])
        if b > last:
            for k in range(max(last + 1, b - _N_BUCKETS + 1), b + 1):
                st[_BUCKETS + k % _N_BUCKETS] = 0
            st[_LAST_BUCKET] = last = b
        if b > last - _N_BUCKETS:
            st[_BUCKETS + b % _N_BUCKETS] += 1

    def sales_in_window(self, es: EntityState, ts: float, window_s: float) -> int:
        """Sales of every size here in the last ``window_s`` seconds (10-minute resolution)."""
        st = self._stats(es)
        last = int(st[_LAST_BUCKET])
        first = max(int((ts - window_s) // _BUCKET_S), last - _N_BUCKETS + 1)
        return int(sum([st[_BUCKETS + k % _N_BUCKETS] for k in range(first, last + 1)]))

    def features(self, es: EntityState, event: Event, ts: float, locations: Locations,
                 a: Assessment | None = None) -> list[float]:
        """Amount, local hour, recent pace of sales and high-value sales in the window, in [0, 1]."""
        p = self.params
        a = a or self._rates(es, ts)
        amount = min(1.0, math.log10(max(1, event.amount_minor)) / 6.0)
        hour = locations.local_hour(event.location_id, ts)
        usual = a.all_long if a.all_long > 0 else 1.0
        recent = a.all_short
        pace = recent / (recent + usual)
        big = 0
        big_amount = p.big_amount_minor
        for r in es.sales:
            if r[2] >= big_amount:
                big += 1
        return [amount, (hour if hour is not None else 12.0) / 24.0, pace, big / (big + 4.0)]

    def assess(self, es: EntityState, event: Event, ts: float,
               locations: Locations) -> Assessment:
        """Rates, features and the trees' anomaly score of a sale (scored, then provisionally
        learned, in one walk down the trees)."""
        a = self._rates(es, ts)
        if self.params.hst:
            a.x = self.features(es, event, ts, locations, a)
            a.hst = self.hst.decode(es.model) if es.model else self.hst.new_state()
            a.score = self.hst.score_learn_one(a.hst, a.x)
        return a

    def signals(self, es: EntityState, a: Assessment) -> list[tuple[str, float]]:
        """``[("location_anomaly", signal)]`` when the sale is above the location's quantile."""
        q = self._stats(es)[_Q]
        if a.score <= q or q <= 0:
            return []
        p = self.params
        return [("location_anomaly", p.max_signal * min(1.0, (a.score - q) / max(1e-6, 1 - q)))]

    def score_one(self, es: EntityState, event: Event, ts: float,
                  locations: Locations) -> list[tuple[str, float]]:
        """The signals of a sale, without learning it."""
        a = self.assess(es, event, ts, locations)
        if a.hst is not None:
            self.hst.unlearn_one(a.hst, a.x)
        return self.signals(es, a)

    def commit(self, es: EntityState, a: Assessment, flagged: bool) -> None:
        """Keep an assessed (high-value) sale in the location's trees — or, when it raised an
        alert, take it back out (a flagged sale must not teach the store it is normal)."""
        p = self.params
        if a.hst is not None:
            if flagged:
                self.hst.unlearn_one(a.hst, a.x)
            elif not a.hst.first_window or a.score:
                # Stochastic quantile: up by q * rate above it, down by (1 - q) * rate below.
                st = self._stats(es)
                q = st[_Q]
                st[_Q] = q + p.quantile_rate * (p.quantile if a.score > q else p.quantile - 1.0)
            es.model = self.hst.encode(a.hst)

    def count_sale(self, es: EntityState, ts: float) -> None:
        """Count a sale of any size in the window's 10-minute buckets (before the rules run)."""
        self._count_sale(self._stats(es), ts)

    def learn_sale(self, es: EntityState, ts: float) -> None:
        """Take a (not flagged) sale of any size into the location's rates of sales."""
        p = self.params
        st = self._stats(es)
        _count(st, _ALL_LONG, p.long_half_life_hours, ts)
        _count(st, _ALL_SHORT, p.short_half_life_hours, ts)
        for at in (_BIG_LONG, _BIG_SHORT):       # the high-value baselines start with the store
            if not st[at + 2]:
                st[at + 1] = st[at + 2] = ts

    def learn_one(self, es: EntityState, event: Event, ts: float, locations: Locations) -> None:
        """Take a (not flagged) sale into the location's baselines, and into its trees when it is
        a high-value one."""
        self.count_sale(es, ts)
        if event.amount_minor >= self.params.big_amount_minor:
            self.commit(es, self.assess(es, event, ts, locations), False)
        self.learn_sale(es, ts)

    def learn_window_exits(self, es: EntityState, rows: list[list]) -> None:
        """Count high-value sales that left the bulk window into the baselines — unless they
        were part of a flagged batch (``row[4]``). Counting them only once they leave keeps the
        baseline to what came *before* the window, so a batch cannot raise its own bar."""
        p = self.params
        st = self._stats(es)
        for row in rows:
            if (len(row) > 4 and row[4]) or row[2] < p.big_amount_minor:
                continue
            _count(st, _BIG_LONG, p.long_half_life_hours, row[0])
            _count(st, _BIG_SHORT, p.short_half_life_hours, row[0])
