"""The canonical gift card event: one shape for every POS, as PRODUCT.md defines it.

>>> e = Event.from_dict({"event_id": "square:a1", "type": "redeem", "card_id": "gc1",
...     "location_id": "L1", "amount_minor": 1500, "currency": "USD",
...     "occurred_at": "2026-11-21T10:00:00Z"})
>>> e.amount_minor, e.ts
(1500, 1795255200.0)
>>> Event.from_dict(e.to_dict()) == e
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

import orjson

#: Event types every POS normalizer maps to. Unknown provider types are kept, lower-cased.
KNOWN_TYPES = frozenset({
    "activate", "load", "redeem", "refund", "adjust_increment", "adjust_decrement",
    "clear_balance", "deactivate", "block", "unblock", "balance_check", "declined",
    "unlinked_activity_refund", "import", "import_reversal", "transfer_balance_from",
    "transfer_balance_to",
})
#: Types that put value on a card.
CREDIT_TYPES = frozenset({"activate", "load", "refund", "adjust_increment",
                          "unlinked_activity_refund", "import", "transfer_balance_to"})
#: Types that take value off a card.
DEBIT_TYPES = frozenset({"redeem", "adjust_decrement", "clear_balance", "import_reversal",
                         "transfer_balance_from"})
STATUSES = frozenset({"completed", "pending", "canceled"})

_REQUIRED = ("event_id", "type", "card_id", "location_id", "amount_minor", "currency",
             "occurred_at")


class InvalidEvent(ValueError):
    """The data is not a canonical event; the message names the field."""


def parse_time(text: str) -> float:
    """RFC 3339 text to a POSIX timestamp (seconds, UTC)."""
    try:
        moment = datetime.fromisoformat(text)
    except (TypeError, ValueError):
        raise InvalidEvent(f"not an RFC 3339 time: {text!r}") from None
    if moment.tzinfo is None:
        raise InvalidEvent(f"time without a UTC offset: {text!r}")
    return moment.timestamp()


def format_time(ts: float) -> str:
    """A POSIX timestamp to RFC 3339 text in UTC with a `Z` suffix, millisecond precision."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class Event:
    """A canonical gift card event. ``ts`` is ``occurred_at`` as a POSIX timestamp."""

    event_id: str
    type: str
    card_id: str
    location_id: str
    amount_minor: int
    currency: str
    occurred_at: str
    source: str | None = None
    balance_after_minor: int | None = None
    status: str | None = None
    channel: str | None = None
    terminal_id: str | None = None
    employee_id: str | None = None
    customer_ref: str | None = None
    payment_ref: str | None = None
    gan_last4: str | None = None
    merchant_id: str | None = None
    received_at: str | None = None
    ts: float = field(default=0.0, compare=False, repr=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Event:
        """Validate a mapping (e.g. parsed JSON) into an event; raise :class:`InvalidEvent`."""
        if type(data) is dict:  # the common case, checked in one pass (the worker's hot path)
            get = data.get
            event_id, type_, card_id, location_id = (get("event_id"), get("type"),
                                                     get("card_id"), get("location_id"))
            amount, currency, occurred_at = (get("amount_minor"), get("currency"),
                                             get("occurred_at"))
            balance, status = get("balance_after_minor"), get("status")
            if (type(event_id) is str and event_id and type(type_) is str and type_
                    and type(card_id) is str and card_id and type(location_id) is str
                    and location_id and type(currency) is str and currency
                    and type(occurred_at) is str and occurred_at
                    and type(amount) is int and amount >= 0
                    and (balance is None or type(balance) is int)
                    and (status is None or status in STATUSES)):
                return cls(event_id, type_, card_id, location_id, amount, currency, occurred_at,
                           get("source"), balance, status, get("channel"), get("terminal_id"),
                           get("employee_id"), get("customer_ref"), get("payment_ref"),
                           get("gan_last4"), get("merchant_id"), get("received_at"),
                           parse_time(occurred_at))
        return cls._checked(data)

    @classmethod
    def _checked(cls, data: Any) -> Event:
        """:meth:`from_dict` field by field, naming the first field that is wrong."""
        if not isinstance(data, dict):
            raise InvalidEvent("event must be a JSON object")
        for name in _REQUIRED:
            if data.get(name) in (None, ""):
                raise InvalidEvent(f"missing field {name!r}")
        amount = data["amount_minor"]
        if not isinstance(amount, int) or isinstance(amount, bool) or amount < 0:
            raise InvalidEvent("amount_minor must be a non-negative integer")
        balance = data.get("balance_after_minor")
        if balance is not None and (not isinstance(balance, int) or isinstance(balance, bool)):
            raise InvalidEvent("balance_after_minor must be an integer")
        status = data.get("status")
        if status is not None and status not in STATUSES:
            raise InvalidEvent(f"status must be one of {sorted(STATUSES)}")
        for name in ("event_id", "type", "card_id", "location_id", "currency", "occurred_at"):
            if not isinstance(data[name], str):
                raise InvalidEvent(f"{name} must be a string")
        kwargs = {f.name: data.get(f.name) for f in _FIELDS}
        kwargs["ts"] = parse_time(data["occurred_at"])
        return cls(**kwargs)

    @classmethod
    def from_json(cls, raw: bytes | str) -> Event:
        """Parse and validate JSON bytes; raise :class:`InvalidEvent` on any problem."""
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise InvalidEvent(f"not JSON: {exc}") from None
        return cls.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        """The event as a JSON-ready dict, without unset optional fields."""
        data = asdict(self)
        del data["ts"]
        return {k: v for k, v in data.items() if v is not None}

    def to_json(self) -> bytes:
        """The event as compact JSON bytes."""
        return orjson.dumps(self.to_dict())


_FIELDS = tuple(f for f in fields(Event) if f.name != "ts")
# from_dict's fast path passes the fields by position, in this order.
assert tuple(f.name for f in _FIELDS) == (
    "event_id", "type", "card_id", "location_id", "amount_minor", "currency", "occurred_at",
    "source", "balance_after_minor", "status", "channel", "terminal_id", "employee_id",
    "customer_ref", "payment_ref", "gan_last4", "merchant_id", "received_at")
