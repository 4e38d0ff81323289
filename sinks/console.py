"""Prints one compact line per alert; what a worker does when no Slack token is set.

>>> import asyncio, io
>>> from detectors.alerts import Alert
>>> out = io.StringIO()
>>> alert = Alert(alert_id="a-1", card_id="gftc:6d55a72470d940c6ba09c0ab8ad08d20",
...               location_id="L1", event_id="square:1", occurred_at="2025-01-01T00:00:00Z",
...               decided_at="2025-01-01T00:00:01Z", score=91.0, level="high",
...               rules=["drain"], reasons=["redeemed $180 of $200"],
...               amount_at_risk_minor=18000)
>>> asyncio.run(ConsoleSink(stream=out).send(alert))
>>> print(out.getvalue().strip())
ALERT high 91 $180.00 card gftc:6d55a7…8d20 at L1 [drain] redeemed $180 of $200 (a-1)
"""

from __future__ import annotations

import sys
from typing import TextIO

from prometheus_client import Counter

from detectors.alerts import Alert
from sinks.slack.blocks import format_money, redact_card_numbers, short_card_id


def format_line(alert: Alert, *, currency: str = "USD") -> str:
    """One line: level, score, amount at risk, card (shortened), location, rules, first reason."""
    reason = alert.reasons[0] if alert.reasons else ""
    if len(alert.reasons) > 1:
        reason += f" (+{len(alert.reasons) - 1} more)"
    related = f" +{len(alert.related_card_ids)} related" if alert.related_card_ids else ""
    line = (f"ALERT {alert.level} {alert.score:.0f} "
            f"{format_money(alert.amount_at_risk_minor, currency)} "
            f"card {short_card_id(alert.card_id)}{related} at {alert.location_id} "
            f"[{','.join(alert.rules)}] {reason} ({alert.alert_id})")
    return redact_card_numbers(line)


class ConsoleSink:
    """Writes :func:`format_line` for each alert to ``stream`` (standard output by default).

    ``messages`` is the ``slack_messages`` counter; each line counts as ``outcome="printed"``.
    """

    def __init__(self, *, stream: TextIO | None = None, currency: str = "USD",
                 messages: Counter | None = None) -> None:
        self.stream = stream
        self.currency = currency
        self.messages = messages

    async def send(self, alert: Alert) -> None:
        """Print the alert's line."""
        stream = self.stream if self.stream is not None else sys.stdout
        print(format_line(alert, currency=self.currency), file=stream, flush=True)
        if self.messages is not None:
            self.messages.labels(outcome="printed").inc()

    async def flush(self) -> None:
        """Lines are written at once; nothing to wait for."""

    async def close(self) -> None:
        """Nothing to release."""
