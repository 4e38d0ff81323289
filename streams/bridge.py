"""The webhook bridge: authenticates POS webhooks and writes them to Kafka before answering.

``POST /webhooks/square``:
- 401 when the signature is missing or wrong (nothing is written);
- 413 for bodies over 1 MiB;
- 400 with a JSON error when the body is authentic but malformed (the body goes to the
  dead-letter topic with the reason);
- 200 only after Kafka acknowledged both the raw body (``giftcard.webhooks.raw``) and the
  canonical event (``giftcard.transactions``, keyed by card id);
- 503 when Kafka cannot take the write, so Square retries;
- 200 without a second write for an event id already written.
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

import orjson
from aiohttp import web
from aiokafka import AIOKafkaProducer
from aiokafka.errors import InvalidProducerEpoch, OutOfOrderSequenceNumber, ProducerFenced
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from detectors.events import InvalidEvent, format_time
from detectors.square import normalize_square, salted_hasher
from sinks.metrics import BridgeMetrics, bridge_metrics
from streams import topics
from streams.admin import ensure_topics
from streams.deadletter import deadletter_headers
from streams.logs import configure_logging
from streams.settings import Settings
from streams.signatures import SQUARE_SIGNATURE_HEADER, verify_square
from streams.slack_actions import SlackActions

log = logging.getLogger("giftguard.bridge")

MAX_BODY_BYTES = 1024 * 1024
#: Errors after which an idempotent producer refuses every write until it is replaced.
_FATAL_TO_PRODUCER = (OutOfOrderSequenceNumber, InvalidProducerEpoch, ProducerFenced)
#: Answer well inside Square's 10 s delivery window, so a slow Kafka gets a retry, not a timeout.
KAFKA_WRITE_TIMEOUT = 8.0


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


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"error": message}, status=status)


class Bridge:
    """The bridge's request handlers around one idempotent Kafka producer."""

    def __init__(self, settings: Settings, registry: CollectorRegistry | None = None,
                 producer_factory: Callable[[], AIOKafkaProducer] | None = None) -> None:
        settings.require("square_webhook_signature_key", "square_webhook_url",
                         why="the bridge needs them to verify Square's signatures")
        self.settings = settings
        self._key = settings.square_webhook_signature_key.get_secret_value()  # type: ignore[union-attr]
        self._url = settings.square_webhook_url or ""
        self._hash = salted_hasher(settings.giftguard_hash_salt.get_secret_value())
        self.registry = registry or CollectorRegistry()
        self.metrics: BridgeMetrics = bridge_metrics(self.registry)
        self._producer_factory = producer_factory or self._default_producer
        self.producer: AIOKafkaProducer | None = None
        self.recent = RecentIds()
        #: False from a failed Kafka write until the next one succeeds (drives /healthz).
        self._last_write_ok = True
        self._in_flight: dict[str, asyncio.Future[web.Response]] = {}
        self._connector: asyncio.Task[None] | None = None
        secret = settings.slack_signing_secret
        self.slack_actions = SlackActions(
            secret.get_secret_value() if secret is not None else None, lambda: self.producer,
            on_answer=lambda status: self.metrics.requests.labels("slack", str(status)).inc())

    def _default_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.bootstrap_servers,
            enable_idempotence=True, acks="all", linger_ms=1,
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
        self.metrics.requests.labels("square", str(response.status)).inc()
        self.metrics.request_seconds.labels("square").observe(time.perf_counter() - started)
        return response

    async def _square(self, request: web.Request) -> web.Response:
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return _error(413, f"body over {MAX_BODY_BYTES} bytes")
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return _error(413, f"body over {MAX_BODY_BYTES} bytes")
        signature = request.headers.get(SQUARE_SIGNATURE_HEADER)
        if not verify_square(self._key, self._url, body, signature):
            return _error(401, "missing or invalid x-square-hmacsha256-signature")

        try:
            envelope = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return await self._reject(body, "malformed_json", f"body is not JSON: {exc}")
        provider_id = envelope.get("event_id") if isinstance(envelope, dict) else None
        if not isinstance(provider_id, str) or not provider_id:
            return await self._reject(body, "invalid_envelope", "event_id is missing")
        if provider_id in self.recent:
            self.metrics.duplicates.labels("square").inc()
            return web.json_response({"status": "duplicate", "event_id": provider_id})
        try:
            event = normalize_square(envelope, self._hash, received_at=format_time(time.time()))
        except InvalidEvent as exc:
            return await self._reject(body, "invalid_event", str(exc))
        except Exception as exc:  # a shape the normalizer did not expect: still the sender's
            return await self._reject(body, "invalid_event",
                                      f"malformed envelope ({type(exc).__name__}: {exc})")

        pending = self._in_flight.get(provider_id)
        if pending is not None:  # the same delivery is being written right now: share its fate
            shared = await asyncio.shield(pending)  # (a response object can be sent only once)
            return web.Response(body=shared.body, status=shared.status,
                                content_type=shared.content_type)
        future: asyncio.Future[web.Response] = asyncio.get_running_loop().create_future()
        self._in_flight[provider_id] = future
        try:
            response = await self._write(
                provider_id, body, signature or "", event.card_id, event.to_json(), event.event_id)
            future.set_result(response)
            return response
        finally:
            if not future.done():
                future.set_result(_error(503, "write interrupted"))
            del self._in_flight[provider_id]

    async def _write(self, provider_id: str, body: bytes, signature: str, card_id: str,
                     canonical: bytes, event_id: str) -> web.Response:
        producer = self.producer
        if producer is None:
            return _error(503, "Kafka is not reachable; retry later")
        raw_headers = [(SQUARE_SIGNATURE_HEADER, signature.encode()),
                       ("notification-url", self._url.encode()), ("provider", b"square")]
        async def produce() -> None:
            raw = await producer.send(topics.WEBHOOKS_RAW, body, key=provider_id.encode(),
                                      headers=raw_headers)
            canon = await producer.send(topics.TRANSACTIONS, canonical, key=card_id.encode())
            await asyncio.gather(raw, canon)

        try:
            await self._acked(produce(), provider_id)
        except Exception as exc:
            log.warning("Kafka write failed: %r", exc, extra={"event_id": event_id})
            if isinstance(exc, _FATAL_TO_PRODUCER) and self.producer is producer:
                # The idempotent producer's sequence is broken (e.g. after a broker restart):
                # it will refuse every later write, so start a new one.
                self.producer = None
                asyncio.ensure_future(producer.stop())
                self._connector = asyncio.create_task(self._connect())
            self._last_write_ok = False
            return _error(503, "Kafka did not acknowledge the write; retry later")
        self._last_write_ok = True
        self.recent.add(provider_id)
        return web.json_response({"status": "accepted", "event_id": event_id})

    async def _acked(self, writes: Awaitable[None], provider_id: str) -> None:
        """Wait for the acknowledgements, at most ``KAFKA_WRITE_TIMEOUT`` seconds.

        A write that is acknowledged after we gave up still marks the id as written, so the
        sender's retry is answered without a second write.
        """
        task = asyncio.ensure_future(writes)
        try:
            await asyncio.wait_for(asyncio.shield(task), KAFKA_WRITE_TIMEOUT)
        except TimeoutError:
            task.add_done_callback(
                lambda t: None if t.cancelled() or t.exception() else self.recent.add(provider_id))
            raise

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
    bridge = Bridge(settings)
    print(f"GiftGuard bridge on http://{host}:{port} (POST /webhooks/square, /healthz, /metrics)",
          flush=True)
    web.run_app(bridge.web_app(), host=host, port=port, print=None,
                access_log=None, handle_signals=True)
