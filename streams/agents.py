"""The worker's topics, tables and agents. Agents stay thin: they call into ``detectors``.

Data flows one way:
``giftcard.transactions`` (keyed by card) → ``score_cards`` (card table) → alerts;
events that matter to a location or payment instrument are re-keyed onto an internal topic
(packed per partition, everyday sales as runs of their times, :mod:`streams.forwarding`) →
``score_entities`` (entity table) → alerts;
``giftcard.alerts`` → ``act_on_alerts`` → sinks. Both tables are written a batch at a time
(:mod:`streams.state`): changelog records first, then the local store.

The scoring loops take their records a fetch at a time (:mod:`streams.delivery`), not as
Faust events. Every handler's exception dead-letters the record with the reason, topic,
partition and offset (Faust would otherwise skip the event silently), then it goes on.
"""

from __future__ import annotations

import asyncio
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import faust
from aiokafka.errors import KafkaTimeoutError

from detectors.alerts import Alert
from detectors.engine import Engine
from detectors.events import Event, InvalidEvent, format_time, parse_time
from sinks.metrics import WorkerMetrics
from streams import topics
from streams.deadletter import deadletter_headers
from streams.delivery import Delivery, Inbox, Record
from streams.forwarding import pack, pack_times, times_of, unpack
from streams.partitioning import EntityPlacement
from streams.progress import Progress
from streams.state import BatchTable, Write

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
    #: How far the scoring agents got per partition: what their offsets commit.
    progress: Progress
    #: Sets ``alert.action`` from the hold policy before the alert is published (actions.py).
    classify: Callable[[Alert], None] | None = None
    #: An extra alert for an event on a held card (value taken off it), from the hold registry.
    #: (The event and the partition of its record: the card's partition.)
    held_alert: Callable[[Event, int], Alert | None] | None = None
    #: The entity partition of each forwarded key (streams/partitioning.py).
    place: Callable[[bytes], int] = field(default_factory=lambda: EntityPlacement((), 1))


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
    # The scoring agents' offsets are committed from how far they got (streams/progress.py).
    progress = Progress(app.consumer, [topics.TRANSACTIONS, topics.ENTITY_EVENTS])
    w = Worker(
        app=app, engine=engine, metrics=metrics, on_alert=on_alert,
        transactions=raw_topic(app, topics.TRANSACTIONS, partitions),
        entity_events=raw_topic(app, topics.ENTITY_EVENTS, partitions, internal=True),
        alerts=raw_topic(app, topics.ALERTS, partitions),
        deadletter=raw_topic(app, topics.DEADLETTER, partitions),
        cards=app.Table("cards", **table_args),
        entities=app.Table("entities", **table_args),
        progress=progress,
        place=EntityPlacement((loc.location_id for loc in engine.locations.locations),
                              partitions),
    )

    card_table, entity_table = BatchTable(app, w.cards), BatchTable(app, w.entities)

    @app.on_partitions_revoked.connect
    async def _forget_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        progress.forget(revoked)

    @app.on_partitions_assigned.connect
    async def _forget_assigned(sender: Any, assigned: set[Any], **kwargs: Any) -> None:
        progress.forget(assigned, revoked=False)

    @app.on_before_shutdown.connect
    async def _log_progress(sender: Any, **kwargs: Any) -> None:
        progress.log_marks("at shutdown")

    # The scoring topics' records come a fetch at a time (streams/delivery.py), not through
    # Faust's per-event agent machinery; Faust still owns the group, offsets and tables.
    app.topics.add(w.transactions)  # (subscribed as an agent's topic would be)
    app.topics.add(w.entity_events)
    cards_in = [Inbox(INBOX_LIMIT) for _ in range(LANES)]
    entities_in = [Inbox(INBOX_LIMIT) for _ in range(LANES)]
    Delivery(app, {topics.TRANSACTIONS: cards_in, topics.ENTITY_EVENTS: entities_in})
    for inbox in cards_in:
        app.task(_scoring_loop(w, inbox, card_table, _one_event, _score_card))
    for inbox in entities_in:
        app.task(_scoring_loop(w, inbox, entity_table, _packed_events, _score_entity))

    @app.agent(w.alerts, name="act-on-alerts")
    async def act_on_alerts(stream: faust.StreamT[bytes]) -> None:
        async for event in stream.events():
            try:
                await w.on_alert(Alert.from_json(event.value))
            except Exception as exc:
                await _dead_letter(w, Item(event.message, 0, event.message.key, event.value), exc)

    @app.timer(interval=2.0, name="progress-tails")
    async def progress_tails() -> None:
        await progress.check_tails()

    @app.timer(interval=5.0, name="state-gauges")
    async def state_gauges() -> None:
        _update_gauges(w)

    return w


