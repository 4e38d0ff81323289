"""POST simulated webhooks to a bridge, signed as Square signs them, until each is accepted.

Deliveries are spread over ``concurrency`` senders by card, so one card's events arrive in order
even while an earlier one is being retried. A 5xx, 408, 425 or 429 answer, a timeout or a
connection error is retried with exponential backoff and jitter (honouring ``Retry-After``);
any other non-2xx answer is a failure and is counted, not retried.
"""

from __future__ import annotations

import asyncio
import random
import time
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import aiohttp

from streams.signatures import SQUARE_SIGNATURE_HEADER, square_signature
from streams.simulation.model import SimEvent
from streams.simulation.output import body_of

RETRY_STATUSES = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class PostConfig:
    """Where and how to deliver. ``rate`` in events/s; ``speedup`` replays simulated time
    ``speedup`` times faster (idle gaps capped at ``max_gap`` seconds); both None: flat out."""

    url: str
    signature_key: str
    notification_url: str
    concurrency: int = 16
    rate: float | None = None
    speedup: float | None = None
    max_gap: float = 2.0
    max_attempts: int | None = None  # None: retry until accepted
    backoff_base: float = 0.2
    backoff_cap: float = 10.0
    timeout: float = 10.0


@dataclass(slots=True)
class PostSummary:
    """What happened: deliveries accepted, retries made, deliveries given up on."""

    sent: int = 0
    retried: int = 0
    failed: int = 0
    seconds: float = 0.0
    errors: dict[str, int] = field(default_factory=dict)

    def line(self) -> str:
        rate = self.sent / self.seconds if self.seconds else 0.0
        return (f"sent {self.sent}, retried {self.retried}, failed {self.failed} "
                f"in {self.seconds:.1f} s ({rate:,.0f} events/s)")


class _Pacer:
    """Sleeps so deliveries follow ``rate`` and/or simulated time divided by ``speedup``."""

    def __init__(self, cfg: PostConfig) -> None:
        self.cfg = cfg
        self.start = time.monotonic()
        self.count = 0
        self.virtual = 0.0
        self.last_ms: int | None = None

    async def wait(self, ts_ms: int) -> None:
        target = 0.0
        if self.cfg.rate:
            target = self.count / self.cfg.rate
        if self.cfg.speedup:
            if self.last_ms is not None:
                gap = (ts_ms - self.last_ms) / 1000 / self.cfg.speedup
                self.virtual += min(max(gap, 0.0), self.cfg.max_gap)
            self.last_ms = ts_ms
            target = max(target, self.virtual)
        self.count += 1
        delay = self.start + target - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


class Poster:
    """Delivers bodies with retries; one instance per run."""

    def __init__(self, cfg: PostConfig, session: aiohttp.ClientSession,
                 rng: random.Random | None = None,
                 on_error: Callable[[str], None] | None = None) -> None:
        self.cfg = cfg
        self.session = session
        self.summary = PostSummary()
        self._rng = rng or random.Random()
        self._on_error = on_error

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        cap = self.cfg.backoff_cap
        if retry_after:
            try:
                return min(cap, max(0.0, float(retry_after)))
            except ValueError:
                pass
        delay = min(cap, self.cfg.backoff_base * 2 ** min(attempt, 16))
        return delay * (0.5 + self._rng.random() / 2)

    def _note(self, reason: str) -> None:
        errors = self.summary.errors
        errors[reason] = errors.get(reason, 0) + 1

    async def deliver(self, body: bytes) -> bool:
        """POST one body until it is accepted (True) or fails for good (False)."""
        cfg = self.cfg
        headers = {"content-type": "application/json",
                   SQUARE_SIGNATURE_HEADER: square_signature(cfg.signature_key,
                                                             cfg.notification_url, body)}
        attempt = 0
        while True:
            attempt += 1
            retry_after = None
            try:
                async with self.session.post(cfg.url, data=body, headers=headers) as resp:
                    await resp.read()
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
            except (TimeoutError, aiohttp.ClientError, OSError) as exc:
                status, reason = 0, type(exc).__name__
            else:
                reason = f"HTTP {status}"
                if 200 <= status < 300:
                    self.summary.sent += 1
                    return True
            self._note(reason)
            retryable = status == 0 or status >= 500 or status in RETRY_STATUSES
            if not retryable or (cfg.max_attempts and attempt >= cfg.max_attempts):
                self.summary.failed += 1
                if self._on_error:
                    self._on_error(f"gave up on a delivery after {attempt} attempt(s): {reason}")
                return False
            self.summary.retried += 1
            await asyncio.sleep(self._backoff(attempt, retry_after))


async def post_events(events: Iterable[SimEvent], cfg: PostConfig,
                      session: aiohttp.ClientSession | None = None,
                      on_event: Callable[[SimEvent, bytes], None] | None = None,
                      on_error: Callable[[str], None] | None = None) -> PostSummary:
    """Sign and POST every event (in order per card); ``on_event`` sees each body as it is
    queued (e.g. to write the files too). Returns the summary."""
    own = session is None
    if session is None:
        timeout = aiohttp.ClientTimeout(total=cfg.timeout)
        connector = aiohttp.TCPConnector(limit=cfg.concurrency)
        session = aiohttp.ClientSession(timeout=timeout, connector=connector)
    poster = Poster(cfg, session, on_error=on_error)
    queues: list[asyncio.Queue[bytes | None]] = [asyncio.Queue(maxsize=64)
                                                 for _ in range(cfg.concurrency)]

    async def sender(queue: asyncio.Queue[bytes | None]) -> None:
        while (body := await queue.get()) is not None:
            await poster.deliver(body)

    started = time.monotonic()
    tasks = [asyncio.create_task(sender(q)) for q in queues]
    pacer = _Pacer(cfg)
    paced = bool(cfg.rate or cfg.speedup)
    try:
        for n, event in enumerate(events):
            body = body_of(event)
            if on_event is not None:
                on_event(event, body)
            if paced:
                await pacer.wait(event.ts_ms)
            elif n % 256 == 0:
                await asyncio.sleep(0)  # let the senders run between generation bursts
            queue = queues[zlib.crc32(event.card_id.encode()) % len(queues)]
            await queue.put(body)
        for queue in queues:
            await queue.put(None)
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        if own:
            await session.close()
    poster.summary.seconds = time.monotonic() - started
    return poster.summary
