"""Small helpers for tests and doctests: hand-made events and a fixed set of locations.

>>> ev("redeem", 500, 7, loc="SEA").occurred_at
'2026-11-21T10:07:00.000Z'
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from detectors.events import Event, format_time
from detectors.locations import Location, Locations

T0 = datetime(2026, 11, 21, 10, 0, tzinfo=UTC)

#: Two stores far apart, one nearby store, and a web shop.
LOCS = Locations([
    Location("SEA", "Seattle Pike St", 47.61, -122.33, "America/Los_Angeles"),
    Location("SEA2", "Seattle Capitol Hill", 47.62, -122.32, "America/Los_Angeles"),
    Location("MIA", "Miami Brickell", 25.76, -80.19, "America/New_York"),
    Location("WEB", "Web shop", 0.0, 0.0, "UTC", channel="online"),
])

_counter = iter(range(10**9))


def ev(typ: str, amount: int, minute: float, *, loc: str = "L1", card: str = "gc1",
       eid: str | None = None, **extra: Any) -> Event:
    """An event ``minute`` minutes after :data:`T0` (fractions and days of minutes allowed)."""
    ts = (T0 + timedelta(minutes=minute)).timestamp()
    data = {"event_id": eid or f"t:{next(_counter)}", "type": typ, "card_id": card,
            "location_id": loc, "amount_minor": amount, "currency": "USD",
            "occurred_at": format_time(ts)}
    data.update({k: v for k, v in extra.items() if v is not None})
    return Event.from_dict(data)


def run_card(engine, events, alerts: bool = False) -> list:
    """Feed one card's events through ``engine``; the states (or the alert lists) in order."""
    state = None
    out = []
    for e in events:
        o = engine.on_card_event(e, state)
        state = o.state
        out.append(o.alerts if alerts else o.state)
    return out


def run_all(engine, events) -> list:
    """Card scope then entity scope for every event, as the backtest does; all alerts."""
    cards: dict[str, bytes | None] = {}
    entities: dict[str, bytes | None] = {}
    alerts = []
    for e in events:
        o = engine.on_card_event(e, cards.get(e.card_id))
        cards[e.card_id] = o.state
        alerts.extend(o.alerts)
        alerts.extend(engine.entity_scope(o, e, entities)[1])
    return alerts
