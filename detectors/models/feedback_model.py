"""Learning from analysts: what a confirmed fraud or a false positive changes for later events.

Three learned pieces, all global (every worker must see every feedback record):

* **evidence weights** — per rule or model signal, and per (rule, location): a Beta posterior of
  the evidence's precision among labelled alerts. A false positive lowers the weight of what
  caused it (everywhere a little, at that location more); a confirmed fraud raises it.
* **place risk** — per location and per payment instrument, decayed counts of confirmed fraud:
  fraud at a place raises the risk of the next events there (a model signal); an instrument that
  bought a fraudulent card makes its next purchases suspicious (the ``known_fraud_instrument``
  rule, :mod:`detectors.rules.known_instrument`).
* **a supervised online model** — River's ``linear_model.LogisticRegression`` (with
  ``preprocessing.StandardScaler``-free, already-bounded features) over the evidence an event
  carried when it was scored. It learns which combinations of evidence analysts confirm, and
  contributes a signal once it has seen enough of both classes.

The evidence of scored events is remembered (bounded, oldest dropped) by event id until the
feedback arrives; feedback about an event nothing was remembered for (it carried no evidence)
teaches only the place risk.

>>> m = FeedbackModel()
>>> m.remember("e1", {"rapid_drain": 0.9}, ("rapid_drain",), "L1", None)
>>> m.weight("rapid_drain", "L1")
1.0
>>> m.learn(Feedback(card_id="c", is_fraud=False, event_id="e1"))
>>> m.weight("rapid_drain", "L1") < m.weight("rapid_drain", "L2") < 1.0
True
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass

from river import linear_model, optim

from detectors.feedback import Feedback

_LN2 = math.log(2)
_NO_WEIGHTS: dict[str, float] = {}


@dataclass(frozen=True, slots=True)
class Params:
    """Settings of :class:`FeedbackModel` (policy section ``models.feedback``)."""

    enabled: bool = True
    prior_hits: float = 8.0          # Beta prior of an evidence's precision: 8 right ...
    prior_misses: float = 2.0        # ... and 2 wrong (precision 0.8 = weight 1.0)
    min_weight: float = 0.3
    max_weight: float = 1.15
    place_half_life_days: float = 30.0
    location_signal: float = 0.15    # the most a location's fraud history adds (noisy-OR)
    location_scale: float = 20.0     # decayed confirmed frauds for ~63% of that
    learned_signal: float = 0.3      # the most the supervised model adds
    learned_min_labels: int = 20     # of each class before the supervised model speaks
    learning_rate: float = 0.05
    memory: int = 200_000            # scored events whose evidence is kept for feedback


class FeedbackModel:
    """Evidence weights, place risk and a supervised River model, learned from feedback."""

    Params = Params

    def __init__(self, params: Params | None = None) -> None:
        self.params = p = params or Params()
        self.hits: dict[str, float] = {}
        self.misses: dict[str, float] = {}
        self.place: dict[str, tuple[float, float]] = {}      # key -> (decayed count, t_ref)
        self.model = linear_model.LogisticRegression(optimizer=optim.SGD(p.learning_rate))
        self.labels = [0, 0]
        self.evidence: OrderedDict[str, tuple[dict[str, float], tuple[str, ...], str,
                                              str | None]] = OrderedDict()
        self._weights: dict[str, float] = {}
        self._cache: dict[tuple, dict[str, float]] = {}
        self.version = 0

    # -- scoring side ---------------------------------------------------------------------------

    def weight(self, name: str, location_id: str | None = None) -> float:
        """How much an evidence counts (1.0 without feedback)."""
        w = self._weights.get(name, 1.0)
        if location_id is not None:
            w *= self._weights.get(f"{name}@{location_id}", 1.0)
        p = self.params
        return min(p.max_weight, max(p.min_weight, w))

    def weights_at(self, names, location_id: str) -> dict[str, float]:
        """The weights of ``names`` at a location (cached until feedback changes them)."""
        if not self._weights:
            return _NO_WEIGHTS
        key = (tuple(names), location_id)
        w = self._cache.get(key)
        if w is None:
            w = {n: self.weight(n, location_id) for n in key[0]}
            if len(self._cache) > 50_000:
                self._cache.clear()
            self._cache[key] = w
        return w

    def location_signal(self, location_id: str, ts: float) -> list[tuple[str, float]]:
        """``[("location_risk", signal)]`` after confirmed fraud at this location, else ``[]``."""
        if not self.place:
            return []
        c = self._place_count(f"loc:{location_id}", ts)
        if c <= 0.5:
            return []
        p = self.params
        return [("location_risk", p.location_signal * (1 - math.exp(-c / p.location_scale)))]

    def instrument_confirmed(self, payment_ref: str | None, ts: float) -> float:
        """Decayed count of confirmed fraudulent cards this instrument paid for."""
        if not payment_ref or not self.place:
            return 0.0
        return self._place_count(f"pi:{payment_ref}", ts)

    def learned(self, features: dict[str, float]) -> float:
        """The supervised model's fraud probability, scaled to a signal (0 until trained)."""
        p = self.params
        if min(self.labels) < p.learned_min_labels or not features:
            return 0.0
        prob = self.model.predict_proba_one(features).get(True, 0.0)
        return p.learned_signal * max(0.0, (prob - 0.5) * 2)

    def remember(self, event_id: str, features: dict[str, float], evidence: tuple[str, ...],
                 location_id: str, payment_ref: str | None) -> None:
        """Keep what an event was scored on, until its feedback arrives."""
        self.evidence[event_id] = (features, evidence, location_id, payment_ref)
        if len(self.evidence) > self.params.memory:
            self.evidence.popitem(last=False)

    # -- learning side --------------------------------------------------------------------------

    def learn(self, fb: Feedback, ts: float | None = None) -> None:
        """Take one feedback record into account."""
        kept = self.evidence.pop(fb.event_id, None) if fb.event_id else None
        evidence = set(fb.rules)
        location_id = fb.location_id
        payment_ref = fb.payment_ref
        features: dict[str, float] = {}
        if kept is not None:
            features, ev, loc, pi = kept
            evidence.update(ev)
            location_id = location_id or loc
            payment_ref = payment_ref or pi
        if fb.is_fraud and ts is not None:
            if location_id:
                self._place_add(f"loc:{location_id}", ts)
            if payment_ref:
                self._place_add(f"pi:{payment_ref}", ts)
        if evidence:
            table = self.hits if fb.is_fraud else self.misses
            for name in evidence:
                for key in (name, f"{name}@{location_id}" if location_id else None):
                    if key is not None:
                        table[key] = table.get(key, 0.0) + 1.0
                        self._weights[key] = self._precision_weight(key)
            self._cache.clear()
        if features:
            self.model.learn_one(features, fb.is_fraud)
            self.labels[1 if fb.is_fraud else 0] += 1
        self.version += 1

    def _precision_weight(self, key: str) -> float:
        p = self.params
        a, b = p.prior_hits, p.prior_misses
        h, m = self.hits.get(key, 0.0), self.misses.get(key, 0.0)
        return ((a + h) / (a + b + h + m)) / (a / (a + b))

    def _place_count(self, key: str, ts: float) -> float:
        entry = self.place.get(key)
        if entry is None:
            return 0.0
        c, t_ref = entry
        if ts <= t_ref:
            return c
        return c * math.exp(-_LN2 * (ts - t_ref) / (self.params.place_half_life_days * 86400))

    def _place_add(self, key: str, ts: float) -> None:
        c = self._place_count(key, ts)
        t_ref = max(ts, self.place.get(key, (0.0, 0.0))[1])
        self.place[key] = (c + 1.0, t_ref)