def _scoring_loop(w: Worker, inbox: Inbox, table: BatchTable,
                  expand: Callable[[Record], list[tuple[bytes | None, bytes]]],
                  score: Callable[[Worker, Item, _Batch], Awaitable[None]],
                  ) -> Callable[[], Awaitable[None]]:
    """One lane's scoring loop, as an app task."""
    async def score_lane() -> None:
        await _score_batches(w, inbox, table, expand, score)
    return score_lane


async def _score_batches(w: Worker, inbox: Inbox, table: BatchTable,
                         expand: Callable[[Record], list[tuple[bytes | None, bytes]]],
                         score: Callable[[Worker, Item, _Batch], Awaitable[None]]) -> None:
    """Score an inbox's records in batches, for as long as the worker runs."""
    while True:
        records = await inbox.take(BATCH_MAX)
        try:
            await _score_batch(w, records, table, expand, score)
        except Exception:
            # Not marked done: the partitions' next records show the hole, and it is read
            # again (Progress.admit). Kafka or the store failing; give them a moment.
            log.exception("a batch of %d records failed; it will be read again", len(records))
            w.progress.abandon(records)
            await asyncio.sleep(1.0)
        finally:
            inbox.done()


async def _score_batch(w: Worker, records: list[Record], table: BatchTable,
                       expand: Callable[[Record], list[tuple[bytes | None, bytes]]],
                       score: Callable[[Worker, Item, _Batch], Awaitable[None]]) -> None:
    """Each record's items scored alone and in order, dead-lettered if one raises; then the
    batch's writes are finished (:meth:`_Batch.finish`) before the records are marked done."""
    # Only each partition's next records (streams/progress.py); the rest come again.
    records = await w.progress.admit(records)
    batch = _Batch(table)
    for record in records:
        try:
            pairs = expand(record)
        except Exception as exc:
            await _dead_letter(w, Item(record, 0, record.key, record.value), exc)
            continue
        for index, (key, value) in enumerate(pairs):
            item = Item(record, index, key, value)
            try:
                await score(w, item, batch)
            except Exception as exc:
                await _dead_letter(w, item, exc)
    await batch.finish(w)
    w.progress.done(records)


def _one_event(record: Record) -> list[tuple[bytes | None, bytes]]:
    return [(record.key, record.value)]


def _packed_events(record: Record) -> list[tuple[bytes | None, bytes]]:
    return unpack(record.value)


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


#: A table value starts with where the last event applied to it was read (a tag byte, the
#: partition, offset and, for the packed entity records, the index in the record), then the
#: engine's state. After a crash Faust replays from the last committed offset while the table
#: (RocksDB, changelog) may already hold later events; an event at or below the key's mark was
#: applied and is skipped, however many events of the key the replay spans (the engine's own
#: ring remembers only the last 8).
_MARK = struct.Struct(">Bhq")
_MARK_TAG = 0xA5
_ENTITY_MARK = struct.Struct(">Bhqi")
_ENTITY_MARK_TAG = 0xA6


def card_state(value: bytes | None) -> bytes | None:
    """The engine's state in a ``cards`` table value (without the replay mark)."""
    if value is not None and value[:1] == bytes([_MARK_TAG]):
        return value[_MARK.size:]
    return value


def entity_state(value: bytes | None) -> bytes | None:
    """The engine's state in an ``entities`` table value (without the replay mark)."""
    if value is not None and value[:1] == bytes([_ENTITY_MARK_TAG]):
        return value[_ENTITY_MARK.size:]
    return value


