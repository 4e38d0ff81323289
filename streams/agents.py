"""The worker's topics, tables and agents. Agents stay thin: they call into ``detectors``.

Data flows one way:
``giftcard.transactions`` (keyed by card) → ``score_cards`` (card table) → alerts;
events that matter to a location or payment instrument are re-keyed onto an internal topic →
``score_entities`` (entity table) → alerts; ``giftcard.alerts`` → ``act_on_alerts`` → sinks.

Every agent catches what its handler raises and dead-letters the record with the reason, topic,
partition and offset (Faust would otherwise skip the event silently), then goes on.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
import weakref
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import faust
from faust.streams import _current_event
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
    #: Sets ``alert.action`` from the hold policy before the alert is published (actions.py).
    classify: Callable[[Alert], None] | None = None
    #: An extra alert for an event on a held card (value taken off it), from the hold registry.
    held_alert: Callable[[Event], Alert | None] | None = None


def raw_topic(app: faust.App, name: str, partitions: int, internal: bool = False) -> faust.TopicT:
    """A topic of raw bytes both ways (we parse JSON ourselves, with orjson)."""
    return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                     value_serializer="raw", partitions=partitions, internal=internal)


#: RocksDB settings of both tables, per partition database (a worker opens one per partition and
#: table). Faust's defaults (64 MiB write buffers, a 2 GiB block cache each) keep every card in
#: memtables: resident memory grew with the state itself. Small write buffers flush the state to
#: files (the page cache, not the worker's memory) and a small block cache bounds what reads
#: keep; ``make bench`` measures the memory per card (bench/RESULTS.md).
ROCKSDB_OPTIONS: dict[str, int] = {
    "write_buffer_size": 4 << 20,
    "max_write_buffer_number": 2,
    "block_cache_size": 8 << 20,
}


def register(app: faust.App, engine: Engine, metrics: WorkerMetrics, on_alert: AlertHandler,
             partitions: int) -> Worker:
    """Declare the worker's topics, tables and agents on ``app``."""
    # Raw bytes both ways: keys as the topics carry them, values as the engine encodes them.
    # (Faust picks a table's serializers from key_type/value_type, not from a schema.)
    table_args = dict(default=None, partitions=partitions, key_type=bytes, value_type=bytes,
                      options=dict(ROCKSDB_OPTIONS))
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
        await _score_batches(w, stream, _score_card)

    @app.agent(w.entity_events, name="score-entities")
    async def score_entities(stream: faust.StreamT[bytes]) -> None:
        await _score_batches(w, stream, _score_entity)

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


async def _score_batches(w: Worker, stream: faust.StreamT[bytes],
                         score: Callable[[Worker, EventT, _Batch], Awaitable[None]]) -> None:
    """Score a stream in batches: each event alone and in order, dead-lettered if it raises;
    the batch's Kafka writes are awaited together, then its table writes are made."""
    async for events in stream.take_events(BATCH_MAX, within=BATCH_WITHIN):
        batch = _Batch()
        for event in events:
            try:
                await score(w, event, batch)
            except Exception as exc:
                await _dead_letter(w, event, exc)
        await batch.commit(w)


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
        except Exception:
            continue
        if high is None:
            continue
        done = committed.get(tp) or 0
        w.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(max(0, high - done))
    w.metrics.table_keys.labels("cards").set(table_size(w.cards))
    w.metrics.table_keys.labels("entities").set(table_size(w.entities))


#: A card's table value starts with where the last event applied to it was read (a tag byte,
#: the partition and offset in ``giftcard.transactions``), then the engine's state. After a crash
#: Faust replays from the last committed offset while the table (RocksDB, changelog) may already
#: hold later events; an event at or below the card's mark was applied and is skipped, however
#: many events of the card the replay spans (the engine's own ring remembers only the last 8).
_MARK = struct.Struct(">Bhq")
_MARK_TAG = 0xA5


def card_state(value: bytes | None) -> bytes | None:
    """The engine's state in a ``cards`` table value (without the replay mark)."""
    if value is not None and value[:1] == bytes([_MARK_TAG]):
        return value[_MARK.size:]
    return value


#: The scoring agents take events in batches (Faust's ``take_events``): each event is still
#: decided on its own, in order, but the Kafka writes of a whole batch are awaited together and
#: its table writes follow, instead of one produce round trip per event. A batch is what is
#: there, at most ``BATCH_MAX`` events, waiting at most ``BATCH_WITHIN`` seconds for more.
BATCH_MAX = 500
BATCH_WITHIN = 0.005


async def _send(w: Worker, topic: str, key: bytes, value: bytes) -> Awaitable[Any]:
    """Hand a record to the app's Kafka producer; returns the delivery future.

    Straight to the producer rather than through ``Topic.send``: the bytes are final already,
    and Faust's per-message path (future message, channel, sensors) was a tenth of the
    worker's time in the benchmark profile (bench/RESULTS.md).
    """
    return await w.app.producer.send(topic, key, value, partition=None, timestamp=None,
                                     headers=None)


