"""Hand-built Square webhook envelopes for tests (shapes from Square's API reference)."""

from __future__ import annotations

from typing import Any


def envelope(activity_type: str, *, activity_id: str = "gcact_1", card_id: str = "gftc:1",
             location_id: str = "L1", amount: int | None = 5000, balance: int = 5000,
             created_at: str = "2026-11-21T10:00:00Z", status: str | None = None,
             event_type: str = "gift_card.activity.created", details: dict[str, Any] | None = None,
             event_id: str | None = None, gan: str = "7783320001234567") -> dict[str, Any]:
    """A Square `gift_card.activity.*` envelope for one activity."""
    kind = activity_type.lower()
    det: dict[str, Any] = dict(details or {})
    if amount is not None:
        det.setdefault("amount_money", {"amount": amount, "currency": "USD"})
    if status is not None:
        det["status"] = status
    activity = {
        "id": activity_id, "type": activity_type, "location_id": location_id,
        "created_at": created_at, "gift_card_id": card_id, "gift_card_gan": gan,
        "gift_card_balance_money": {"amount": balance, "currency": "USD"},
        f"{kind}_activity_details": det,
    }
    return {
        "merchant_id": "MLMERCHANT1", "type": event_type,
        "event_id": event_id or f"evt-{activity_id}-{event_type[-7:]}",
        "created_at": created_at,
        "data": {"type": "gift_card_activity", "id": activity_id,
                 "object": {"gift_card_activity": activity}},
    }
