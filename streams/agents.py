"""The worker's topics, tables and agents. Agents stay thin: they call into ``detectors``.

Data flows one way:
``giftcard.transactions`` (keyed by card) → ``score_cards`` (card table) → alerts;
events that matter to a location or payment instrument are re-keyed onto an internal topic →
``score_entities`` (entity table) → alerts; ``giftcard.alerts`` → ``act_on_alerts`` → sinks.

Every agent catches what its handler raises and dead-letters the record with the reason, topic,
partition and offset (Faust would otherwise skip the event silently), then goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.types import EventT

from detectors.alerts import Alert
from detectors.engine import Engine
from detectors.events import Event, InvalidEvent, format_time, parse_time
from sinks.metrics import WorkerMetrics
from streams import topics
from streams.deadletter import deadletter_headers

log = logging.getLogger("giftguard.worker")

AlertHandler = Callable[[Alert], Awaitable[None]]


@dataclass
class Worker:
    """What the agents share: the app, the engine, metrics and the topics and tables."""

    app: faust.App
    engine: Engine
    metrics: WorkerMetrics
    on_alert: AlertHandler
    transactions: faust.TopicT
    entity_events: faust.TopicT
    alerts: faust.TopicT
    deadletter: faust.TopicT
    cards: Any
    entities: Any


def raw_topic(app: faust.App, name: str, partitions: int, internal: bool = False) -> faust.TopicT:
    """A topic of raw bytes both ways (we parse JSON ourselves, with orjson)."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions, internal=internal)


def register(app: faust.App, engine: Engine, metrics: WorkerMetrics, on_alert: AlertHandler,
             partitions: int) -> Worker:
    """Declare the worker's topics, tables and agents on ``app``."""
    # Raw bytes both ways: keys as the topics carry them, values as the engine encodes them.
    # (Faust picks a table's serializers from key_type/value_type, not from a schema.)
    table_args = dict(default=None, partitions=partitions, key_type=bytes, value_type=bytes)
    w = Worker(
        app=app, engine=engine, metrics=metrics, on_alert=on_alert,
        transactions=raw_topic(app, topics.TRANSACTIONS, partitions),
        entity_events=raw_topic(app, topics.ENTITY_EVENTS, partitions, internal=True),
        alerts=raw_topic(app, topics.ALERTS, partitions),
        deadletter=raw_topic(app, topics.DEADLETTER, partitions),
        cards=app.Table("cards", **table_args),
        entities=app.Table("entities", **table_args),
    )

    @app.agent(w.transactions, name="score-cards")
    async def score_cards(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            try:
                await _score_card(w, event)
            except Exception as exc:
                await _dead_letter(w, event, exc)

    @app.agent(w.entity_events, name="score-entities")
    async def score_entities(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            try:
                await _score_entity(w, event)
            except Exception as exc:
                await _dead_letter(w, event, exc)

    @app.agent(w.alerts, name="act-on-alerts")
    async def act_on_alerts(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            try:
                await w.on_alert(Alert.from_json(event.value))
            except Exception as exc:
                await _dead_letter(w, event, exc)

    @app.timer(interval=5.0, name="state-gauges")
    async def state_gauges() -> None:
        _update_gauges(w)

    return w


def table_size(table: Any) -> int:
    """Keys in a table's active partitions; RocksDB's own estimate, so it never scans."""
    dbs = getattr(table.data, "_dbs", None)  # faust's RocksDB store keeps one DB per partition
    if dbs is not None:
        return sum(db.property_int_value("rocksdb.estimate-num-keys") or 0
                   for db in list(dbs.values()))
    return len(table.data)


def _update_gauges(w: Worker) -> None:
    """Consumer lag per partition (high water minus committed offset) and table sizes."""
    consumer = w.app.consumer
    committed = getattr(consumer, "_committed_offset", {})  # faust keeps no public accessor
    for tp in consumer.assignment():
        try:
            high = consumer.highwater(tp)
        except Exception:  # noqa: BLE001 - no fetch yet for this partition
            continue
        if high is None:
            continue
        done = committed.get(tp) or 0
        w.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - done))
    w.metrics.table_keys.labels("cards").set(table_size(w.cards))
    w.metrics.table_keys.labels("entities").set(table_size(w.entities))


async def _score_card(w: Worker, event: EventT) -> None:
    ev = Event.from_json(event.value)
    key = ev.card_id.encode()
    outcome = w.engine.on_card_event(ev, w.cards.get(key))
    if outcome.state is None:
        w.cards.pop(key, None)
    else:
        w.cards[key] = outcome.state
    for key in outcome.forward:
        await w.entity_events.send(key=key.encode(), value=event.value)
    await _publish(w, ev, outcome.alerts, outcome.score)


async def _score_entity(w: Worker, event: EventT) -> None:
    key = event.message.key
    ev = Event.from_json(event.value)
    outcome = w.engine.on_entity_event(key.decode(), ev, w.entities.get(key))
    if outcome.state is None:
        w.entities.pop(key, None)
    else:
        w.entities[key] = outcome.state
    await _publish(w, ev, outcome.alerts, None)


async def _publish(w: Worker, ev: Event, alerts: list[Alert], score: float | None) -> None:
    """Count the decision, and write its alerts to ``giftcard.alerts``."""
    now = time.time()
    m = w.metrics
    if score is not None:  # the card scope sees every event exactly once
        m.events.labels(ev.type, ev.source or "unknown").inc()
        m.scores.observe(score)
        m.event_to_decision_seconds.observe(max(0.0, now - ev.ts))
        if ev.received_at:
            m.receipt_to_decision_seconds.observe(max(0.0, now - parse_time(ev.received_at)))
    for alert in alerts:
        alert.decided_at = format_time(now)
        if alert.gan_last4 is None:
            alert.gan_last4 = ev.gan_last4
        m.alerts.labels(alert.level).inc()
        for rule in alert.rules:
            m.alert_rules.labels(rule, alert.level).inc()
        await w.alerts.send(key=alert.card_id.encode(), value=alert.to_json())


async def _dead_letter(w: Worker, event: EventT, exc: Exception) -> None:
    """Send the record's original bytes to the dead-letter topic with why and where from."""
    msg = event.message
    reason = "invalid_event" if isinstance(exc, InvalidEvent) else type(exc).__name__
    log.warning("dead-lettering %s[%s]@%s: %r", msg.topic, msg.partition, msg.offset, exc,
                extra={"card_id": msg.key.decode(errors="replace") if msg.key else None})
    value = event.value if isinstance(event.value, bytes) else bytes(msg.value or b"")
    await w.deadletter.send(
        key=msg.key if isinstance(msg.key, (bytes, str)) else None, value=value,
        headers=deadletter_headers(reason, repr(exc), "worker", msg.topic, msg.partition,
                                   msg.offset))
    w.metrics.deadletters.labels(reason, "worker").inc()