#: The scoring loops take records in batches: each event is still decided on its own, in
#: order, but the Kafka writes of a whole batch are awaited together and its table writes
#: follow, instead of one produce round trip per event. A batch is what has been fetched and is
#: waiting, at most ``BATCH_MAX`` records (while one batch is scored, the next gathers).
BATCH_MAX = 1000
#: Records fetched and waiting per lane before the fetch loop waits.
INBOX_LIMIT = 4000
#: Scoring loops per topic, each with its own partitions (streams/delivery.py): while one
#: waits for Kafka to acknowledge its batch's writes, the other scores.
LANES = 2


@dataclass(slots=True)
class Item:
    """One event to score: the record it came in (``index`` in a packed entity record), its
    key and its bytes (what a dead-letter record carries)."""

    msg: Any  # a Record, or a Faust message (the alerts agent)
    index: int
    key: bytes | None
    value: bytes


async def _send(w: Worker, topic: str, key: bytes | None, value: bytes,
                partition: int | None = None) -> Awaitable[Any]:
    """Hand a record to the app's Kafka producer; returns the delivery future.

    Straight to the producer rather than through ``Topic.send``: the bytes are final already,
    and Faust's per-message path (future message, channel, sensors) was a tenth of the
    worker's time in the benchmark profile (bench/RESULTS.md).
    """
    return await w.app.producer.send(topic, key, value, partition=partition, timestamp=None,
                                     headers=None)


@dataclass(slots=True)
class _Record:
    """A record handed to the producer: what it holds (to send it again) and its future."""

    topic: str
    key: bytes | None
    value: bytes
    partition: int | None
    future: asyncio.Future[Any]


async def _produce(w: Worker, topic: str, key: bytes | None, value: bytes,
                   partition: int | None = None) -> _Record:
    """:func:`_send`, kept as a :class:`_Record` (a send that raised is a failed future)."""
    return _Record(topic, key, value, partition,
                   await _queued(_send(w, topic, key, value, partition)))


#: Waits before a record that failed with a transient error (Kafka's retriable errors: no
#: leader yet, a request timed out, a lost connection) is sent again, once per wait; it fails
#: for good only after the last. Seen in the rebalance test: a produce request to a partition
#: of a just-created topic answered "not leader" after the producer's full 30 s timeout. The
#: item used to be dead-lettered at once and its state not written, so the card's next events
#: were applied without it.
RESEND_AFTER = (0.5, 2.0, 5.0)


def _error(future: asyncio.Future[Any]) -> BaseException | None:
    """A settled future's error (a cancellation counts), or None."""
    if future.cancelled():
        return asyncio.CancelledError()
    return future.exception()


def _transient(exc: BaseException | None) -> bool:
    """Worth sending again: Kafka calls the error retriable, or the producer gave up waiting."""
    return exc is not None and (getattr(exc, "retriable", False)
                                or isinstance(exc, (KafkaTimeoutError, TimeoutError)))


async def _settle(w: Worker, records: list[_Record]) -> None:
    """Await every record; send again, after each of :data:`RESEND_AFTER`, those that failed
    with a transient error. Each record's ``future`` is then its last attempt."""
    waiting = records
    for delay in (*RESEND_AFTER, None):
        if not waiting:
            return
        await asyncio.gather(*(r.future for r in waiting), return_exceptions=True)
        failed = [r for r in waiting if _transient(_error(r.future))]
        if not failed or delay is None:
            return
        log.warning("%d records to %s not acknowledged (%r); sending them again in %.1f s",
                    len(failed), sorted({r.topic for r in failed}), _error(failed[0].future),
                    delay)
        w.metrics.produce_resends.inc(len(failed))
        await asyncio.sleep(delay)
        for r in failed:
            r.future = await _queued(_send(w, r.topic, r.key, r.value, r.partition))
        waiting = failed


@dataclass(slots=True)
class _Pending:
    """What one item of a batch wrote: its records, and the state key it changed."""

    item: Item
    state_key: bytes | None
    sent: list[_Record]


_UNSET = object()


