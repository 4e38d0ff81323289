"""The webhook bridge: authenticates POS webhooks and writes them to Kafka before answering.

``POST /webhooks/square``:
- 401 when the signature is missing or wrong (nothing is written);
- 413 for bodies over 1 MiB;
- 400 with a JSON error when the body is authentic but malformed (the body goes to the
  dead-letter topic with the reason);
- 200 only after Kafka acknowledged both the raw body (``giftcard.webhooks.raw``) and the
  canonical event (``giftcard.transactions``, keyed by card id);
- 503 when Kafka cannot take the write, so Square retries;
- 200 without a second write for an event id already written; a retry of a delivery answered
  503 writes only what was not acknowledged, and waits for what is still on its way; a record
  whose write failed is looked for on its partition first, in case it landed anyway
  (``streams/readback.py``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, OutOfOrderSequenceNumber, ProducerFenced
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from detectors.events import Event, InvalidEvent, format_time
from detectors.square import normalize_square, salted_hasher
from sinks.metrics import BridgeMetrics, bridge_metrics
from streams import topics
from streams.admin import ensure_topics
from streams.deadletter import deadletter_headers
from streams.logs import configure_logging
from streams.partitioning import murmur2, partition_of
from streams.producers import TrackingProducer
from streams.readback import ReadBack
from streams.runtime import tune_gc, use_uvloop
from streams.settings import Settings
from streams.signatures import SQUARE_SIGNATURE_HEADER, SquareVerifier
from streams.slack_actions import SlackActions

log = logging.getLogger("giftguard.bridge")

MAX_BODY_BYTES = 1024 * 1024
#: Errors after which an idempotent producer refuses every write until it is replaced.
_FATAL_TO_PRODUCER = (OutOfOrderSequenceNumber, InvalidProducerEpoch, ProducerFenced)
#: Answer well inside Square's 10 s delivery window, so a slow Kafka gets a retry, not a timeout.
KAFKA_WRITE_TIMEOUT = 8.0
#: The canonical event's fields in :meth:`Event.to_dict` order (``ts`` is derived, not sent).
_EVENT_FIELDS = tuple(f.name for f in fields(Event) if f.name != "ts")


def canonical_json(event: Event) -> bytes:
    """``event.to_json()`` without ``dataclasses.asdict`` (which deep-copies every field and
    was a tenth of the bridge's CPU): the same keys, order and bytes.

    >>> from dataclasses import replace
    >>> e = Event("square:a1", "redeem", "gc1", "L1", 1500, "USD", "2026-11-21T10:00:00Z")
    >>> full = replace(e, **{name: 1 if name.endswith("_minor") else f"x-{name}"
    ...                      for name in _EVENT_FIELDS[7:]})
    >>> all(canonical_json(x) == x.to_json() for x in (e, full, replace(full, status=None)))
    True
    """
    return orjson.dumps({name: value for name in _EVENT_FIELDS
                         if (value := getattr(event, name)) is not None})


class RecentIds:
    """A bounded set of recently written provider event ids (least recently seen evicted)."""

    def __init__(self, capacity: int = 200_000) -> None:
        self.capacity = capacity
        self._ids: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, event_id: str) -> bool:
        return event_id in self._ids

    def add(self, event_id: str) -> None:
        """Remember ``event_id``; forget the oldest when full."""
        self._ids[event_id] = None
        self._ids.move_to_end(event_id)
        if len(self._ids) > self.capacity:
            self._ids.popitem(last=False)


class _Unsettled:
    """The two record futures (raw, canonical) of a delivery answered 503 while one of them was
    still pending or had failed, and when the first of them was sent. The sender's retry reuses
    them: a pending record is awaited, an acknowledged one is not written again, and a failed
    one is written again only if it is not on its partition since then (it may have landed
    although its write failed), so no record lands a second time."""

    __slots__ = ("raw", "canon", "sent_ms")

    def __init__(self, raw: asyncio.Future[Any] | None, canon: asyncio.Future[Any] | None,
                 sent_ms: int) -> None:
        self.raw, self.canon, self.sent_ms = raw, canon, sent_ms

    @staticmethod
    def reusable(future: asyncio.Future[Any] | None) -> asyncio.Future[Any] | None:
        """``future`` unless it failed (then the record must be written again)."""
        if future is None or (future.done() and _failure(future) is not None):
            return None
        return future


def _both_acked(loop: asyncio.AbstractEventLoop, first: asyncio.Future[Any],
                second: asyncio.Future[Any]) -> asyncio.Future[None]:
    """A future done when both record futures are (the first error, if any, is its error).

    Ours alone, so a timeout can cancel it without touching the producer's futures (what
    ``shield(gather(...))`` gives, in one future instead of three).
    """
    waiter: asyncio.Future[None] = loop.create_future()

    def settled(future: asyncio.Future[Any]) -> None:
        if waiter.done():
            _failure(future)  # (marks its exception retrieved)
            return
        exc = _failure(future)
        if exc is None and first.done() and second.done():
            # Both may have settled before either callback ran: the other's error counts too.
            exc = _failure(second if future is first else first)
            if exc is None:
                waiter.set_result(None)
                return
        if exc is not None:
            waiter.set_exception(exc)

    first.add_done_callback(settled)
    second.add_done_callback(settled)
    return waiter


def _landed(loop: asyncio.AbstractEventLoop, provider_id: str, topic: str) -> asyncio.Future[Any]:
    """An acknowledged record future for a record found on its topic (not written again)."""
    log.info("the failed write of %s to %s had landed; not written again", provider_id, topic)
    future: asyncio.Future[Any] = loop.create_future()
    future.set_result(None)
    return future


def _failure(future: asyncio.Future[Any]) -> BaseException | None:
    """A done record future's error (a cancellation is one too), or None."""
    if future.cancelled():
        return RuntimeError("the Kafka write was cancelled")
    return future.exception()


