"""Rapid drain: a large share of a card's value redeemed soon after activation or load, elsewhere.

The tamper-and-drain pattern: card numbers are copied off the rack, and the card is emptied
minutes after a real customer activates it, usually online or in another city. The rule fires on
a redemption when, since the last activation or load,

* at least ``min_share`` of the value on the card (the balance right after that credit, at least
  ``min_value_minor``) has been redeemed, this redemption included, and
* the redemption happens *elsewhere*, soon: online while the card was sold in a store, or at least
  ``min_distance_km`` from where it was sold, within ``window_minutes``; or in a store at least
  ``far_distance_km`` away within ``far_window_hours`` (a thief waits for a far store to open; an
  honest buyer does not travel a thousand kilometres the same day). Online more than
  ``late_minutes`` after the sale (or far away after ``window_minutes``), only a near-complete
  drain (``late_min_share``) alerts — a recipient spending part of a card online the same
  evening is ordinary — and less is weak evidence (``weak_score``, below any alert level). A card
  sold online and used in a store is not "elsewhere": it has no place of sale to compare with.
  With no coordinates for either place, a different location counts as elsewhere, with a lower
  score.

The score rises with the share taken and falls with the time elapsed. A card spent in the same
store (or the same town) minutes after purchase does not fire: that is what honest buyers do.

>>> from detectors.rules.base import CardContext
>>> from detectors.state import CardState
>>> from detectors.locations import Locations, Location, loc_hash
>>> locs = Locations([Location("SEA", "Seattle", 47.61, -122.33),
...                   Location("MIA", "Miami", 25.76, -80.19)])
>>> s = CardState()
>>> s.t_credit, s.credit_amt, s.credit_base, s.credit_loc = 1000, 20000, 20000, loc_hash("SEA")
>>> s.balance, s.flags = 20000, F_LAST_ACTIVATE
>>> rule = RapidDrain()
>>> hit = rule.check(CardContext.make(s, "MIA", 1000 + 7 * 60, 18000, False, locs), Params())
>>> hit.reason
'redeemed 90% of the balance ($180 of $200) 7 minutes after activation, 4,396 km from where it was sold'
>>> rule.check(CardContext.make(s, "SEA", 1000 + 7 * 60, 18000, False, locs), Params()) is None
True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from detectors.rules.base import CardContext, Hit, clamp, duration, km, money
from detectors.state import F_CREDIT_ONLINE, F_LAST_ACTIVATE


@dataclass(frozen=True, slots=True)
class Params:
    """Thresholds for :class:`RapidDrain` (policy section ``rules.rapid_drain``)."""

    enabled: bool = True
    window_minutes: float = 720.0
    min_share: float = 0.3
    late_minutes: float = 120.0
    late_min_share: float = 0.9
    weak_score: float = 40.0
    min_value_minor: int = 2000
    min_distance_km: float = 80.0
    far_distance_km: float = 300.0
    far_window_hours: float = 36.0
    fast_minutes: float = 60.0
    score: float = 80.0


class RapidDrain:
    """Fires on a redemption that takes most of a fresh card's value somewhere else."""

    name = "rapid_drain"
    Params = Params

    def check(self, ctx: CardContext, p: Params) -> Hit | None:
        s = ctx.state
        if not s.t_credit:
            return None
        elapsed = ctx.ts - s.t_credit
        window = p.window_minutes * 60
        if elapsed < 0 or elapsed > max(window, p.far_window_hours * 3600):
            return None
        base = max(s.credit_base, s.credit_amt)
        if base < p.min_value_minor:
            return None
        taken = s.drained + ctx.amount
        share = taken / base
        if share < p.min_share:
            return None
        credit_online = bool(s.flags & F_CREDIT_ONLINE)
        where = ""
        strength = 1.0
        weak = False
        if ctx.online and not credit_online:
            if elapsed > window:
                return None
            # Hours later online, only a near-full drain is news; less is weak evidence.
            weak = elapsed > p.late_minutes * 60 and share < p.late_min_share
            where = "online"
        else:
            distance = ctx.locations.distance_by_hash(s.credit_loc, ctx.loc_h)
            if distance is not None:
                if distance < p.min_distance_km:
                    return None
                if elapsed > window:
                    if distance < p.far_distance_km:
                        return None
                    # The next day far away: only a near-full drain is news.
                    weak = share < p.late_min_share
                where = f"{km(distance)} from where it was sold"
            elif ctx.loc_h != s.credit_loc and not credit_online and not ctx.online:
                # Places without coordinates (no locations file): another store counts.
                if elapsed > window:
                    return None
                where = "at another location"
                strength = 0.8
            else:
                return None
        what = "activation" if s.flags & F_LAST_ACTIVATE else "a load"
        # Stronger the larger the share, weaker with every doubling of the time after "fast".
        slowness = max(0.0, math.log2(max(elapsed, 1.0) / (p.fast_minutes * 60)))
        score = p.score * strength + 15 * (min(1.0, share) - 0.6) - 3 * slowness
        if weak:
            score = min(score, p.weak_score)
        return Hit(
            rule=self.name,
            score=clamp(score),
            reason=(f"redeemed {min(share, 1.0):.0%} of the balance ({money(taken, ctx.currency)} "
                    f"of {money(base, ctx.currency)}) {duration(elapsed)} after {what}, {where}"),
            amount_at_risk_minor=max(s.balance, ctx.amount),
        )

