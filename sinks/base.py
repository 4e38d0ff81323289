"""The one interface every output goes through, its errors, and a small retry interval.

Every sink (Slack, a POS hold client, an output topic, the console, memory for tests) is an
:class:`AlertSink`: ``await sink.send(alert)`` and, at shutdown, ``await sink.close()``. A sink that
queues work internally also offers ``flush()``.

Errors form one hierarchy under :class:`SinkError`, which carries its context (the sink, the alert,
the remote response). A caller needs to tell two cases apart:

- :class:`RetryLater`: nothing happened that cannot be tried again; wait ``retry_after`` seconds.
- :class:`PermanentFailure`: retrying the same request cannot succeed (bad token, unknown channel,
  a request the remote side rejects); fix the configuration or dead-letter the alert.

Library errors are converted at the boundary of each sink with ``raise ... from exc`` so callers
never import a client library to handle them.

>>> err = RetryLater("slack answered 429", sink="slack", alert_id="a-1", retry_after=2.0)
>>> isinstance(err, SinkError), err.retry_after
(True, 2.0)
>>> str(err)
'slack answered 429 (sink=slack, alert_id=a-1, retry_after=2s)'
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from detectors.alerts import Alert


@runtime_checkable
class AlertSink(Protocol):
    """Where alerts go. ``send`` may queue; ``close`` delivers what is queued, then lets go."""

    async def send(self, alert: Alert) -> None:
        """Deliver (or accept for delivery) one alert; raise a :class:`SinkError` if it cannot."""
        ...

    async def close(self) -> None:
        """Stop accepting alerts, finish what was accepted, release connections."""
        ...


class SinkError(Exception):
    """Root of every error a sink raises.

    ``sink`` names the sink (``"slack"``, ``"square"``, ...), ``alert_id`` the alert being sent when
    known, and ``response`` whatever the remote side answered (a dict, a status), for logs.
    """

    def __init__(self, message: str, *, sink: str, alert_id: str | None = None,
                 response: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.sink = sink
        self.alert_id = alert_id
        self.response = response

    def _context(self) -> list[str]:
        parts = [f"sink={self.sink}"]
        if self.alert_id is not None:
            parts.append(f"alert_id={self.alert_id}")
        return parts

    def __str__(self) -> str:
        return f"{self.message} ({', '.join(self._context())})"


class RetryLater(SinkError):
    """The remote side is slow, limited or down: try again after ``retry_after`` seconds."""

    def __init__(self, message: str, *, sink: str, retry_after: float,
                 alert_id: str | None = None, response: Any = None) -> None:
        super().__init__(message, sink=sink, alert_id=alert_id, response=response)
        self.retry_after = float(retry_after)

    def _context(self) -> list[str]:
        return [*super()._context(), f"retry_after={self.retry_after:g}s"]


class PermanentFailure(SinkError):
    """Retrying the same request cannot succeed (bad credentials, unknown destination, rejected)."""


class SinkClosed(PermanentFailure):
    """``send`` was called after ``close``."""


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long to wait before retry number ``attempt`` (1 for the first retry).

    Exponential from ``initial`` by ``factor``, capped at ``cap``, with up to ``jitter`` (a
    fraction) added at random so many clients do not retry in step. A server's ``Retry-After`` is
    a floor: we never retry sooner than asked, even above ``cap``.

    >>> b = Backoff(initial=0.5, factor=2.0, cap=4.0, jitter=0.0)
    >>> [b.delay(n) for n in (1, 2, 3, 4, 5)]
    [0.5, 1.0, 2.0, 4.0, 4.0]
    >>> b.delay(1, retry_after=30)
    30.0
    """

    initial: float = 0.5
    factor: float = 2.0
    cap: float = 30.0
    jitter: float = 0.1

    def delay(self, attempt: int, retry_after: float | None = None,
              rng: random.Random | None = None) -> float:
        """Seconds to wait before retry ``attempt`` (>= 1), honouring ``retry_after``."""
        base = min(self.cap, self.initial * self.factor ** max(0, attempt - 1))
        if self.jitter:
            base += base * self.jitter * (rng or random).random()
        return float(max(base, retry_after or 0.0))