class _Deadline:
    """Cancel the current task after ``delay`` seconds: ``asyncio.timeout`` without its
    context-manager bookkeeping, which cost as much per request as both HMAC and JSON parsing.

    After catching ``CancelledError``, :meth:`expired` tells our cancellation (the deadline,
    to be answered like a timeout) from anyone else's (to be re-raised); ``disarm`` in
    ``finally``.
    """

    __slots__ = ("_task", "_cancelling", "_fired", "_handle")

    def __init__(self, loop: asyncio.AbstractEventLoop, delay: float) -> None:
        task = asyncio.current_task(loop)
        assert task is not None
        self._task = task
        self._cancelling = task.cancelling()
        self._fired = False
        self._handle = loop.call_later(delay, self._fire)

    def _fire(self) -> None:
        self._fired = True
        self._task.cancel()

    def expired(self) -> bool:
        """True when the deadline cancelled the task, and nothing else did too."""
        return self._fired and self._task.uncancel() <= self._cancelling

    def disarm(self) -> None:
        self._handle.cancel()


_JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def _json(payload: dict[str, Any], status: int = 200) -> web.Response:
    """What ``web.json_response`` answers (same content type), serialized by orjson, with
    headers copied from a ready-made set rather than built from a content type and charset."""
    return web.Response(body=orjson.dumps(payload), status=status, headers=_JSON_HEADERS)


def _error(status: int, message: str) -> web.Response:
    return _json({"error": message}, status)


