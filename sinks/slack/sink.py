"""The Slack alert sink: alerts as Block Kit messages in the loss-prevention channel.

``send()`` renders the message and puts it on an internal queue, so the caller (a Faust agent) is
never held up by Slack; one sender task posts the queue in order at Slack's pace (about one message
per second per channel). Nothing is dropped while Slack is slow or down:

- slack_sdk retries connection errors and HTTP 429 itself (sleeping ``Retry-After``);
- what it gives up on comes back as :class:`~sinks.base.RetryLater`, and the sender waits
  (``Retry-After`` as a floor, else :class:`~sinks.base.Backoff`) and tries the same message again,
  keeping its place at the head of the queue, until it is ``give_up_after`` seconds old;
- a :class:`~sinks.base.PermanentFailure` (bad token, unknown channel) is logged and counted
  ``outcome="failed"``; the sender goes on with the next message.

**Incidents and threads** (``incidents=True``, as the worker runs it): alerts for the same incident
— the same card, or cards of the same batch (``related_card_ids``) — go to one thread. The first
alert is a top-level message; later ones are replies. Replies still waiting for the sender are
*coalesced*: a burst of 50 alerts for one batch becomes the parent and a few replies of up to
:data:`~sinks.slack.blocks.MAX_ALERTS_PER_MESSAGE` alerts each, never 50 posts and a 429 storm.

**Decisions and notes**: :meth:`SlackAlertSink.decide` adds a line (who, what, when, outcome) to the
message that shows an alert and edits it with ``chat.update``; :meth:`SlackAlertSink.note` posts a
reply in the card's thread (a failed hold, for instance).

**Idempotency**: Slack's ``chat.postMessage`` has no idempotency key, so the sink remembers, per
message, its ``ts`` and what it shows (an LRU of ``remember`` messages). The same alert sent again
is not posted twice: if its message is unchanged it is skipped, if it changed (say the action went
from ``alert`` to ``hold``) the posted message is edited. ``on_posted`` is called with a JSON-ready
record of every message posted or edited; the worker writes those to a compacted topic and feeds
them back through :meth:`SlackAlertSink.restore` after a restart, so a replayed alert edits its
message instead of posting a second one, and a restarted worker keeps replying in open threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import random
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aiohttp
from prometheus_client import Counter
from pydantic import SecretStr
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from detectors.alerts import Alert
from sinks.base import Backoff, PermanentFailure, RetryLater, SinkClosed, SinkError
from sinks.slack.blocks import (
    MAX_ALERTS_PER_MESSAGE,
    HoldMode,
    SlackMessage,
    alert_message,
    batch_message,
    note_message,
)
from sinks.slack.client import SINK, SlackChat, make_client

log = logging.getLogger(__name__)
T = TypeVar("T")

OnPosted = Callable[[dict[str, Any]], Awaitable[object]]


@dataclass(slots=True)
class _Message:
    """A message the sink owns: to be posted (``ts is None``) or posted at ``ts``."""

    key: str
    channel: str
    alerts: list[Alert] = field(default_factory=list)
    gan: dict[str, str | None] = field(default_factory=dict)
    locations: dict[str, str | None] = field(default_factory=dict)
    decisions: dict[str, list[str]] = field(default_factory=dict)
    note: str | None = None
    incident: str | None = None
    parent: str | None = None          # key of the thread's first message, for replies
    ts: str | None = None
    thread_ts: str | None = None
    shown: str | None = None           # digest of what Slack shows now
    enqueued_at: float = 0.0
    attempt: int = 0
    created: float = field(default_factory=time.time)


@dataclass(slots=True)
class _Incident:
    key: str
    parent: str                        # message key of the first message
    started: float
    open_reply: str | None = None      # a reply not yet posted that takes more alerts


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
        messages: the ``slack_messages`` counter (label ``outcome``: sent, updated, failed,
            retried). An alert message counts once per alert it carries.
        session: an aiohttp session to borrow (not closed by the sink); one of its own if None.
        client: a ready ``AsyncWebClient`` (tests); ``token``/``base_url``/``session`` then unused.
        retry_handlers: slack_sdk retry handlers; connection errors and 429 when None.
        min_interval: seconds between the end of one call and the start of the next (1 msg/s).
        backoff: waits between retries of a message that failed with ``RetryLater``
            (default 0.5 s doubling to 8 s: after an outage the queued alerts reach the channel
            at most 8 s after Slack is back; ``Retry-After`` is honoured above that).
        give_up_after: a message older than this many seconds is not retried again (counted failed).
        max_queue: messages waiting at most; ``send`` raises ``RetryLater`` beyond it.
        remember: messages whose ``ts`` is kept for deduplication (LRU).
        incidents: thread alerts of the same incident and coalesce queued replies.
        incident_hours: an incident's thread takes new alerts for this long after it started.
        on_posted: called with a record of each message posted or edited (see :meth:`restore`).
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
                 remember: int = 10_000, timeout: int = 10, incidents: bool = False,
                 incident_hours: float = 24.0, on_posted: OnPosted | None = None) -> None:
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
        self.backoff = backoff if backoff is not None else Backoff(cap=8.0)
        self.give_up_after = give_up_after
        self.max_queue = max_queue
        self.remember = remember
        self.timeout = timeout
        self.incidents = incidents
        self.incident_hours = incident_hours
        self.on_posted = on_posted
        self._token = token.get_secret_value() if isinstance(token, SecretStr) else token
        self._chat: SlackChat | None = None
        self._own_session: aiohttp.ClientSession | None = None
        self._queue: deque[str] = deque()
        self._queued: set[str] = set()
        self._messages: OrderedDict[str, _Message] = OrderedDict()
        self._by_alert: dict[str, str] = {}
        self._incident_of: OrderedDict[str, str] = OrderedDict()   # card id -> incident key
        self._incidents: dict[str, _Incident] = {}
        self._wakeup = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self._sender: asyncio.Task[None] | None = None
        self._closed = False
        self._rng = random.Random()
        self._notes = 0
        self.last_error: SinkError | None = None

    def __repr__(self) -> str:
        return (f"SlackAlertSink(channel={self.channel!r}, base_url={self.base_url!r}, "
                f"hold_mode={self.hold_mode!r}, token='***')")

    # -- the AlertSink interface ------------------------------------------------------------------

    async def send(self, alert: Alert, *, gan_last4: str | None = None) -> None:
        """Queue ``alert`` for posting (or its message for an edit) and return at once.

        Raises :class:`~sinks.base.SinkClosed` after :meth:`close`, and
        :class:`~sinks.base.RetryLater` when ``max_queue`` messages are already waiting.
        """
        self._check_open(alert.alert_id)
        four = gan_last4 if gan_last4 is not None else _lookup(self.gan_last4, alert)
        name = _lookup(self.location_name, alert.location_id)

        known = self._message_of(alert.alert_id)
        if known is not None:
            known.alerts = [alert if a.alert_id == alert.alert_id else a for a in known.alerts]
            known.gan[alert.alert_id] = four
            known.locations[alert.location_id] = name
            self._messages.move_to_end(known.key)
            self._changed(known)
            return
        self._check_room(alert.alert_id)
        msg = self._place(alert)
        msg.gan[alert.alert_id] = four
        msg.locations[alert.location_id] = name
        self._by_alert[alert.alert_id] = msg.key
        self._enqueue(msg)

    async def decide(self, alert_id: str, line: str, *, card_id: str | None = None) -> None:
        """Show ``line`` (who decided what, when, the outcome) on ``alert_id``'s message.

        An alert this sink never posted (a message older than its memory) gets the line as a
        note in the card's thread instead.
        """
        self._check_open(alert_id)
        msg = self._message_of(alert_id)
        if msg is None:
            await self.note(line, card_id=card_id, alert_id=alert_id)
            return
        lines = msg.decisions.setdefault(alert_id, [])
        if line not in lines:
            lines.append(line)
            self._changed(msg)

    async def note(self, text: str, *, card_id: str | None = None,
                   alert_id: str | None = None) -> None:
        """Post ``text`` as a reply in the thread of ``alert_id``'s message or ``card_id``'s
        incident (a top-level message when neither is known)."""
        self._check_open(alert_id)
        self._check_room(alert_id)
        parent: _Message | None = None
        msg = self._message_of(alert_id) if alert_id else None
        if msg is not None:
            parent = self._messages.get(msg.parent or msg.key)
        elif card_id is not None and card_id in self._incident_of:
            incident = self._incidents.get(self._incident_of[card_id])
            parent = self._messages.get(incident.parent) if incident else None
        self._notes += 1
        key = f"n:{time.time():.6f}:{self._notes}"
        note = _Message(key=key, channel=parent.channel if parent else self.channel, note=text,
                        parent=parent.key if parent else None,
                        incident=parent.incident if parent else None)
        self._messages[key] = note
        self._enqueue(note)

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
            self._queued.clear()
            self._idle.set()
            if self._own_session is not None:
                await self._own_session.close()
                self._own_session = None

    # -- what the worker and tests look at --------------------------------------------------------

    def posted(self, alert_id: str) -> Posted | None:
        """Where and when (``ts``) ``alert_id`` was posted, if this process knows."""
        msg = self._message_of(alert_id)
        if msg is None or msg.ts is None:
            return None
        return Posted(channel=msg.channel, ts=msg.ts, digest=msg.shown or "")

    def thread_of(self, alert_id: str) -> str | None:
        """The ``ts`` of the thread ``alert_id`` is in (its own message's, for a parent)."""
        msg = self._message_of(alert_id)
        if msg is None:
            return None
        return msg.thread_ts or msg.ts

    @property
    def queued(self) -> int:
        """Messages waiting to be posted or updated."""
        return len(self._queue)

    def restore(self, records: list[dict[str, Any]]) -> int:
        """Take back what ``on_posted`` recorded before a restart; returns messages restored."""
        restored = 0
        for record in records:
            try:
                msg = _Message(
                    key=record["key"], channel=record["channel"], ts=record["ts"],
                    thread_ts=record.get("thread_ts"), incident=record.get("incident"),
                    parent=record.get("parent"), note=record.get("note"),
                    alerts=[Alert.from_dict(a) for a in record.get("alerts") or []],
                    gan=dict(record.get("gan") or {}),
                    locations=dict(record.get("locations") or {}),
                    decisions={k: list(v) for k, v in (record.get("decisions") or {}).items()},
                    created=float(record.get("created") or time.time()))
            except (KeyError, TypeError, ValueError):
                log.warning("ignoring an unreadable Slack message record: %r", record)
                continue
            msg.shown = _digest(self._render(msg))
            old = self._messages.get(msg.key)
            if old is not None and old.key in self._queued:
                continue  # this process already has newer work for it
            self._messages[msg.key] = msg
            for alert in msg.alerts:
                self._by_alert[alert.alert_id] = msg.key
            if msg.incident:
                incident = self._incidents.get(msg.incident)
                if incident is None and msg.parent is None:
                    incident = self._incidents[msg.incident] = _Incident(
                        key=msg.incident, parent=msg.key, started=msg.created)
                for alert in msg.alerts:
                    for card in (alert.card_id, *alert.related_card_ids):
                        self._incident_of[card] = msg.incident
            restored += 1
        self._forget_old()
        return restored

    # -- placing alerts in messages ---------------------------------------------------------------

    def _check_open(self, alert_id: str | None) -> None:
        if self._closed:
            raise SinkClosed("send after close", sink=SINK, alert_id=alert_id)

    def _check_room(self, alert_id: str | None) -> None:
        if len(self._queue) >= self.max_queue:
            raise RetryLater(f"{len(self._queue)} Slack messages already waiting", sink=SINK,
                             alert_id=alert_id,
                             retry_after=len(self._queue) * max(self.min_interval, 0.1))

    def _message_of(self, alert_id: str | None) -> _Message | None:
        key = self._by_alert.get(alert_id or "")
        return self._messages.get(key) if key is not None else None

    def _place(self, alert: Alert) -> _Message:
        """The message ``alert`` goes in: a new top-level one, or a reply in its incident."""
        if not self.incidents:
            return self._new_message(alert, incident=None, parent=None)
        cards = [alert.card_id, *alert.related_card_ids]
        touched: list[_Incident] = []
        for card in cards:
            key = self._incident_of.get(card)
            candidate = self._incidents.get(key) if key else None
            if (candidate is not None and candidate not in touched
                    and time.time() - candidate.started < self.incident_hours * 3600):
                touched.append(candidate)
        if not touched:
            key = f"i:{alert.alert_id}"
            msg = self._new_message(alert, incident=key, parent=None)
            incident = self._incidents[key] = _Incident(key=key, parent=msg.key,
                                                        started=time.time())
        else:
            # The alert links incidents (alerts of one batch arrive out of order from several
            # partitions): keep the one already in Slack, fold in those not posted yet.
            touched.sort(key=lambda i: (self._messages.get(i.parent) is None
                                        or self._messages[i.parent].ts is None, i.started))
            incident = touched[0]
            for other in touched[1:]:
                self._absorb(incident, other)
            msg = self._reply(incident, alert)
        for card in cards:
            self._incident_of[card] = incident.key
            self._incident_of.move_to_end(card)
        return msg

    def _reply(self, incident: _Incident, alert: Alert) -> _Message:
        """``alert`` as a reply in ``incident``: into the reply still waiting, or a new one."""
        reply = self._messages.get(incident.open_reply or "")
        if (reply is not None and reply.ts is None and reply.key in self._queued
                and len(reply.alerts) < MAX_ALERTS_PER_MESSAGE):
            reply.alerts.append(alert)   # coalesce into the reply still waiting
            return reply
        msg = self._new_message(alert, incident=incident.key, parent=incident.parent)
        incident.open_reply = msg.key
        return msg

    def _absorb(self, into: _Incident, other: _Incident) -> None:
        """Move ``other``'s messages into ``into``'s thread if none of them is in Slack yet."""
        members = [m for m in self._messages.values() if m.incident == other.key]
        if any(m.ts is not None for m in members) or any(m.note is not None for m in members):
            return
        for m in members:
            if m.key in self._queued:
                self._queued.discard(m.key)
                with contextlib.suppress(ValueError):
                    self._queue.remove(m.key)
            del self._messages[m.key]
            for moved in m.alerts:
                target = self._reply(into, moved)
                target.gan[moved.alert_id] = m.gan.get(moved.alert_id)
                target.locations.update(m.locations)
                self._by_alert[moved.alert_id] = target.key
                if target.key not in self._queued:
                    self._enqueue(target)
        for card, key in list(self._incident_of.items()):
            if key == other.key:
                self._incident_of[card] = into.key
        self._incidents.pop(other.key, None)

    def _new_message(self, alert: Alert, *, incident: str | None,
                     parent: str | None) -> _Message:
        msg = _Message(key=f"a:{alert.alert_id}", channel=self.channel, alerts=[alert],
                       incident=incident, parent=parent)
        self._messages[msg.key] = msg
        return msg

    def _render(self, msg: _Message) -> SlackMessage:
        if msg.note is not None:
            return note_message(msg.note)
        if len(msg.alerts) == 1:
            alert = msg.alerts[0]
            return alert_message(alert, gan_last4=msg.gan.get(alert.alert_id),
                                 currency=self.currency, hold_mode=self.hold_mode,
                                 location_name=msg.locations.get(alert.location_id),
                                 decisions=msg.decisions.get(alert.alert_id))
        return batch_message(msg.alerts, gan_last4=msg.gan, currency=self.currency,
                             hold_mode=self.hold_mode, decisions=msg.decisions)

    def _changed(self, msg: _Message) -> None:
        """Queue an edit of ``msg`` if what it would show differs from what Slack shows."""
        if msg.ts is None:
            if msg.key not in self._queued:
                self._enqueue(msg)  # an earlier attempt failed for good: try once more
            return
        if _digest(self._render(msg)) == msg.shown:
            log.debug("message %s unchanged; nothing to do", msg.key)
            return
        self._enqueue(msg)

    def _enqueue(self, msg: _Message) -> None:
        if msg.key in self._queued:
            return
        msg.enqueued_at = asyncio.get_running_loop().time()
        msg.attempt = 0
        self._queue.append(msg.key)
        self._queued.add(msg.key)
        self._idle.clear()
        self._wakeup.set()
        self._ensure_sender()

    def _forget_old(self) -> None:
        while len(self._messages) > self.remember:
            key, msg = next(iter(self._messages.items()))
            if key in self._queued:
                self._messages.move_to_end(key)
                if all(k in self._queued for k in self._messages):
                    return
                continue
            del self._messages[key]
            for alert in msg.alerts:
                if self._by_alert.get(alert.alert_id) == key:
                    del self._by_alert[alert.alert_id]
        while len(self._incident_of) > self.remember * 4:
            self._incident_of.popitem(last=False)
        live = set(self._incident_of.values())
        for key in [k for k in self._incidents if k not in live]:
            del self._incidents[key]

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
            msg = self._messages[self._queue[0]]
            ident = msg.alerts[0].alert_id if msg.alerts else None
            wait = self.min_interval
            try:
                called = await self._deliver(msg)
                if not called:
                    wait = 0.0
            except RetryLater as exc:
                msg.attempt += 1
                self.last_error = exc
                if loop.time() - msg.enqueued_at >= self.give_up_after:
                    log.error("giving up on Slack message for alert %s after %d attempts: %s",
                              ident, msg.attempt, exc)
                    self._done(msg, "failed")
                else:
                    wait = max(wait, self.backoff.delay(msg.attempt, exc.retry_after, self._rng))
                    log.warning("Slack message for alert %s: %s; retry %d in %.2fs",
                                ident, exc, msg.attempt, wait)
                    self._count("retried")
            except PermanentFailure as exc:
                self.last_error = exc
                log.error("Slack message for alert %s failed: %s", ident, exc)
                self._done(msg, "failed")
            except Exception as exc:  # never let one message stop the sender
                self.last_error = exc if isinstance(exc, SinkError) else SinkError(
                    f"unexpected error: {type(exc).__name__}: {exc}", sink=SINK, alert_id=ident)
                log.exception("Slack message for alert %s failed unexpectedly", ident)
                self._done(msg, "failed")
            next_at = loop.time() + wait

    async def _deliver(self, msg: _Message) -> bool:
        """Post or edit ``msg``; False when there was nothing to send (no call was made)."""
        message = self._render(msg)
        digest = _digest(message)
        ident = msg.alerts[0].alert_id if msg.alerts else msg.key
        if msg.ts is not None and digest == msg.shown:
            self._done(msg, None)
            return False
        chat = self._chat_client()
        if msg.ts is None:
            parent = self._messages.get(msg.parent or "")
            thread_ts = (parent.thread_ts or parent.ts) if parent is not None else None
            if parent is not None and thread_ts is None and parent.key in self._queued:
                # The thread's first message is not out yet (it failed and waits for a retry):
                # go behind it rather than start a second thread.
                self._queue.rotate(-1)
                return False
            msg.channel, msg.ts = await chat.post(msg.channel, message, alert_id=ident,
                                                  thread_ts=thread_ts)
            msg.thread_ts = thread_ts
            outcome = "sent"
            incident = self._incidents.get(msg.incident or "")
            if incident is not None and incident.open_reply == msg.key:
                incident.open_reply = None  # posted: later alerts go in a new reply
        else:
            await chat.update(msg.channel, msg.ts, message, alert_id=ident)
            outcome = "updated"
        msg.shown = digest
        await self._record(msg)
        if _digest(self._render(msg)) != digest:  # changed while on the wire: edit again
            self._count(outcome, max(1, len(msg.alerts)) if outcome == "sent" else 1)
            msg.attempt = 0
            return True
        self._done(msg, outcome)
        return True

    async def _record(self, msg: _Message) -> None:
        if self.on_posted is None or msg.ts is None:
            return
        record = {"key": msg.key, "channel": msg.channel, "ts": msg.ts,
                  "thread_ts": msg.thread_ts, "incident": msg.incident, "parent": msg.parent,
                  "note": msg.note, "alerts": [a.to_dict() for a in msg.alerts],
                  "gan": msg.gan, "locations": msg.locations, "decisions": msg.decisions,
                  "created": msg.created}
        try:
            await self.on_posted(record)
        except Exception:  # the message is out; losing the record only risks a duplicate later
            log.exception("could not record Slack message %s", msg.key)

    def _done(self, msg: _Message, outcome: str | None) -> None:
        if self._queue and self._queue[0] == msg.key:
            self._queue.popleft()
        else:
            with contextlib.suppress(ValueError):
                self._queue.remove(msg.key)
        self._queued.discard(msg.key)
        if outcome == "sent":
            self._count(outcome, max(1, len(msg.alerts)))
        elif outcome is not None:
            self._count(outcome)
        self._forget_old()
