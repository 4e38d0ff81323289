"""Dormant drain: a long-idle card with value left is suddenly emptied, online or far away.

Card numbers found by enumeration are drained in one night, usually online. The rule fires on a
redemption when the card has had no value movement for ``min_idle_days``, the redemption takes at
least ``min_share`` of the balance, and it happens online or at least ``min_distance_km`` from
the card's last store. Night time at the location (``night_start``-``night_end`` local hours) and
recent balance checks or declines (enumeration probes) raise the score. An owner who finds an old
card in a drawer and spends it in person at the usual store does not fire.

>>> from detectors.rules.base import CardContext
>>> from detectors.state import CardState
>>> from detectors.locations import Locations
>>> s = CardState()
>>> s.t_last, s.balance = 1_700_000_000, 4000
>>> ctx = CardContext.make(s, "WEB", 1_700_000_000 + 120 * 86400, 4000, True, Locations())
>>> DormantDrain().check(ctx, Params()).reason
'redeemed 100% of the balance ($40) online after 120 days without use'
"""

from __future__ import annotations

from dataclasses import dataclass

from detectors.rules.base import CardContext, Hit, clamp, km, money


@dataclass(frozen=True, slots=True)
class Params:
    """Thresholds for :class:`DormantDrain` (policy section ``rules.dormant_drain``)."""

    enabled: bool = True
    min_idle_days: float = 30.0
    min_share: float = 0.5
    min_value_minor: int = 1000
    min_distance_km: float = 80.0
    night_start: float = 0.0
    night_end: float = 6.0
    probe_window_hours: float = 24.0
    score: float = 70.0


class DormantDrain:
    """Fires on a redemption that empties a card idle for a long time, remotely."""

    name = "dormant_drain"
    Params = Params

    def check(self, ctx: CardContext, p: Params) -> Hit | None:
        s = ctx.state
        if not s.t_last:
            return None
        idle = ctx.ts - s.t_last
        if idle < p.min_idle_days * 86400:
            return None
        balance = max(s.balance, ctx.amount)
        if balance < p.min_value_minor or ctx.amount < p.min_share * balance:
            return None
        if ctx.online:
            where = "online"
        else:
            last = s.phys_loc or s.credit_loc
            distance = ctx.locations.distance_by_hash(last, ctx.loc_h) if last else None
            if distance is None or distance < p.min_distance_km:
                return None
            where = f"{km(distance)} from its last store"
        score = p.score + 8 * min(1.0, idle / (p.min_idle_days * 86400 * 4))
        extra = ""
        hour = ctx.locations.local_hour(ctx.location_id, ctx.ts)
        if hour is not None and _in_hours(hour, p.night_start, p.night_end):
            score += 10
            extra += f" at {int(hour):02d}:{int(hour % 1 * 60):02d} local time"
        if s.t_probe and ctx.ts - s.t_probe < p.probe_window_hours * 3600 and s.pr_count >= 1:
            score += 10
            extra += f", after {s.pr_count:.0f} balance checks or declines"
        share = ctx.amount / balance
        return Hit(
            rule=self.name,
            score=clamp(score),
            reason=(f"redeemed {share:.0%} of the balance ({money(balance, ctx.currency)}) "
                    f"{where}{extra} after {int(idle // 86400)} days without use"),
            amount_at_risk_minor=balance,
        )


def _in_hours(hour: float, start: float, end: float) -> bool:
    return start <= hour < end if start <= end else hour >= start or hour < end
