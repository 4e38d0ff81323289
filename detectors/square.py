"""Square `gift_card.activity.created` / `.updated` webhook envelopes to canonical events.

A `.updated` notification carries the same activity id as the `.created` one (a POS redemption
moving from PENDING to COMPLETED or CANCELED). So that `event_id` stays unique, an update's id
carries the new status: ``square:<activity id>:<status>``.

>>> env = {"merchant_id": "M1", "type": "gift_card.activity.created", "event_id": "e1",
...   "created_at": "2026-11-21T10:00:00Z", "data": {"type": "gift_card_activity", "id": "act1",
...   "object": {"gift_card_activity": {"id": "act1", "type": "REDEEM", "location_id": "L1",
...     "created_at": "2026-11-21T10:00:00Z", "gift_card_id": "gc1",
...     "gift_card_gan": "7783320001234567",
...     "gift_card_balance_money": {"amount": 500, "currency": "USD"},
...     "redeem_activity_details": {"amount_money": {"amount": 1500, "currency": "USD"},
...                                 "status": "COMPLETED"}}}}}
>>> ev = normalize_square(env)
>>> ev.event_id, ev.type, ev.amount_minor, ev.balance_after_minor, ev.status, ev.gan_last4
('square:act1', 'redeem', 1500, 500, 'completed', '4567')
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from typing import Any

from detectors.events import STATUSES, Event, InvalidEvent, parse_time

WEBHOOK_TYPES = frozenset({"gift_card.activity.created", "gift_card.activity.updated"})

Hasher = Callable[[str], str]

_BLOCK = hashlib.sha256().block_size   # HMAC pads the key to the hash's block size
#: Fields every activity must carry as non-empty strings.
_ACTIVITY_FIELDS = ("id", "type", "location_id", "created_at", "gift_card_id")


def salted_hasher(salt: str) -> Hasher:
    """A keyed hash for customer and payment references (first 16 hex digits of HMAC-SHA256).

    The key's inner and outer pads are hashed once (RFC 2104); each value then costs two copies
    of those SHA-256 states instead of a whole HMAC set-up — the same digests, several times
    faster.

    >>> h = salted_hasher("s")
    >>> h("cnon:card-1") == h("cnon:card-1"), len(h("x"))
    (True, 16)
    >>> import hmac
    >>> h("x") == hmac.new(b"s", b"x", hashlib.sha256).hexdigest()[:16]
    True
    """
    key = salt.encode()
    if len(key) > _BLOCK:
        key = hashlib.sha256(key).digest()
    key = key.ljust(_BLOCK, b"\0")
    inner = hashlib.sha256(bytes(b ^ 0x36 for b in key))
    outer = hashlib.sha256(bytes(b ^ 0x5C for b in key))

    def hash_ref(value: str) -> str:
        h = inner.copy()
        h.update(value.encode())
        o = outer.copy()
        o.update(h.digest())
        return o.hexdigest()[:16]

    return hash_ref


_UNSALTED = salted_hasher("giftguard-dev-salt")


def _money(obj: Any, where: str) -> tuple[int, str] | None:
    if obj is None:
        return None
    if not isinstance(obj, dict):
        raise InvalidEvent(f"{where} must be a Money object")
    amount, currency = obj.get("amount"), obj.get("currency")
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise InvalidEvent(f"{where}.amount must be an integer")
    if not isinstance(currency, str) or len(currency) != 3:
        raise InvalidEvent(f"{where}.currency must be a 3-letter code")
    return amount, currency


def activity_of(envelope: Any) -> dict[str, Any]:
    """The `gift_card_activity` object inside an envelope; raise :class:`InvalidEvent`."""
    if not isinstance(envelope, dict):
        raise InvalidEvent("webhook body must be a JSON object")
    if envelope.get("type") not in WEBHOOK_TYPES:
        raise InvalidEvent(f"unsupported webhook type {envelope.get('type')!r}")
    data = envelope.get("data")
    if not isinstance(data, dict) or data.get("type") != "gift_card_activity":
        raise InvalidEvent("data.type must be 'gift_card_activity'")
    obj = data.get("object")
    activity = obj.get("gift_card_activity") if isinstance(obj, dict) else None
    if not isinstance(activity, dict):
        raise InvalidEvent("missing data.object.gift_card_activity")
    return activity


def normalize_square(envelope: Any, hasher: Hasher = _UNSALTED,
                     received_at: str | None = None) -> Event:
    """Turn one Square webhook envelope into a canonical :class:`Event`.

    Customer and payment identifiers pass through ``hasher`` (never raw). Unknown activity
    types are kept, lower-cased. Raise :class:`InvalidEvent` naming the problem.
    """
    activity = activity_of(envelope)
    get = activity.get
    for name in _ACTIVITY_FIELDS:
        value = get(name)
        if not value or not isinstance(value, str):
            raise InvalidEvent(f"gift_card_activity.{name} is missing")
    kind = activity["type"].lower()
    details = get(f"{kind}_activity_details") or {}
    if not isinstance(details, dict):
        raise InvalidEvent(f"{kind}_activity_details must be an object")
    amount = _money(details.get("amount_money"), f"{kind}_activity_details.amount_money")
    balance = _money(get("gift_card_balance_money"), "gift_card_balance_money")
    if amount is None and balance is None:
        raise InvalidEvent("no amount_money or gift_card_balance_money to take a currency from")
    currency = (amount or balance)[1]  # type: ignore[index]

    status = details.get("status")
    status = status.lower() if isinstance(status, str) else "completed"
    event_id = f"square:{activity['id']}"
    if envelope["type"] == "gift_card.activity.updated":
        event_id = f"{event_id}:{status}"

    gan = get("gift_card_gan")
    customer = get("customer_id") or details.get("customer_id")
    payment = _payment(details)
    amount_minor = amount[0] if amount else 0
    _check(amount_minor, status)
    return Event(
        event_id=event_id,
        type=kind,
        card_id=activity["gift_card_id"],
        location_id=activity["location_id"],
        amount_minor=amount_minor,
        currency=currency,
        occurred_at=activity["created_at"],
        source="square",
        balance_after_minor=balance[0] if balance else None,
        status=status,
        employee_id=get("team_member_id") or details.get("team_member_id"),
        customer_ref=hasher(customer) if isinstance(customer, str) else None,
        payment_ref=hasher(payment) if payment else None,
        gan_last4=gan[-4:] if isinstance(gan, str) and len(gan) >= 4 else None,
        merchant_id=envelope.get("merchant_id"),
        received_at=received_at,
        ts=parse_time(activity["created_at"]),
    )


def _payment(details: dict[str, Any]) -> str | None:
    """The raw payment reference of an activity: its buyer's instruments, else its payment."""
    instruments = details.get("buyer_payment_instrument_ids")
    if isinstance(instruments, list) and instruments:
        return ",".join(sorted(str(i) for i in instruments))
    payment = details.get("payment_id")
    return payment if isinstance(payment, str) else None


def _check(amount_minor: int, status: str) -> None:
    """The checks of :meth:`Event.from_dict` that the fields :func:`normalize_square` has already
    type-checked can still fail, in the same order, with the same messages."""
    if amount_minor < 0:
        raise InvalidEvent("amount_minor must be a non-negative integer")
    if status not in STATUSES:
        raise InvalidEvent(f"status must be one of {sorted(STATUSES)}")
