"""The alert a detector raises, in the shape PRODUCT.md defines for `giftcard.alerts`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

import orjson

Level = Literal["elevated", "high"]
Action = Literal["alert", "hold_requested", "hold"]


@dataclass(slots=True)
class Alert:
    """One alert: which card, why (``rules`` and ``reasons``), how sure (``score``) and how much."""

    alert_id: str
    card_id: str
    location_id: str
    event_id: str
    occurred_at: str
    decided_at: str
    score: float
    level: Level
    rules: list[str]
    reasons: list[str]
    amount_at_risk_minor: int
    action: Action = "alert"
    model_version: str = ""
    related_card_ids: list[str] = field(default_factory=list)
    #: Last four digits of the card number, for people (Slack); not part of PRODUCT.md's schema.
    gan_last4: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """The alert as a JSON-ready dict."""
        return asdict(self)

    def to_json(self) -> bytes:
        """The alert as compact JSON bytes."""
        return orjson.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: bytes) -> Alert:
        """Parse an alert from JSON bytes."""
        return cls.from_dict(orjson.loads(raw))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        """Read an alert back from its dict form (ignores unknown keys)."""
        names = cls.__dataclass_fields__
        return cls(**{k: v for k, v in data.items() if k in names})
