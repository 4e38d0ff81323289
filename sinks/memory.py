"""An in-memory sink for tests: it records every alert it is sent.

>>> import asyncio
>>> from detectors.alerts import Alert
>>> sink = MemorySink()
>>> alert = Alert(alert_id="a-1", card_id="gftc:1", location_id="L1", event_id="square:1",
...               occurred_at="2025-01-01T00:00:00Z", decided_at="2025-01-01T00:00:01Z",
...               score=91.0, level="high", rules=["drain"], reasons=["drained"],
...               amount_at_risk_minor=18000)
>>> asyncio.run(sink.send(alert))
>>> [a.alert_id for a in sink.sent]
['a-1']
"""

from __future__ import annotations

from detectors.alerts import Alert
from sinks.base import SinkClosed, SinkError


class MemorySink:
    """Keeps what it is sent in :attr:`sent`; raises ``fail_with`` instead when it is set."""

    def __init__(self, *, fail_with: SinkError | None = None) -> None:
        self.fail_with = fail_with
        self.sent: list[Alert] = []
        self.closed = False

    async def send(self, alert: Alert) -> None:
        """Record ``alert`` (or raise :attr:`fail_with`)."""
        if self.closed:
            raise SinkClosed("send after close", sink="memory", alert_id=alert.alert_id)
        if self.fail_with is not None:
            raise self.fail_with
        self.sent.append(alert)

    async def flush(self) -> None:
        """Nothing is queued; present so tests can treat every sink alike."""

    async def close(self) -> None:
        """Refuse further alerts."""
        self.closed = True