def _as_current(event: EventT) -> None:
    """Make ``event`` Faust's current event in this task: tables pick the RocksDB partition and
    the changelog partition of a key from it (in a batch, events come from many partitions)."""
    _current_event.set(weakref.ref(event))


class _Batch:
    """One batch of a scoring agent: reads see the batch's earlier state writes; the records an
    event sent are awaited with the whole batch's, and only then are the states written. An
    event whose records Kafka refused is dead-lettered and its key's state is not written."""

    def __init__(self) -> None:
        self.sends: list[tuple[EventT, list[Awaitable[Any]], tuple[int, bytes] | None]] = []
        self.states: dict[tuple[int, bytes], tuple[Any, EventT, bytes | None]] = {}

    def get(self, table: Any, key: bytes, event: EventT) -> bytes | None:
        hit = self.states.get((id(table), key))
        if hit is not None:
            return hit[2]
        _as_current(event)
        return table.get(key)

    def defer(self, event: EventT, sent: list[Awaitable[Any]], table: Any, key: bytes,
              value: bytes | None) -> None:
        self.sends.append((event, sent, (id(table), key)))
        self.states[(id(table), key)] = (table, event, value)

    async def commit(self, w: Worker) -> None:
        futures = [f for _, sent, _ in self.sends for f in sent]
        results = await asyncio.gather(*futures, return_exceptions=True) if futures else []
        refused: set[tuple[int, bytes]] = set()
        i = 0
        for event, sent, state_key in self.sends:
            errors = [r for r in results[i:i + len(sent)] if isinstance(r, BaseException)]
            i += len(sent)
            if errors:
                if state_key is not None:
                    refused.add(state_key)
                await _dead_letter(w, event, errors[0])  # type: ignore[arg-type]
        for state_key, (table, event, value) in self.states.items():
            if state_key in refused:
                continue
            _as_current(event)
            try:
                if value is None:
                    table.pop(state_key[1], None)
                else:
                    table[state_key[1]] = value
            except Exception as exc:
                await _dead_letter(w, event, exc)


async def _score_card(w: Worker, event: EventT, batch: _Batch | None = None) -> None:
    ev = Event.from_json(event.value)
    key = ev.card_id.encode()
    msg = event.message
    state = w.cards.get(key) if batch is None else batch.get(w.cards, key, event)
    if state is not None and state[0] == _MARK_TAG:
        _, partition, offset = _MARK.unpack_from(state)
        if partition == msg.partition and msg.offset <= offset:
            return  # a replay after a crash or rebalance: this event was applied already
        state = state[_MARK.size:]
    outcome = w.engine.on_card_event(ev, state)
    sent = [await _send(w, topics.ENTITY_EVENTS, k.encode(), event.value)
            for k in outcome.forward]
    alerts = outcome.alerts
    if w.held_alert is not None:
        held = w.held_alert(ev)
        if held is not None:
            alerts = [*alerts, held]
    sent += await _publish(w, ev, alerts, outcome.score)
    value = (None if outcome.state is None
             else _MARK.pack(_MARK_TAG, msg.partition, msg.offset) + outcome.state)
    if batch is not None:  # the batch awaits the records, then writes the state
        batch.defer(event, sent, w.cards, key, value)
        return
    # Only once Kafka has the alerts and forwarded events may the state say the event was
    # applied: a crash in between then replays the event instead of losing what it raised.
    await asyncio.gather(*sent)
    if value is None:
        w.cards.pop(key, None)
    else:
        w.cards[key] = value


async def _score_entity(w: Worker, event: EventT, batch: _Batch | None = None) -> None:
    key = event.message.key
    ev = Event.from_json(event.value)
    state = w.entities.get(key) if batch is None else batch.get(w.entities, key, event)
    outcome = w.engine.on_entity_event(key.decode(), ev, state)
    sent = await _publish(w, ev, outcome.alerts, None)
    if batch is not None:
        batch.defer(event, sent, w.entities, key, outcome.state)
        return
    await asyncio.gather(*sent)  # then the state
    if outcome.state is None:
        w.entities.pop(key, None)
    else:
        w.entities[key] = outcome.state


async def _publish(w: Worker, ev: Event, alerts: list[Alert], score: float | None,
                   ) -> list[Awaitable[Any]]:
    """Count the decision, and write its alerts to ``giftcard.alerts`` (the delivery futures)."""
    now = time.time()
    m = w.metrics
    sent = []
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
        if w.classify is not None:
            w.classify(alert)
        m.alerts.labels(alert.level).inc()
        for rule in alert.rules:
            m.alert_rules.labels(rule, alert.level).inc()
        sent.append(await _send(w, topics.ALERTS, alert.card_id.encode(), alert.to_json()))
    return sent


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