class _Batch:
    """One batch of a scoring agent; reads see the states of the batch's earlier items.

    An item's alerts are handed to the producer as it is scored. :meth:`finish` sends the
    events forwarded to the entity scope (packed, one record per partition), awaits every
    record (sending again those that failed with a transient error, :func:`_settle`); an item
    whose records Kafka still refused is dead-lettered and its key's state is not written; then
    the states' changelog records are written and awaited, then the local store.
    Faust acknowledges the events only after that: a crash anywhere before leaves them
    unacknowledged, and they are replayed (the replay marks skip what was applied)."""

    def __init__(self, table: BatchTable) -> None:
        self.table = table
        self.pending: list[_Pending] = []
        self.states: dict[bytes, tuple[int, bytes | None]] = {}
        #: Per entity partition, (key, event bytes or a run of sale times), in order.
        self.forwards: dict[int, list[tuple[bytes, bytes | list[float]]]] = {}
        self.forwarded_by: dict[int, list[_Pending]] = {}
        #: Each key's open run of sale times (the last pair of its partition's list for that
        #: key); a full event for the key closes it, so the key's items keep their order.
        self.runs: dict[bytes, list[float]] = {}

    def get(self, partition: int, key: bytes) -> bytes | None:
        hit = self.states.get(key, _UNSET)
        if hit is not _UNSET:
            return hit[1]  # type: ignore[index]
        return self.table.get(partition, key)

    def add(self, item: Item, sent: list[_Record], state_key: bytes, partition: int,
            value: bytes | None) -> _Pending:
        """Record an item's sent records and the state it leaves its key in."""
        pending = _Pending(item, state_key, sent)
        self.pending.append(pending)
        self.states[state_key] = (partition, value)
        return pending

    def forward(self, pending: _Pending, keys: tuple[str, ...], value: bytes,
                place: Callable[[bytes], int]) -> None:
        """Queue ``value`` for the entity scope under each key (see :meth:`_send_forwards`)."""
        for k in keys:
            key = k.encode()
            self.runs.pop(key, None)
            self.forwards.setdefault(self._route(pending, key, place), []).append(
                (key, value))

    def count(self, pending: _Pending, keys: tuple[str, ...], ts: float,
              place: Callable[[bytes], int]) -> None:
        """Queue an everyday sale's time for each key (``Outcome.counts``): onto the key's
        open run, or a new run."""
        for k in keys:
            key = k.encode()
            p = self._route(pending, key, place)
            run = self.runs.get(key)
            if run is None:
                run = self.runs[key] = []
                self.forwards.setdefault(p, []).append((key, run))
            run.append(ts)

    def _route(self, pending: _Pending, key: bytes, place: Callable[[bytes], int]) -> int:
        """The key's entity partition; the item's records then include that partition's."""
        p = place(key)
        by = self.forwarded_by.setdefault(p, [])
        if not by or by[-1] is not pending:
            by.append(pending)
        return p

    async def _send_forwards(self, w: Worker) -> None:
        """Hand the forwarded items to the producer, one record per entity partition."""
        for p, items in self.forwards.items():
            value = pack([(key, v if isinstance(v, bytes) else pack_times(v))
                          for key, v in items])
            record = await _produce(w, topics.ENTITY_EVENTS, None, value, partition=p)
            for pending in self.forwarded_by[p]:
                pending.sent.append(record)  # (one record, shared by the items it carries)

    async def finish(self, w: Worker) -> None:
        """Await the batch's records, then write the states (changelog, then store)."""
        await self._send_forwards(w)
        records = {id(r): r for pending in self.pending for r in pending.sent}
        await _settle(w, list(records.values()))
        refused: set[bytes] = set()
        for pending in self.pending:
            errors = [e for r in pending.sent if (e := _error(r.future)) is not None]
            if errors:
                if pending.state_key is not None:
                    refused.add(pending.state_key)
                await _dead_letter(w, pending.item, errors[0])
        await _write_states(w, self.table, [(p, key, value) for key, (p, value)
                                            in self.states.items() if key not in refused])


async def _write_states(w: Worker, table: BatchTable, writes: list[Write]) -> None:
    """Changelog records first (awaited), then the local store and the persisted offsets."""
    if not writes:
        return
    topic = table.table.changelog_topic_name
    records = [await _produce(w, topic, key, value, p) for p, key, value in writes]
    await _settle(w, records)
    offsets: dict[int, int] = {}
    failed = 0
    for record in records:
        if _error(record.future) is not None:
            failed += 1
        else:
            meta = record.future.result()
            offsets[meta.partition] = max(meta.offset, offsets.get(meta.partition, -1))
    if failed:
        # Kept locally all the same: this worker's state is right; what the changelog lacks
        # is restored only if the partition moves before the key is written again.
        log.error("%d changelog records of %s not written", failed, table.table.name)
        w.metrics.deadletters.labels("changelog_write_failed", "worker").inc(failed)
    table.write(writes, offsets)


