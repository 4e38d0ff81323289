"""Unusual for this card: running statistics of a card's redemption amounts and pace.

Per card, two exponentially weighted means and variances (River's ``EWMean``/``EWVar`` maths,
:mod:`detectors.models.ewstats`) of ``log(amount)`` and of ``log(seconds since the previous
value movement)`` — four 32-bit floats in the card state. Once a card has ``min_history``
redemptions, a redemption far larger than usual, or far sooner after the previous one than usual,
becomes a *model signal* (0 to ``max_signal``) in the risk score. Events that raised an alert are
not learned, so a fraud burst cannot teach the card that bursts are normal.

>>> from detectors.state import CardState
>>> s, m = CardState(), CardStats()
>>> for i in range(6):                     # $20 every four days
...     t = 1e9 + i * 4 * 86400
...     m.learn_one(s, 2000, t); s.t_last = int(t); s.n_redeem += 1
>>> [(name, round(v, 2)) for name, v in m.score_one(s, 18000, s.t_last + 600)]
[('amount_unusual', 0.35), ('pace_unusual', 0.35)]
>>> m.score_one(s, 2500, s.t_last + 3 * 86400)
[]
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from detectors.models.ewstats import ew_update
from detectors.state import CardState


@dataclass(frozen=True, slots=True)
class Params:
    """Settings of :class:`CardStats` (policy section ``models.card_stats``)."""

    enabled: bool = True
    fading_factor: float = 0.3
    min_history: int = 3
    z_threshold: float = 2.5
    z_full: float = 6.0
    max_signal: float = 0.35


class CardStats:
    """Per-card amount and pace statistics; ``score_one`` gives signals, ``learn_one`` updates."""

    name = "card_stats"
    Params = Params

    def __init__(self, params: Params | None = None) -> None:
        self.params = params or Params()

    def score_one(self, s: CardState, amount: int, ts: float) -> list[tuple[str, float]]:
        p = self.params
        if s.n_redeem < p.min_history or amount <= 0:
            return []
        out = []
        z = (math.log(amount) - s.amt_mean) / math.sqrt(s.amt_var + 0.09)
        if z > p.z_threshold:
            out.append(("amount_unusual", self._signal(z)))
        if s.t_last and ts > s.t_last:
            zg = (s.gap_mean - math.log(ts - s.t_last)) / math.sqrt(s.gap_var + 0.25)
            if zg > p.z_threshold:
                out.append(("pace_unusual", self._signal(zg)))
        return out

    def _signal(self, z: float) -> float:
        p = self.params
        return p.max_signal * min(1.0, (z - p.z_threshold) / (p.z_full - p.z_threshold))

    def learn_one(self, s: CardState, amount: int, ts: float) -> None:
        """Update the statistics with a redemption (the engine counts ``s.n_redeem``)."""
        a = self.params.fading_factor
        n = s.n_redeem
        if amount > 0:
            s.amt_mean, s.amt_var = ew_update(s.amt_mean, s.amt_var, n, math.log(amount), a)
        if s.t_last and ts > s.t_last:
            gap = math.log(ts - s.t_last)
            first = s.gap_mean == 0.0 and s.gap_var == 0.0
            s.gap_mean, s.gap_var = ew_update(s.gap_mean, s.gap_var, 0 if first else 1, gap, a)
