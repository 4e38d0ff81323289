"""Acting on alerts: the hold decision (per hold mode) and the alert sinks.

In ``shadow`` mode (the default) a hold request is written to ``giftcard.holds`` with
``action: "shadow"`` and nothing is sent to a POS.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import orjson

from detectors.alerts import Alert
from detectors.events import format_time
from sinks.base import AlertSink
from sinks.metrics import WorkerMetrics
from streams.settings import HoldMode

SendRecord = Callable[[str, bytes], Awaitable[object]]


def hold_record(alert: Alert, mode: HoldMode, action: str) -> dict[str, object]:
    """The ``giftcard.holds`` record for a hold request on ``alert``'s card."""
    return {
        "hold_id": f"{alert.alert_id}:hold",
        "card_id": alert.card_id,
        "alert_id": alert.alert_id,
        "location_id": alert.location_id,
        "mode": mode,
        "action": action,
        "requested": "hold",
        "score": alert.score,
        "amount_minor": alert.amount_at_risk_minor,
        "reasons": alert.reasons,
        "model_version": alert.model_version,
        "decided_at": format_time(time.time()),
    }


class AlertActions:
    """Called once per alert read from ``giftcard.alerts``."""

    def __init__(self, mode: HoldMode, sink: AlertSink, send_hold: SendRecord,
                 metrics: WorkerMetrics) -> None:
        self.mode = mode
        self.sink = sink
        self.send_hold = send_hold
        self.metrics = metrics

    async def __call__(self, alert: Alert) -> None:
        """Request a hold for high alerts (recorded only, in shadow mode) and send the alert."""
        if alert.level == "high" and self.mode == "shadow":
            await self.send_hold(alert.card_id, orjson.dumps(hold_record(alert, self.mode, "shadow")))
            self.metrics.holds.labels("none", "hold", "shadow").inc()
        await self.sink.send(alert)
