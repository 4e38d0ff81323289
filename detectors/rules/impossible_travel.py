"""Impossible travel: the same card used in two stores too far apart for the time between.

A cloned card is used far away shortly after its owner used it at home. The rule fires on an
in-store redemption when the card's previous in-store event (sale or redemption) was at least
``min_distance_km`` away and reaching here in time would need more than ``max_speed_kmh``.
Online events have no place and are ignored.

>>> from detectors.rules.base import CardContext
>>> from detectors.state import CardState
>>> from detectors.locations import Locations, Location, loc_hash
>>> locs = Locations([Location("NYC", "New York", 40.71, -74.0),
...                   Location("LA", "Los Angeles", 34.05, -118.24)])
>>> s = CardState()
>>> s.t_phys, s.phys_loc, s.balance = 1000, loc_hash("NYC"), 9000
>>> hit = ImpossibleTravel().check(CardContext.make(s, "LA", 1000 + 40 * 60, 6000, False, locs),
...                                Params())
>>> hit.reason
'used 3,936 km from its previous store visit 40 minutes earlier (5,904 km/h)'
>>> ImpossibleTravel().check(CardContext.make(s, "LA", 1000 + 2 * 86400, 6000, False, locs),
...                          Params()) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass

from detectors.rules.base import CardContext, Hit, clamp, duration, km


@dataclass(frozen=True, slots=True)
class Params:
    """Thresholds for :class:`ImpossibleTravel` (policy section ``rules.impossible_travel``)."""

    enabled: bool = True
    min_distance_km: float = 300.0
    max_speed_kmh: float = 700.0
    score: float = 82.0


class ImpossibleTravel:
    """Fires on an in-store redemption that could not have been reached in time."""

    name = "impossible_travel"
    Params = Params

    def check(self, ctx: CardContext, p: Params) -> Hit | None:
        s = ctx.state
        if ctx.online or not s.t_phys or s.phys_loc == ctx.loc_h:
            return None
        distance = ctx.locations.distance_by_hash(s.phys_loc, ctx.loc_h)
        if distance is None or distance < p.min_distance_km:
            return None
        elapsed = max(60.0, ctx.ts - s.t_phys)
        speed = distance / (elapsed / 3600.0)
        if speed < p.max_speed_kmh:
            return None
        return Hit(
            rule=self.name,
            score=clamp(p.score + 10 * min(1.0, speed / (4 * p.max_speed_kmh))),
            reason=(f"used {km(distance)} from its previous store visit {duration(elapsed)} "
                    f"earlier ({speed:,.0f} km/h)"),
            amount_at_risk_minor=max(s.balance, ctx.amount),
        )
