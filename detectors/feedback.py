"""Analyst feedback as plain data, from the ``giftcard.feedback`` topic or a backtest's labels.

>>> f = Feedback.from_dict({"card_id": "gc1", "is_fraud": True, "event_id": "square:a1",
...                         "rules": ["rapid_drain"], "location_id": "L1"})
>>> f.is_fraud, f.rules
(True, ('rapid_drain',))
>>> Feedback.from_dict(f.to_dict()) == f
True
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


class InvalidFeedback(ValueError):
    """The data is not feedback; the message names the field."""


@dataclass(frozen=True, slots=True)
class Feedback:
    """One analyst decision (or label) about a card, an event, or an alert.

    ``is_fraud`` is the verdict: ``True`` for "confirm fraud", ``False`` for "false positive".
    The rest says what it is about, so the learner can credit or blame the right evidence:
    the event and alert, the rules that fired, the location, payment instrument and employee.
    """

    card_id: str
    is_fraud: bool
    event_id: str | None = None
    alert_id: str | None = None
    rules: tuple[str, ...] = ()
    location_id: str | None = None
    payment_ref: str | None = None
    employee_id: str | None = None
    decided_at: str | None = None
    analyst: str | None = None
    source: str = "analyst"          # "analyst" (Slack) or "label" (backtest --labels)
    pattern: str | None = None       # the fraud pattern, when a label names it

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Feedback:
        if not isinstance(data, dict):
            raise InvalidFeedback("feedback must be a JSON object")
        if not isinstance(data.get("card_id"), str) or not data["card_id"]:
            raise InvalidFeedback("missing field 'card_id'")
        if not isinstance(data.get("is_fraud"), bool):
            raise InvalidFeedback("is_fraud must be true or false")
        kwargs = {f.name: data[f.name] for f in fields(cls) if data.get(f.name) is not None}
        kwargs["rules"] = tuple(str(r) for r in data.get("rules") or ())
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["rules"] = list(self.rules)
        return {k: v for k, v in data.items() if v not in (None, [])}