class Bridge:
    """The bridge's request handlers around one idempotent Kafka producer."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None,
                 producer_factory: Callable[[], AIOKafkaProducer] | None = None,
                 readback: ReadBack | None = None) -> None:
        settings.require("square_webhook_signature_key", "square_webhook_url",
                         why="the bridge needs them to verify Square's signatures")
        self.settings = settings
        self._url = settings.square_webhook_url or ""
        self._verifier = SquareVerifier(
            settings.square_webhook_signature_key.get_secret_value(),  # type: ignore[union-attr]
            self._url)
        self._url_header = self._url.encode()
        self._hash = salted_hasher(settings.giftguard_hash_salt.get_secret_value())
        self.registry = registry or CollectorRegistry()
        self.metrics: BridgeMetrics = bridge_metrics(self.registry)
        # Label children resolved once, not per request.
        self._answered: dict[int, Any] = {}
        self._square_seconds = self.metrics.request_seconds.labels("square")
        self._square_duplicates = self.metrics.duplicates.labels("square")
        #: ``received_at`` of the current millisecond (formatting a time costs more than a hash).
        self._stamp_ms = -1
        self._stamp = ""
        self._producer_factory = producer_factory or self._default_producer
        self.producer: AIOKafkaProducer | None = None
        self.recent = RecentIds()
        #: Deliveries answered 503 with a record pending or failed, oldest first (bounded).
        self._unsettled: OrderedDict[str, _Unsettled] = OrderedDict()
        self._readback = readback or ReadBack(settings.bootstrap_servers, KAFKA_WRITE_TIMEOUT)
        #: murmur2 of card ids (cards come back; event ids do not), bounded.
        self._card_hashes: dict[bytes, int] = {}
        #: False from a failed Kafka write until the next one succeeds (drives /healthz).
        self._last_write_ok = True
        #: Event ids being written now; a future only once a concurrent duplicate waits on one.
        self._in_flight: dict[str, asyncio.Future[web.Response] | None] = {}
        self._connector: asyncio.Task[None] | None = None
        secret = settings.slack_signing_secret
        self.slack_actions = SlackActions(
            secret.get_secret_value() if secret is not None else None, lambda: self.producer,
            on_answer=lambda status: self.metrics.requests.labels("slack", str(status)).inc())

    def _default_producer(self) -> AIOKafkaProducer:
        return TrackingProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_idempotence=True, acks="all", linger_ms=1, compression_type=None,
            request_timeout_ms=int(KAFKA_WRITE_TIMEOUT * 1000))

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, app: web.Application | None = None) -> None:
        """Connect to Kafka in the background; requests get 503 until it is reachable."""
        self._connector = asyncio.create_task(self._connect())

    async def _connect(self) -> None:
        delay = 0.5
        while True:
            producer = self._producer_factory()
            try:
                await ensure_topics(self.settings.bootstrap_servers,
                                    self.settings.giftguard_partitions, timeout=5)
                await producer.start()
                self.producer = producer
                log.info("connected to Kafka at %s", self.settings.kafka_bootstrap_servers)
                return
            except Exception as exc:
                await producer.stop()
                log.warning("Kafka not reachable (%s); retrying in %.1fs", exc, delay)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)

    async def stop(self, app: web.Application | None = None) -> None:
        """Flush and close the producer."""
        if self._connector is not None:
            self._connector.cancel()
        if self.producer is not None:
            await self.producer.stop()
        await self._readback.stop()

    def web_app(self) -> web.Application:
        """The aiohttp application with every route."""
        app = web.Application(client_max_size=MAX_BODY_BYTES)
        app.router.add_post("/webhooks/square", self.square_webhook)
        app.router.add_post("/slack/actions", self.slack_actions.handle)
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        app.on_startup.append(self.start)
        app.on_cleanup.append(self.stop)
        return app

    # -- routes ----------------------------------------------------------------------------

    async def healthz(self, request: web.Request) -> web.Response:
        """200 when the bridge can write to Kafka, 503 otherwise."""
        producer = self.producer
        if producer is not None and not self._last_write_ok:
            # The last write failed: ask the cluster for metadata before calling it healthy, so
            # a probe (not only a webhook) notices Kafka is back.
            try:
                self._last_write_ok = bool(await asyncio.wait_for(
                    producer.client.force_metadata_update(), 2.0))
            except Exception:
                pass
        ready = producer is not None and self._last_write_ok
        return web.json_response({"status": "ok" if ready else "kafka unavailable",
                                  "kafka": ready}, status=200 if ready else 503)

    async def metrics_page(self, request: web.Request) -> web.Response:
        """Prometheus text exposition."""
        return web.Response(body=generate_latest(self.registry),
                            headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def square_webhook(self, request: web.Request) -> web.Response:
        """Handle one Square webhook delivery."""
        started = time.perf_counter()
        response = await self._square(request)
        status = response.status
        answered = self._answered.get(status)
        if answered is None:
            answered = self._answered[status] = self.metrics.requests.labels("square", str(status))
        answered.inc()
        self._square_seconds.observe(time.perf_counter() - started)
        return response

    def _received_at(self) -> str:
        now = time.time()
        ms = int(now * 1000)
        if ms != self._stamp_ms:
            self._stamp_ms = ms
            self._stamp = format_time(now)
        return self._stamp

    async def _square(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _error(413, f"body over {MAX_BODY_BYTES} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {MAX_BODY_BYTES} bytes")
        signature = request.headers.get(SQUARE_SIGNATURE_HEADER)
        if not self._verifier.verify(body, signature):
            return _error(401, "missing or invalid x-square-hmacsha256-signature")

        try:
            envelope = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return await self._reject(body, "malformed_json", f"body is not JSON: {exc}")
        provider_id = envelope.get("event_id") if isinstance(envelope, dict) else None
        if not isinstance(provider_id, str) or not provider_id:
            return await self._reject(body, "invalid_envelope", "event_id is missing")
        if provider_id in self.recent:
            self._square_duplicates.inc()
            return _json({"status": "duplicate", "event_id": provider_id})
        try:
            event = normalize_square(envelope, self._hash, received_at=self._received_at())
        except InvalidEvent as exc:
            return await self._reject(body, "invalid_event", str(exc))
        except Exception as exc:  # a shape the normalizer did not expect: still the sender's
            return await self._reject(body, "invalid_event",
                                      f"malformed envelope ({type(exc).__name__}: {exc})")

        in_flight = self._in_flight
        if provider_id in in_flight:  # the same delivery is being written now: share its fate
            pending = in_flight[provider_id]
            if pending is None:
                pending = in_flight[provider_id] = asyncio.get_running_loop().create_future()
            shared = await asyncio.shield(pending)  # (a response object can be sent only once)
            return web.Response(body=shared.body, status=shared.status, headers=_JSON_HEADERS)
        in_flight[provider_id] = None
        response: web.Response | None = None
        try:
            response = await self._write(provider_id, body, signature or "", event.card_id,
                                         canonical_json(event), event.event_id)
            return response
        finally:
            waiter = in_flight.pop(provider_id)
            if waiter is not None:
                waiter.set_result(response if response is not None
                                  else _error(503, "write interrupted"))

    async def _write(self, provider_id: str, body: bytes, signature: str, card_id: str,
                     canonical: bytes, event_id: str) -> web.Response:
        producer = self.producer
        if producer is None:
            return _error(503, "Kafka is not reachable; retry later")
        raw_headers = [(SQUARE_SIGNATURE_HEADER, signature.encode()),
                       ("notification-url", self._url_header), ("provider", b"square")]
        raw_key = provider_id.encode()
        card_key = card_id.encode()
        cluster = producer.client.cluster
        raw_partition = self._partition(cluster, topics.WEBHOOKS_RAW, murmur2(raw_key))
        card_hash = self._card_hashes.get(card_key)
        if card_hash is None:
            if len(self._card_hashes) >= 50_000:  # (a few MB at most)
                self._card_hashes.clear()
            card_hash = self._card_hashes[card_key] = murmur2(card_key)
        card_partition = self._partition(cluster, topics.TRANSACTIONS, card_hash)
        loop = asyncio.get_running_loop()
        raw = canon = None
        earlier = self._unsettled.pop(provider_id, None) if self._unsettled else None
        if earlier is None:
            # (the record's own timestamp is taken after this, by the same clock; a margin for
            # the clock stepping back)
            sent_ms = int(time.time() * 1000) - 1000
        else:  # an earlier delivery's records: written, on their way, or failed
            sent_ms = earlier.sent_ms
            raw, canon = _Unsettled.reusable(earlier.raw), _Unsettled.reusable(earlier.canon)
            try:
                if raw is None and earlier.raw is not None and await self._readback.landed(
                        topics.WEBHOOKS_RAW, raw_partition, sent_ms, raw_key):
                    raw = _landed(loop, provider_id, topics.WEBHOOKS_RAW)
                if canon is None and earlier.canon is not None and await self._readback.landed(
                        topics.TRANSACTIONS, card_partition, sent_ms, event_id.encode()):
                    canon = _landed(loop, provider_id, topics.TRANSACTIONS)
            except Exception as exc:
                log.warning("could not read back an earlier failed write: %r", exc,
                            extra={"event_id": event_id})
                self._remember_unsettled(provider_id, earlier.raw, earlier.canon, sent_ms)
                self._last_write_ok = False
                return _error(503, "Kafka did not say whether an earlier write landed; "
                                   "retry later")
        failure: Exception | None = None
        # At most KAFKA_WRITE_TIMEOUT for queueing both records and their acknowledgements.
        deadline = _Deadline(loop, KAFKA_WRITE_TIMEOUT)
        try:
            # Both records are queued before either acknowledgement is awaited, so they travel
            # in the same produce request.
            if raw is None:
                raw = await producer.send(topics.WEBHOOKS_RAW, body, key=raw_key,
                                          partition=raw_partition, headers=raw_headers)
            if canon is None:
                canon = await producer.send(topics.TRANSACTIONS, canonical, key=card_key,
                                            partition=card_partition)
            await _both_acked(loop, raw, canon)
        except asyncio.CancelledError:
            if not deadline.expired():
                raise
            failure = TimeoutError(f"not acknowledged within {KAFKA_WRITE_TIMEOUT:g} s")
            if raw is not None and canon is not None:
                # Acknowledged after we gave up: still written, so the sender's retry is
                # answered without a second write.
                _both_acked(loop, raw, canon).add_done_callback(
                    lambda f: None if f.exception() else self.recent.add(provider_id))
        except Exception as exc:
            failure = exc
        finally:
            deadline.disarm()
        if failure is not None:
            log.warning("Kafka write failed: %r", failure, extra={"event_id": event_id})
            self._remember_unsettled(provider_id, raw, canon, sent_ms)
            if isinstance(failure, _FATAL_TO_PRODUCER) and self.producer is producer:
                # The idempotent producer's sequence is broken (e.g. after a broker restart):
                # it will refuse every later write, so start a new one.
                self.producer = None
                asyncio.ensure_future(producer.stop())
                self._connector = asyncio.create_task(self._connect())
            self._last_write_ok = False
            return _error(503, "Kafka did not acknowledge the write; retry later")
        self._last_write_ok = True
        self.recent.add(provider_id)
        return _json({"status": "accepted", "event_id": event_id})

    def _remember_unsettled(self, provider_id: str, raw: asyncio.Future[Any] | None,
                            canon: asyncio.Future[Any] | None, sent_ms: int) -> None:
        """Keep a failed delivery's records for its retry (see :class:`_Unsettled`)."""
        if raw is None and canon is None:
            return
        unsettled = self._unsettled
        unsettled[provider_id] = _Unsettled(raw, canon, sent_ms)
        if len(unsettled) > 100_000:  # a long outage at full rate; the oldest are forgotten
            unsettled.popitem(last=False)

    @staticmethod
    def _partition(cluster: Any, topic: str, key_hash: int) -> int | None:
        """The partition aiokafka's default partitioner picks for a key with this murmur2
        (``None`` before the topic's metadata is known: then the producer picks it)."""
        partitions = cluster.partitions_for_topic(topic)
        if not partitions:
            return None
        candidates = list(partitions)
        return candidates[partition_of(key_hash, len(candidates))]

    async def _reject(self, body: bytes, reason: str, message: str) -> web.Response:
        """Dead-letter an authentic but malformed body and answer 400 (503 if Kafka is down)."""
        producer = self.producer
        if producer is None:
            return _error(503, "Kafka is not reachable; retry later")
        try:
            await asyncio.wait_for(producer.send_and_wait(
                topics.DEADLETTER, body,
                headers=deadletter_headers(reason, message, "bridge", topic="webhooks/square")),
                KAFKA_WRITE_TIMEOUT)
        except Exception as exc:
            log.warning("dead-letter write failed: %r", exc)
            return _error(503, "Kafka did not acknowledge the write; retry later")
        self.metrics.deadletters.labels(reason, "bridge").inc()
        return _error(400, message)


def run(settings: Settings, host: str, port: int) -> None:
    """``giftguard bridge``: serve until interrupted."""
    configure_logging(os.environ.get("GIFTGUARD_LOG_LEVEL", "INFO").upper())
    use_uvloop()
    bridge = Bridge(settings)
    tune_gc()
    print(f"GiftGuard bridge on http://{host}:{port} (POST /webhooks/square, /healthz, /metrics)",
          flush=True)
    web.run_app(bridge.web_app(), host=host, port=port, print=None,
                access_log=None, handle_signals=True)