async def _queued(send: Awaitable[asyncio.Future[Any]]) -> asyncio.Future[Any]:
    """The record future a send returns; a failed future if the send itself raised (the
    producer refused to queue the record), so callers await one kind of thing."""
    try:
        return await send
    except Exception as exc:
        fut = asyncio.get_running_loop().create_future()
        fut.set_exception(exc)
        return fut


async def _score_card(w: Worker, item: Item, batch: _Batch) -> None:
    ev = Event.from_json(item.value)
    key = ev.card_id.encode()
    msg = item.msg
    state = batch.get(msg.partition, key)
    if state is not None and state[0] == _MARK_TAG:
        _, partition, offset = _MARK.unpack_from(state)
        if partition == msg.partition and msg.offset <= offset:
            return  # a replay after a crash or rebalance: this event was applied already
        state = state[_MARK.size:]
    outcome = w.engine.on_card_event(ev, state)
    alerts = outcome.alerts
    if w.held_alert is not None:
        held = w.held_alert(ev, msg.partition)
        if held is not None:
            alerts = [*alerts, held]
    sent = await _publish(w, ev, alerts, outcome.score)
    value = (None if outcome.state is None
             else _MARK.pack(_MARK_TAG, msg.partition, msg.offset) + outcome.state)
    pending = batch.add(item, sent, key, msg.partition, value)
    if outcome.forward:
        batch.forward(pending, outcome.forward, item.value, w.place)
    if outcome.counts:
        batch.count(pending, outcome.counts, ev.ts, w.place)


async def _score_entity(w: Worker, item: Item, batch: _Batch) -> None:
    key = item.key or b""
    msg = item.msg
    times = times_of(item.value)
    state = batch.get(msg.partition, key)
    if state is not None and state[0] == _ENTITY_MARK_TAG:
        _, partition, offset, index = _ENTITY_MARK.unpack_from(state)
        if partition == msg.partition and (msg.offset, item.index) <= (offset, index):
            return  # replayed
        state = state[_ENTITY_MARK.size:]
    mark = _ENTITY_MARK.pack(_ENTITY_MARK_TAG, msg.partition, msg.offset, item.index)
    if times is not None:  # a run of everyday sales: counted, never alerting
        counted = w.engine.on_entity_counts(key.decode(), times, state)
        batch.add(item, [], key, msg.partition, mark + counted)
        return
    ev = Event.from_json(item.value)
    outcome = w.engine.on_entity_event(key.decode(), ev, state)
    sent = await _publish(w, ev, outcome.alerts, None)
    value = None if outcome.state is None else mark + outcome.state
    batch.add(item, sent, key, msg.partition, value)


async def _publish(w: Worker, ev: Event, alerts: list[Alert], score: float | None,
                   ) -> list[_Record]:
    """Count the decision, and write its alerts to ``giftcard.alerts`` (their records)."""
    now = time.time()
    m = w.metrics
    sent: list[_Record] = []
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
        sent.append(await _produce(w, topics.ALERTS, alert.card_id.encode(), alert.to_json()))
    return sent


async def _dead_letter(w: Worker, item: Item, exc: BaseException) -> None:
    """Send the item's original bytes to the dead-letter topic with why and where from."""
    msg = item.msg
    reason = "invalid_event" if isinstance(exc, InvalidEvent) else type(exc).__name__
    key = item.key if isinstance(item.key, bytes) else None
    log.warning("dead-lettering %s[%s]@%s: %r", msg.topic, msg.partition, msg.offset, exc,
                extra={"card_id": key.decode(errors="replace") if key else None})
    value = item.value if isinstance(item.value, bytes) else bytes(msg.value or b"")
    await w.deadletter.send(
        key=key, value=value,
        headers=deadletter_headers(reason, repr(exc), "worker", msg.topic, msg.partition,
                                   msg.offset))
    w.metrics.deadletters.labels(reason, "worker").inc()
