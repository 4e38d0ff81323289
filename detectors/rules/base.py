"""What every rule shares: its parameters are a frozen dataclass, its finding is a :class:`Hit`.

A rule is a small class with a ``name``, a ``Params`` dataclass (the thresholds a policy file may
set, with sensible defaults) and a ``check`` method that returns a :class:`Hit` or ``None``. A hit's
``score`` (0-100) says how strongly the rule alone believes the event is fraud; the engine combines
hits and model signals into one risk score (:mod:`detectors.score`).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Hit:
    """One rule firing on one event: how sure, why (with the numbers), and how much is at risk."""

    rule: str
    score: float
    reason: str
    amount_at_risk_minor: int = 0
    related_card_ids: list[str] = field(default_factory=list)


def money(minor: int, currency: str = "USD") -> str:
    """Minor units as short human money text.

    >>> money(18000), money(123456), money(5), money(2500, "EUR")
    ('$180', '$1,234.56', '$0.05', '25 EUR')
    """
    whole, cents = divmod(int(minor), 100)
    text = f"{whole:,}" if cents == 0 else f"{whole:,}.{cents:02d}"
    if currency == "USD":
        return f"${text}"
    return f"{text} {currency}"


def duration(seconds: float) -> str:
    """Seconds as short human text.

    >>> duration(40), duration(7 * 60), duration(3 * 3600 + 60), duration(86400 * 400)
    ('40 seconds', '7 minutes', '3.0 hours', '400 days')
    """
    seconds = max(0.0, seconds)
    if seconds < 90:
        return f"{int(seconds)} seconds"
    if seconds < 5400:
        return f"{round(seconds / 60)} minutes"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.1f} hours"
    return f"{int(seconds // 86400)} days"


def km(distance: float) -> str:
    """Kilometres as short human text.

    >>> km(1912.4), km(3.26)
    ('1,912 km', '3.3 km')
    """
    return f"{distance:,.0f} km" if distance >= 10 else f"{distance:.1f} km"


def clamp(x: float, lo: float = 0.0, hi: float = 100.0) -> float:
    return lo if x < lo else min(x, hi)


class CardContext:
    """What a card-scope rule sees: the card's state *before* this event, plus facts about it.

    ``amount`` is the value the event actually moves (0 for a replayed pending redemption).
    """

    __slots__ = (
        "amount",
        "currency",
        "event",
        "loc_h",
        "location_id",
        "locations",
        "online",
        "state",
        "ts",
    )

    def __init__(self, state, event, location_id, loc_h, ts, amount, online, locations,
                 currency="USD") -> None:
        self.state = state
        self.event = event
        self.location_id = location_id
        self.loc_h = loc_h
        self.ts = ts
        self.amount = amount
        self.online = online
        self.locations = locations
        self.currency = currency

    @classmethod
    def make(cls, state, location_id, ts, amount, online, locations, event=None) -> CardContext:
        """A context for tests and doctests, without a full event."""
        from detectors.locations import loc_hash

        return cls(state, event, location_id, loc_hash(location_id), ts, amount, online,
                   locations)
