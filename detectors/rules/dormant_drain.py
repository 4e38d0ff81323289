"""Dormant drain: a long-idle card with value left is suddenly emptied, online or far away.

Card numbers found by enumeration are drained in one night, usually online. The rule fires on a
redemption when the card has had no value movement for ``min_idle_days``, the redemption takes at
least ``min_share`` of the balance, and it happens online or at least ``min_distance_km`` from
the card's last store, *and* either at night at the location (``night_start``-``night_end`` local
hours) or after recent balance checks or declines (enumeration probes; both together score
higher). Without the night or the probes it is weak evidence (``weak_score``): owners do come back
to old cards and shop online by day. An owner who finds an old card in a drawer and spends it in
person at the usual store does not fire at all.

>>> from detectors.rules.base import CardContext
>>> from detectors.state import CardState
>>> from detectors.locations import Location, Locations
>>> s = CardState()
>>> s.t_last, s.balance = 1_700_000_000, 4000
>>> locs = Locations([Location("WEB", "Web shop", 40.7, -74.0, "America/New_York", "online")])
>>> night = 1_700_000_000 + 120 * 86400 - 15 * 3600     # 03:13 in New York
>>> hit = DormantDrain().check(CardContext.make(s, "WEB", night, 4000, True, locs), Params())
>>> round(hit.score), hit.reason
(80, 'redeemed 100% of the balance ($40) online at 03:13 local time after 119 days without use')
>>> DormantDrain().check(CardContext.make(s, "WEB", night + 12 * 3600, 4000, True, locs),
...                      Params()).score                 # 15:13: weak evidence only
40.0
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
    score: float = 72.0
    weak_score: float = 40.0


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
        telling = False
        hour = ctx.locations.local_hour(ctx.location_id, ctx.ts)
        if hour is not None and _in_hours(hour, p.night_start, p.night_end):
            telling = True
            extra += f" at {int(hour):02d}:{int(hour % 1 * 60):02d} local time"
        if s.t_probe and ctx.ts - s.t_probe < p.probe_window_hours * 3600 and s.pr_count >= 1:
            score += 10 if telling else 0
            telling = True
            extra += f", after {s.pr_count:.0f} balance checks or declines"
        if not telling:
            # Owners come back to old cards and shop online by day: without the night or the
            # probes this is weak evidence, below any alert level.
            score = p.weak_score
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
