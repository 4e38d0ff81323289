"""Retries for POS calls, composed from small parts: a policy, an interval, a cap, Retry-After.

- the **interval** is :class:`sinks.base.Backoff`: exponential, capped, with jitter, and never
  shorter than the server's ``Retry-After``;
- the **policy** (:class:`RetryPolicy`) bounds the whole: at most ``max_attempts`` requests, no
  single wait above ``max_wait`` (a server asking for longer ends the retries: the result carries
  its ``retry_after`` and the caller comes back later instead of blocking a worker) and at most
  ``budget`` seconds of waiting in all;
- **what** is retried is decided by the operation: it raises :class:`~sinks.pos.base.PosRetryLater`
  for "send the same request again" (429, 5xx, timeouts) and :class:`~sinks.pos.base.PosRejected`
  for "do not". Retrying is only safe because every POS request is idempotent (a key, or a
  naturally idempotent mutation).

:class:`Retrier` runs an operation under a policy and returns an :class:`Attempted`: the value or
the last error, with the number of attempts. It never raises a :class:`~sinks.pos.base.PosError`.
``sleep`` and ``rng`` are injected so tests can record waits instead of sleeping; ``on_retry`` is
called with the error before each retry (the worker counts them: ``giftguard_pos_retries_total``,
labelled by :func:`retry_reason`), so an outage the retries ride out still shows in the metrics.

>>> import asyncio, random
>>> from sinks.pos.base import PosRetryLater
>>> waits = []
>>> async def record(seconds):
...     waits.append(seconds)
>>> calls = iter([PosRetryLater("429", sink="pos", retry_after=3.0, status_code=429), "ok"])
>>> async def op():
...     item = next(calls)
...     if isinstance(item, Exception):
...         raise item
...     return item
>>> retried = []
>>> retrier = Retrier(RetryPolicy(), sleep=record, rng=random.Random(0),
...                   on_retry=lambda exc: retried.append(retry_reason(exc)))
>>> result = asyncio.run(retrier.run(op))
>>> result.value, result.attempts, waits, retried
('ok', 2, [3.0], ['429'])
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

from sinks.base import Backoff
from sinks.pos.base import PosError, PosRetryLater

T = TypeVar("T")

Sleep = Callable[[float], Awaitable[object]]
OnRetry = Callable[[PosRetryLater], object]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How hard to try: attempts, the interval between them, and the caps.

    The defaults suit a Faust worker acting on an alert: four requests over at most about 15 s,
    then give up and let the caller record the failure and retry later.

    >>> p = RetryPolicy(max_attempts=3, backoff=Backoff(initial=1.0, jitter=0.0), max_wait=5.0)
    >>> [p.next_wait(n, retry_after=None, waited=0.0) for n in (1, 2, 3)]
    [1.0, 2.0, None]
    >>> p.next_wait(1, retry_after=60.0, waited=0.0) is None   # asks for more than max_wait
    True
    """

    max_attempts: int = 4
    backoff: Backoff = field(default_factory=lambda: Backoff(initial=0.5, factor=2.0, cap=8.0,
                                                             jitter=0.5))
    max_wait: float = 10.0
    budget: float = 20.0

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, not {self.max_attempts}")
        if self.max_wait < 0 or self.budget < 0:
            raise ValueError("max_wait and budget must not be negative")

    def next_wait(self, attempts: int, *, retry_after: float | None, waited: float,
                  rng: random.Random | None = None) -> float | None:
        """Seconds to wait after ``attempts`` failed requests, or None to give up."""
        if attempts >= self.max_attempts:
            return None
        wait = self.backoff.delay(attempts, retry_after=retry_after, rng=rng)
        if retry_after is not None and retry_after > self.max_wait:
            return None  # the server wants a pause longer than we block for: come back later
        wait = min(wait, self.max_wait)
        if waited + wait > self.budget:
            return None
        return wait


#: No retries at all: one request, its answer is final.
NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, slots=True)
class Attempted(Generic[T]):
    """The outcome of :meth:`Retrier.run`: ``value`` or ``error``, and what it took."""

    value: T | None
    error: PosError | None
    attempts: int
    waited: float = 0.0


class Retrier:
    """Runs an operation under a :class:`RetryPolicy`, sleeping with ``sleep`` between attempts
    and calling ``on_retry`` with the error before each retry."""

    def __init__(self, policy: RetryPolicy | None = None, *, sleep: Sleep = asyncio.sleep,
                 rng: random.Random | None = None, on_retry: OnRetry | None = None) -> None:
        self.policy = policy if policy is not None else RetryPolicy()
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._on_retry = on_retry

    async def run(self, op: Callable[[], Awaitable[T]]) -> Attempted[T]:
        """Call ``op`` until it returns, raises a non-retryable error, or the policy says stop."""
        attempts = 0
        waited = 0.0
        while True:
            attempts += 1
            try:
                value = await op()
            except PosRetryLater as exc:
                wait = self.policy.next_wait(attempts, retry_after=exc.retry_after or None,
                                             waited=waited, rng=self._rng)
                if wait is None:
                    return Attempted(value=None, error=exc, attempts=attempts, waited=waited)
                if self._on_retry is not None:
                    self._on_retry(exc)
                await self._sleep(wait)
                waited += wait
            except PosError as exc:
                return Attempted(value=None, error=exc, attempts=attempts, waited=waited)
            else:
                return Attempted(value=value, error=None, attempts=attempts, waited=waited)


def retry_reason(exc: PosRetryLater) -> str:
    """Why a request is sent again, as a metric label: ``429``, ``5xx``, or ``network`` (no
    answer: a timeout, a refused or dropped connection); ``other`` for anything else.

    >>> [retry_reason(PosRetryLater("x", sink="square", status_code=s)) for s in (429, 503, None)]
    ['429', '5xx', 'network']
    """
    status = exc.status_code
    if status is None:
        return "network"
    if status == 429:
        return "429"
    return "5xx" if status >= 500 else "other"


def parse_retry_after(value: str | None) -> float:
    """Seconds from a ``Retry-After`` header (delta-seconds; fractions accepted), 0 if absent.

    HTTP dates are not parsed (neither Square nor Shopify sends them); they count as absent.

    >>> parse_retry_after("2"), parse_retry_after("0.25"), parse_retry_after(None)
    (2.0, 0.25, 0.0)
    >>> parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT")
    0.0
    """
    if not value:
        return 0.0
    try:
        return max(0.0, float(value.strip()))
    except ValueError:
        return 0.0
