"""Slow drain: many small redemptions in a short time, each under any per-transaction limit.

The rule keeps, per card, an exponentially decayed count and sum of redemptions of at most
``max_amount_minor`` (half-life ``half_life_hours``), and fires when the count reaches
``min_count`` and their value ``min_total_minor``; one redemption short of that it reports
early evidence at ``early_score``, below any alert level. Everyday use — a purchase every few
days — decays away between visits and never adds up.

>>> from detectors.rules.base import CardContext
>>> from detectors.state import CardState
>>> from detectors.locations import Locations
>>> s = CardState()
>>> s.balance, s.sd_count, s.sd_sum, s.t_sd = 12000, 3.0, 6000.0, 1000
>>> hit = SlowDrain().check(CardContext.make(s, "WEB", 1000 + 1800, 2500, True, Locations()),
...                         Params())
>>> hit.reason
'4 small redemptions ($84.13 in total, none over $50) within hours'
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from detectors.rules.base import CardContext, Hit, clamp, money


@dataclass(frozen=True, slots=True)
class Params:
    """Thresholds for :class:`SlowDrain` (policy section ``rules.slow_drain``)."""

    enabled: bool = True
    max_amount_minor: int = 5000
    half_life_hours: float = 24.0
    min_count: float = 2.7
    min_total_minor: int = 4000
    score: float = 70.0
    early_score: float = 35.0


def decayed(count: float, total: float, t_ref: float, ts: float,
            half_life_hours: float) -> tuple[float, float]:
    """The decayed count and sum at ``ts`` (before adding the new redemption)."""
    if not t_ref or ts <= t_ref:
        return count, total
    f = math.exp(-math.log(2) * (ts - t_ref) / (half_life_hours * 3600))
    return count * f, total * f


class SlowDrain:
    """Fires when small redemptions pile up faster than everyday use."""

    name = "slow_drain"
    Params = Params

    def check(self, ctx: CardContext, p: Params) -> Hit | None:
        if ctx.amount > p.max_amount_minor:
            return None
        s = ctx.state
        count, total = decayed(s.sd_count, s.sd_sum, s.t_sd, ctx.ts, p.half_life_hours)
        count += 1
        total += ctx.amount
        if count < p.min_count - 1 or (count < p.min_count and p.early_score <= 0):
            return None
        if count < p.min_count or total < p.min_total_minor:
            # Early evidence, below any alert level: a second small redemption within hours.
            return Hit(
                rule=self.name, score=p.early_score,
                reason=(f"{round(count)} small redemptions "
                        f"({money(int(total), ctx.currency)} in total) within hours"),
                amount_at_risk_minor=max(s.balance, ctx.amount))
        n = round(count)
        return Hit(
            rule=self.name,
            score=clamp(p.score + 5 * (count - p.min_count) + (5 if ctx.online else 0)),
            reason=(f"{n} small redemptions ({money(int(total), ctx.currency)} in total, none "
                    f"over {money(p.max_amount_minor, ctx.currency)}) within hours"),
            amount_at_risk_minor=max(s.balance, ctx.amount),
        )
