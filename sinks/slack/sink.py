"""The Slack alert sink: one Block Kit message per alert in the loss-prevention channel.

``send()`` renders the message and puts it on an internal queue, so the caller (a Faust agent) is
never held up by Slack; one sender task posts the queue in order at Slack's pace (about one message
per second per channel). Nothing is dropped while Slack is slow or down:

- slack_sdk retries connection errors and HTTP 429 itself (sleeping ``Retry-After``);
- what it gives up on comes back as :class:`~sinks.base.RetryLater`, and the sender waits
  (``Retry-After`` as a floor, else :class:`~sinks.base.Backoff`) and tries the same message again,
  keeping its place at the head of the queue, until it is ``give_up_after`` seconds old;
- a :class:`~sinks.base.PermanentFailure` (bad token, unknown channel) is logged and counted
  ``outcome="failed"``; the sender goes on with the next message.

Idempotency: Slack's ``chat.postMessage`` has no idempotency key, so the sink remembers the ``ts``
of the last ``remember`` alerts it posted (an LRU keyed by ``alert_id``). The same alert sent again
is not posted twice: if its message is unchanged it is skipped, if it changed (say the action went
from ``alert`` to ``hold``) the posted message is edited with ``chat.update``. This holds within one
process only; deduplication across restarts (an alert replayed after a worker restart) needs the ts
kept in a table or topic and is left to a later issue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import aiohttp
from prometheus_client import Counter
from pydantic import SecretStr
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from detectors.alerts import Alert
from sinks.base import Backoff, PermanentFailure, RetryLater, SinkClosed, SinkError
from sinks.slack.blocks import HoldMode, SlackMessage, alert_message
from sinks.slack.client import SINK, SlackChat, make_client

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(slots=True)
class _Pending:
    """An alert waiting for the sender: post it (``ts is None``) or update the message at ``ts``."""

    alert_id: str
    message: SlackMessage
    digest: str
    enqueued_at: float
    channel: str
    ts: str | None = None
    attempt: int = 0


@dataclass(frozen=True, slots=True)
class Posted:
    """A message the sink has posted: where, its ``ts``, and a digest of what it shows."""

    channel: str
    ts: str
    digest: str


def _lookup(lookup: Callable[[T], str | None] | None, key: T) -> str | None:
    """``lookup(key)``; a lookup that fails only costs the message a detail, never the alert."""
    if lookup is None:
        return None
    try:
        return lookup(key)
    except Exception:
        log.warning("Slack message detail lookup %r failed; shown as unknown", lookup,
                    exc_info=True)
        return None


def _digest(message: SlackMessage) -> str:
    body = json.dumps([message.text, message.blocks], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(body.encode()).hexdigest()


class SlackAlertSink:
    """Posts alerts to ``channel`` with Block Kit; an :class:`~sinks.base.AlertSink`.

    Args:
        token: the bot token (``SLACK_BOT_TOKEN``), ``chat:write`` scope.
        channel: channel id or name (``SLACK_CHANNEL``); the bot must be a member.
        base_url: Slack Web API base URL (``SLACK_API_URL``); Slack's own when None.
        hold_mode: ``shadow`` shows only Confirm fraud / False positive; otherwise Hold and
            Release too.
        currency: currency of ``amount_at_risk_minor`` (the alert does not carry one).
        gan_last4: looks up a card's last four digits for an alert (``send(gan_last4=...)``
            overrides it per alert). Never give it more than the last four if you can help it;
            anything longer is cut to four anyway.
        location_name: looks up a location's human name by id.
        messages: the ``slack_messages`` counter (label ``outcome``: sent, failed, retried).
        session: an aiohttp session to borrow (not closed by the sink); one of its own if None.
        client: a ready ``AsyncWebClient`` (tests); ``token``/``base_url``/``session`` then unused.
        retry_handlers: slack_sdk retry handlers; connection errors and 429 when None.
        min_interval: seconds between the end of one call and the start of the next (1 msg/s).
        backoff: waits between retries of a message that failed with ``RetryLater``
            (:class:`~sinks.base.Backoff` defaults: 0.5 s doubling to 30 s).
        give_up_after: a message older than this many seconds is not retried again (counted failed).
        max_queue: messages waiting at most; ``send`` raises ``RetryLater`` beyond it.
        remember: alerts whose ``ts`` is kept for deduplication (LRU).
    """

    def __init__(self, token: str | SecretStr, channel: str, *, base_url: str | None = None,
                 hold_mode: HoldMode = "shadow", currency: str = "USD",
                 gan_last4: Callable[[Alert], str | None] | None = None,
                 location_name: Callable[[str], str | None] | None = None,
                 messages: Counter | None = None,
                 session: aiohttp.ClientSession | None = None,
                 client: AsyncWebClient | None = None,
                 retry_handlers: list[AsyncRetryHandler] | None = None,
                 min_interval: float = 1.0, backoff: Backoff | None = None,
                 give_up_after: float = 6 * 3600.0, max_queue: int = 10_000,
                 remember: int = 10_000, timeout: int = 10) -> None:
        if not channel:
            raise ValueError("channel must be set (SLACK_CHANNEL)")
        self.channel = channel
        self.base_url = base_url
        self.hold_mode = hold_mode
        self.currency = currency
        self.gan_last4 = gan_last4
        self.location_name = location_name
        self.messages = messages
        self.session = session
        self.client = client
        self.retry_handlers = retry_handlers
        self.min_interval = min_interval
        self.backoff = backoff if backoff is not None else Backoff()
        self.give_up_after = give_up_after
        self.max_queue = max_queue
        self.remember = remember
        self.timeout = timeout
        self._token = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._chat: SlackChat | None = None
        self._own_session: aiohttp.ClientSession | None = None
        self._queue: deque[str] = deque()
        self._pending: dict[str, _Pending] = {}
        self._posted: OrderedDict[str, Posted] = OrderedDict()
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self._rng = random.Random()
        self.last_error: SinkError | None = None

    def __repr__(self) -> str:
        return (f"SlackAlertSink(channel={self.channel!r}, base_url={self.base_url!r}, "
                f"hold_mode={self.hold_mode!r}, token='***')")

    # -- the AlertSink interface ------------------------------------------------------------------

    async def send(self, alert: Alert, *, gan_last4: str | None = None) -> None:
        """Queue ``alert`` for posting and return at once.

        Raises :class:`~sinks.base.SinkClosed` after :meth:`close`, and
        :class:`~sinks.base.RetryLater` when ``max_queue`` messages are already waiting.
        """
        if self._closed:
            raise SinkClosed("send after close", sink=SINK, alert_id=alert.alert_id)
        four = gan_last4 if gan_last4 is not None else _lookup(self.gan_last4, alert)
        name = _lookup(self.location_name, alert.location_id)
        message = alert_message(alert, gan_last4=four, currency=self.currency,
                                hold_mode=self.hold_mode, location_name=name)
        digest = _digest(message)

        waiting = self._pending.get(alert.alert_id)
        if waiting is not None:  # not posted yet: post the newest version instead
            waiting.message, waiting.digest = message, digest
            return
        posted = self._posted.get(alert.alert_id)
        if posted is not None:
            self._posted.move_to_end(alert.alert_id)
            if posted.digest == digest:
                log.debug("alert %s already posted (ts %s); not posting again",
                          alert.alert_id, posted.ts)
                return
        if len(self._queue) >= self.max_queue:
            raise RetryLater(f"{len(self._queue)} Slack messages already waiting", sink=SINK,
                             alert_id=alert.alert_id,
                             retry_after=len(self._queue) * max(self.min_interval, 0.1))
        loop = asyncio.get_running_loop()
        item = _Pending(alert_id=alert.alert_id, message=message, digest=digest,
                        enqueued_at=loop.time(),
                        channel=posted.channel if posted else self.channel,
                        ts=posted.ts if posted else None)
        self._pending[alert.alert_id] = item
        self._queue.append(alert.alert_id)
        self._idle.clear()
        self._wakeup.set()
        self._ensure_sender()

    async def flush(self, timeout: float | None = None) -> None:
        """Wait until every queued message is posted or given up (else ``TimeoutError``)."""
        if self._queue:
            self._ensure_sender()
        async with asyncio.timeout(timeout):
            await self._idle.wait()

    async def close(self, timeout: float | None = 30.0) -> None:
        """Stop accepting alerts, post what is queued (up to ``timeout`` s), release the session.

        Messages still queued after ``timeout`` are counted failed and logged.
        """
        self._closed = True
        try:
            if self._queue:
                await self.flush(timeout)
        except TimeoutError:
            log.error("closing the Slack sink with %d messages not posted", len(self._queue))
            self._count("failed", len(self._queue))
        finally:
            if self._sender is not None:
                self._sender.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._sender
            self._queue.clear()
            self._pending.clear()
            self._idle.set()
            if self._own_session is not None:
                await self._own_session.close()
                self._own_session = None

    # -- what the actions endpoint and tests look at ----------------------------------------------

    def posted(self, alert_id: str) -> Posted | None:
        """Where and when (``ts``) ``alert_id`` was posted, if this process posted it."""
        return self._posted.get(alert_id)

    @property
    def queued(self) -> int:
        """Messages waiting to be posted or updated."""
        return len(self._queue)

    # -- the sender -------------------------------------------------------------------------------

    def _ensure_sender(self) -> None:
        if self._sender is None or self._sender.done():
            self._sender = asyncio.create_task(self._run(), name="giftguard-slack-sender")

    def _chat_client(self) -> SlackChat:
        if self._chat is None:
            client = self.client
            if client is None:
                session = self.session
                if session is None:
                    self._own_session = aiohttp.ClientSession(
                        timeout=aiohttp.ClientTimeout(total=self.timeout))
                    session = self._own_session
                client = make_client(self._token, base_url=self.base_url, session=session,
                                     retry_handlers=self.retry_handlers, timeout=self.timeout)
            self._chat = SlackChat(client)
        return self._chat

    def _count(self, outcome: str, n: int = 1) -> None:
        if self.messages is not None and n:
            self.messages.labels(outcome=outcome).inc(n)

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        next_at = 0.0
        while True:
            if not self._queue:
                self._idle.set()
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            delay = next_at - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            item = self._pending[self._queue[0]]
            wait = self.min_interval
            try:
                await self._deliver(item)
            except RetryLater as exc:
                item.attempt += 1
                self.last_error = exc
                if loop.time() - item.enqueued_at >= self.give_up_after:
                    log.error("giving up on Slack message for alert %s after %d attempts: %s",
                              item.alert_id, item.attempt, exc)
                    self._done(item, "failed")
                else:
                    wait = max(wait, self.backoff.delay(item.attempt, exc.retry_after, self._rng))
                    log.warning("Slack message for alert %s: %s; retry %d in %.2fs",
                                item.alert_id, exc, item.attempt, wait)
                    self._count("retried")
            except PermanentFailure as exc:
                self.last_error = exc
                log.error("Slack message for alert %s failed: %s", item.alert_id, exc)
                self._done(item, "failed")
            except Exception as exc:  # never let one message stop the sender
                self.last_error = exc if isinstance(exc, SinkError) else SinkError(
                    f"unexpected error: {type(exc).__name__}: {exc}", sink=SINK,
                    alert_id=item.alert_id)
                log.exception("Slack message for alert %s failed unexpectedly", item.alert_id)
                self._done(item, "failed")
            next_at = loop.time() + wait

    async def _deliver(self, item: _Pending) -> None:
        chat = self._chat_client()
        digest = item.digest
        if item.ts is None:
            item.channel, item.ts = await chat.post(self.channel, item.message,
                                                    alert_id=item.alert_id)
        else:
            await chat.update(item.channel, item.ts, item.message, alert_id=item.alert_id)
        self._remember(Posted(channel=item.channel, ts=item.ts, digest=digest), item.alert_id)
        if item.digest != digest:  # a newer version arrived while this one was on the wire
            self._count("sent")
            item.attempt = 0
            return
        self._done(item, "sent")

    def _remember(self, posted: Posted, alert_id: str) -> None:
        self._posted[alert_id] = posted
        self._posted.move_to_end(alert_id)
        while len(self._posted) > self.remember:
            self._posted.popitem(last=False)

    def _done(self, item: _Pending, outcome: str) -> None:
        self._queue.popleft()
        self._pending.pop(item.alert_id, None)
        self._count(outcome)
