"""The simulator's records: its configuration, cards, activities, and the labelled output event."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

#: Fraud patterns (PRODUCT.md "Gift card fraud") and the legitimate traps that look like them.
PATTERNS = ("tamper_drain", "bulk_stolen_payment", "cloned_card", "dormant_drain",
            "insider_credit", "slow_drain")
TRAPS = ("same_store_spend", "staff_batch", "holiday_rush", "relative_gift", "dormant_legit")

#: Measured events per ordinary card by run length in days (spending is cut at the run's end),
#: used to turn ``--events`` into a number of cards.
EVENTS_PER_CARD = ((1, 0.87), (3, 1.09), (7, 1.37), (14, 1.83), (30, 2.52), (60, 3.13),
                   (90, 3.4), (180, 3.6))


def events_per_card(days: int) -> float:
    """Interpolated :data:`EVENTS_PER_CARD`.

    >>> events_per_card(30), round(events_per_card(45), 3), events_per_card(1000)
    (2.52, 2.825, 3.6)
    """
    prev_d, prev_e = EVENTS_PER_CARD[0]
    if days <= prev_d:
        return prev_e
    for d, e in EVENTS_PER_CARD[1:]:
        if days <= d:
            return prev_e + (e - prev_e) * (days - prev_d) / (d - prev_d)
        prev_d, prev_e = d, e
    return prev_e


@dataclass(frozen=True, slots=True)
class SimConfig:
    """What to simulate. ``cards`` wins over ``events``; both unset means 100,000 events."""

    seed: int = 7
    cards: int | None = None
    events: int | None = None
    days: int = 30
    fraud_rate: float = 0.015
    start: date = date(2025, 12, 1)
    holiday_factor: float = 4.0
    currency: str = "USD"
    merchant_id: str = "MLNW7R2K4E5XA"
    #: Independent streams the run is cut into (merged by time); fixed so that output does
    #: not depend on how many processes generate it.
    shards: int = 8

    def __post_init__(self) -> None:
        if self.days < 1:
            raise ValueError("days must be at least 1")
        if not 1 <= self.shards <= 256:
            raise ValueError("shards must be in [1, 256]")
        if not 0.0 <= self.fraud_rate < 0.5:
            raise ValueError("fraud_rate must be in [0, 0.5)")
        for name in ("cards", "events"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise ValueError(f"{name} must be positive")

    @property
    def legit_cards(self) -> int:
        """How many ordinary cards (traps included) the run activates."""
        if self.cards is not None:
            return self.cards
        return max(20, round((self.events or 100_000) / events_per_card(self.days)))


class Card:
    """One gift card: identity, label context, and its running balance (minor units)."""

    __slots__ = ("card_id", "gan", "pattern", "incident_id", "trap", "balance", "home")

    def __init__(self, card_id: str, gan: str, home: Any, pattern: str | None = None,
                 incident_id: str | None = None, trap: str | None = None) -> None:
        self.card_id = card_id
        self.gan = gan
        self.home = home
        self.pattern = pattern
        self.incident_id = incident_id
        self.trap = trap
        self.balance = 0


class Act:
    """One Square gift card activity (or its ``.updated`` notification), before serialization.

    ``ts`` is when the webhook is sent (ms); ``created`` the activity's own ``created_at`` (ms),
    earlier than ``ts`` only for an update of a pending redemption. Identifiers are drawn when
    the activity is emitted (``act_id``, ``payment_id``), so a waiting activity stays small.
    ``ref`` depends on the kind: the order id of a batch (ACTIVATE), the reason (ADJUST_*,
    CLEAR_BALANCE, DEACTIVATE), the refunded sale (REFUND) or the pending original (update).
    """

    __slots__ = ("ts", "created", "kind", "card", "loc", "amount", "balance", "fraud", "status",
                 "ref", "instrument", "updated", "act_id", "payment_id")

    def __init__(self, ts: int, kind: str, card: Card, loc: Any, amount: int, fraud: bool,
                 status: str | None = None, ref: Any = None, instrument: str | None = None,
                 updated: bool = False, created: int | None = None) -> None:
        self.ts = ts
        self.created = ts if created is None else created
        self.kind = kind
        self.card = card
        self.loc = loc
        self.amount = amount
        self.balance = card.balance
        self.fraud = fraud
        self.status = status
        self.ref = ref
        self.instrument = instrument
        self.updated = updated
        self.act_id: str | None = None
        self.payment_id: str | None = None


class SimEvent:
    """A Square webhook envelope with its ground truth."""

    __slots__ = ("envelope", "event_id", "card_id", "is_fraud", "pattern", "incident_id", "trap",
                 "ts_ms")

    def __init__(self, envelope: dict[str, Any], event_id: str, card_id: str, is_fraud: bool,
                 pattern: str | None, incident_id: str | None, trap: str | None,
                 ts_ms: int) -> None:
        self.envelope = envelope
        self.event_id = event_id
        self.card_id = card_id
        self.is_fraud = is_fraud
        self.pattern = pattern
        self.incident_id = incident_id
        self.trap = trap
        self.ts_ms = ts_ms

    def label(self) -> dict[str, Any]:
        """The ``labels.jsonl`` line; ``event_id`` matches ``normalize_square``."""
        return {"event_id": self.event_id, "card_id": self.card_id, "is_fraud": self.is_fraud,
                "pattern": self.pattern, "incident_id": self.incident_id, "trap": self.trap}

    def __repr__(self) -> str:
        return (f"SimEvent({self.event_id!r}, fraud={self.is_fraud}, pattern={self.pattern!r}, "
                f"trap={self.trap!r})")
