"""Acting on alerts: the hold decision (per hold mode and policy), Slack, and learning.

- :class:`AlertActions` is called once per alert read from ``giftcard.alerts`` (the
  ``act-on-alerts`` agent, keyed by card). It keeps the alert's context in the hold registry,
  decides by :class:`~streams.holds.HoldPolicy`: ``shadow`` writes a hold record with
  ``action: "shadow"`` to ``giftcard.holds`` and calls no POS; ``ask`` leaves the decision to the
  Slack buttons; ``hold`` (auto mode, score at or above ``auto_score``) puts a decision on
  ``giftguard.hold-commands`` for the executor. Every such decision is an audit record. The alert
  then goes to Slack through the outbox.
- The **Slack outbox** (``giftguard.slack-outbox``, keyed by channel) carries alerts, decision
  lines and notes. One worker owns a channel's partition, so one sender paces the channel (Slack
  allows about one message per second per channel) and threads and coalesces its incidents, however
  many workers run. The ``post-to-slack`` agent takes records in batches, hands them to the sink
  and waits until the sink has delivered them before the batch is acknowledged: a crash re-reads
  what was not delivered, and the compacted ``giftguard.slack-messages`` topic (what was posted
  where) keeps it from posting twice.
- :class:`FeedbackLearner` feeds every record on ``giftcard.feedback`` that carries a verdict
  (``is_fraud``) to ``Engine.on_feedback``. It is a plain aiokafka consumer **without a group**,
  assigned every partition and reading from the beginning, in every worker: each worker's engine
  (whose learned feedback state is global, not per key) learns from all decisions, and a restarted
  worker relearns them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import orjson

from detectors.alerts import Alert
from detectors.events import format_time
from detectors.feedback import Feedback, InvalidFeedback
from sinks.base import AlertSink
from sinks.metrics import WorkerMetrics
from streams import topics
from streams.audit import audit_record
from streams.holds import HoldExecutor, HoldPolicy, alert_context
from streams.settings import HoldMode
from streams.state import BatchTable

log = logging.getLogger("giftguard.actions")

SendRecord = Callable[[str, bytes], Awaitable[object]]
SendJson = Callable[[str, dict[str, Any]], Awaitable[object]]

#: What the alert says it led to, per decision (PRODUCT.md's ``action``).
ALERT_ACTION = {"none": "alert", "shadow": "alert", "ask": "hold_requested", "hold": "hold"}


def hold_record(alert: Alert, mode: HoldMode, action: str) -> dict[str, object]:
    """The ``giftcard.holds`` record for a hold request on ``alert``'s card."""
    return {
        "hold_id": f"{alert.alert_id}:hold",
        "card_id": alert.card_id,
        "alert_id": alert.alert_id,
        "location_id": alert.location_id,
        "mode": mode,
        "action": action,
        "requested": "hold",
        "score": alert.score,
        "amount_minor": alert.amount_at_risk_minor,
        "reasons": alert.reasons,
        "model_version": alert.model_version,
        "decided_at": format_time(time.time()),
    }


class AlertActions:
    """Called once per alert read from ``giftcard.alerts``.

    ``send_hold`` writes to ``giftcard.holds``; ``send_audit`` and ``send_command`` take
    (card id, record) for ``giftcard.audit`` and ``giftguard.hold-commands``; ``send_slack``
    takes an outbox record (None: alerts go straight to ``sink``). ``executor`` keeps the alert
    in the hold registry (None in tests of this class alone).
    """

    def __init__(self, mode: HoldMode, sink: AlertSink, send_hold: SendRecord,
                 metrics: WorkerMetrics, *, policy: HoldPolicy | None = None,
                 executor: HoldExecutor | None = None, send_audit: SendJson | None = None,
                 send_command: SendJson | None = None,
                 send_slack: Callable[[dict[str, Any]], Awaitable[object]] | None = None) -> None:
        self.mode = mode
        self.sink = sink
        self.send_hold = send_hold
        self.metrics = metrics
        self.policy = policy or HoldPolicy()
        self.executor = executor
        self.send_audit = send_audit
        self.send_command = send_command
        self.send_slack = send_slack

    def classify(self, alert: Alert) -> None:
        """Set ``alert.action`` to what the policy will do with it (before it is published)."""
        alert.action = ALERT_ACTION[self.policy.decide(alert, self.mode)]  # type: ignore[assignment]

    async def __call__(self, alert: Alert) -> None:
        """Record, decide, and send the alert to Slack."""
        decision = self.policy.decide(alert, self.mode)
        alert.action = ALERT_ACTION[decision]  # type: ignore[assignment]
        if self.executor is not None:
            await self.executor.record_alert(alert)
        mode = self.policy.mode_at(alert.location_id, self.mode)
        if decision == "shadow":
            await self.send_hold(alert.card_id,
                                 orjson.dumps(hold_record(alert, "shadow", "shadow")))
            self.metrics.holds.labels("none", "hold", "shadow").inc()
        elif decision == "hold" and self.send_command is not None:
            await self.send_command(alert.card_id, {
                "decision": "hold", "alert_id": alert.alert_id, "card_id": alert.card_id,
                "location_id": alert.location_id, "user_id": "system", "source": "policy",
                "decided_at": format_time(time.time()), "score": alert.score})
        if decision != "none" and self.send_audit is not None:
            await self.send_audit(alert.card_id, audit_record(
                "alert", alert.card_id, action={"shadow": "shadow", "ask": "ask",
                                                "hold": "hold"}[decision],
                alert=alert_context(alert), mode=mode,
                outcome="recorded" if decision == "shadow" else "requested"))
        if self.send_slack is not None:
            await self.send_slack({"kind": "alert", "alert": alert.to_dict()})
        else:
            await self.sink.send(alert)


async def deliver_outbox(sink: AlertSink, records: list[dict[str, Any]]) -> None:
    """Hand outbox records to ``sink`` and wait until it delivered them (or gave up)."""
    for rec in records:
        kind = rec.get("kind")
        try:
            if kind == "alert":
                await sink.send(Alert.from_dict(rec["alert"]))
            elif kind == "decision" and hasattr(sink, "decide"):
                await sink.decide(rec["alert_id"], rec["line"], card_id=rec.get("card_id"))
            elif kind == "note" and hasattr(sink, "note"):
                await sink.note(rec["text"], card_id=rec.get("card_id"),
                                alert_id=rec.get("alert_id"))
            elif kind in ("decision", "note"):
                log.warning("%s for card %s: %s", kind, rec.get("card_id"),
                            rec.get("line") or rec.get("text"))
        except (KeyError, TypeError) as exc:
            log.warning("ignoring a malformed outbox record %r: %r", rec, exc)
    flush = getattr(sink, "flush", None)
    if flush is not None:
        await flush()


async def read_compacted(bootstrap: list[str], topic: str) -> list[dict[str, Any]]:
    """The latest value of every key of ``topic``, read to its current end (plain aiokafka)."""
    from aiokafka import AIOKafkaConsumer, TopicPartition

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    latest: dict[bytes, dict[str, Any]] = {}
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        if not tps:
            return []
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            batch = await consumer.getmany(timeout_ms=500)
            for recs in batch.values():
                for rec in recs:
                    if rec.value is None:
                        latest.pop(rec.key, None)
                        continue
                    try:
                        latest[rec.key] = orjson.loads(rec.value)
                    except orjson.JSONDecodeError:
                        continue
        return list(latest.values())
    finally:
        await consumer.stop()


def register_slack_outbox(app: Any, sink: AlertSink, outbox: Any, bootstrap: list[str],
                          batch: int = 100, within: float = 0.2) -> None:
    """The ``post-to-slack`` agent: outbox records to ``sink``, acknowledged once delivered."""
    restored = asyncio.Event()

    @app.agent(outbox, name="post-to-slack")
    async def post_to_slack(stream: Any) -> None:
        async for values in stream.take(batch, within=within):
            if not restored.is_set() and hasattr(sink, "restore"):
                try:
                    n = sink.restore(await read_compacted(bootstrap, topics.SLACK_MESSAGES))
                    log.info("restored %d Slack messages", n)
                except Exception:
                    log.warning("could not restore posted Slack messages", exc_info=True)
                restored.set()
            records = []
            for value in values:
                try:
                    records.append(orjson.loads(value))
                except orjson.JSONDecodeError:
                    log.warning("ignoring an outbox record that is not JSON")
            try:
                await deliver_outbox(sink, records)
            except Exception:
                log.exception("delivering %d outbox records failed", len(records))


class FeedbackLearner:
    """Every worker's engine learns from every verdict on ``giftcard.feedback`` (see module doc).

    ``learn`` is ``Engine.on_feedback``; ``consumer_factory`` makes the aiokafka consumer (tests).
    """

    def __init__(self, bootstrap: list[str], learn: Callable[[Feedback], None],
                 consumer_factory: Callable[[], Any] | None = None) -> None:
        self.bootstrap = bootstrap
        self.learn = learn
        self.learned = 0
        self._factory = consumer_factory
        self._consumer: Any = None
        self._positions: dict[Any, int] = {}

    @staticmethod
    def feedback_of(rec: dict[str, Any]) -> Feedback | None:
        """The :class:`Feedback` a record carries, or None (a hold or release has no verdict)."""
        if not isinstance(rec, dict) or not isinstance(rec.get("is_fraud"), bool):
            return None
        data = dict(rec)
        data.setdefault("analyst", rec.get("user_id"))
        try:
            return Feedback.from_dict(data)
        except (InvalidFeedback, TypeError):
            return None

    def apply(self, value: bytes) -> bool:
        try:
            rec = orjson.loads(value)
        except orjson.JSONDecodeError:
            return False
        feedback = self.feedback_of(rec)
        if feedback is None:
            return False
        self.learn(feedback)
        self.learned += 1
        return True

    async def run(self) -> None:
        """Read ``giftcard.feedback`` from the beginning, forever."""
        from aiokafka import AIOKafkaConsumer, TopicPartition

        delay = 0.5
        while True:
            consumer = (self._factory() if self._factory else
                        AIOKafkaConsumer(bootstrap_servers=self.bootstrap,
                                         enable_auto_commit=False))
            self._consumer = consumer
            try:
                await consumer.start()
                parts = consumer.partitions_for_topic(topics.FEEDBACK)
                while not parts:
                    await consumer._client.force_metadata_update()
                    parts = consumer.partitions_for_topic(topics.FEEDBACK)
                    if not parts:
                        await asyncio.sleep(1.0)
                tps = [TopicPartition(topics.FEEDBACK, p) for p in sorted(parts)]
                consumer.assign(tps)
                for tp in tps:  # after a reconnect, go on where we were: never learn twice
                    if tp in self._positions:
                        consumer.seek(tp, self._positions[tp])
                    else:
                        await consumer.seek_to_beginning(tp)
                while True:
                    batch = await consumer.getmany(timeout_ms=1000)
                    for tp, recs in batch.items():
                        for rec in recs:
                            self._positions[tp] = rec.offset + 1
                            if rec.value is not None:
                                try:
                                    self.apply(rec.value)
                                except Exception:
                                    log.exception("learning from feedback at offset %s failed",
                                                  rec.offset)
            except asyncio.CancelledError:
                raise
            except Exception:
                log.warning("feedback learner: Kafka error; restarting in %.1fs", delay,
                            exc_info=True)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 10.0)
            finally:
                await consumer.stop()


def pos_client(settings: Any, hold_policy: HoldPolicy,
               on_retry: Callable[[Any], object] | None = None) -> Any:
    """The POS client holds go through: Square when ``SQUARE_ACCESS_TOKEN`` is set.

    A hold mode other than shadow (in the environment or any location's policy) needs it.
    ``on_retry`` is called with the error before each request the client sends again.
    """
    modes = {settings.giftguard_hold_mode, *(p.mode for p in hold_policy.overrides.values()
                                             if p.mode)}
    if settings.square_access_token is None:
        if modes - {"shadow"}:
            settings.require("square_access_token",
                             why=f"hold mode {'/'.join(sorted(modes - {'shadow'}))} acts in Square")
        return None
    from sinks.pos import SquarePosClient

    return SquarePosClient.from_settings(settings, on_retry=on_retry)


def wire_actions(app: Any, w: Any, settings: Any, hold_policy: HoldPolicy,
                 make_sink: Callable[[Any], AlertSink]) -> AlertActions:
    """Declare the topics, the hold registry and the agents that act on alerts and decisions,
    and set ``w.on_alert``, ``w.classify`` and ``w.held_alert``."""
    import os

    from streams.agents import _dead_letter, raw_topic
    from streams.holds import (
        DEBIT_TYPES,
        HoldExecutor,
        Outputs,
        declare_registry,
        held_card_alert,
        register_hold_agents,
    )

    parts = settings.giftguard_partitions
    holds = raw_topic(app, topics.HOLDS, parts)
    audit = raw_topic(app, topics.AUDIT, parts)
    feedback = raw_topic(app, topics.FEEDBACK, parts)
    commands = raw_topic(app, topics.HOLD_COMMANDS, parts, internal=True)
    outbox = raw_topic(app, topics.SLACK_OUTBOX, parts, internal=True)
    posted = app.topic(topics.SLACK_MESSAGES, key_type=bytes, value_type=bytes,
                       key_serializer="raw", value_serializer="raw", partitions=1,
                       internal=True, compacting=True)
    channel = (settings.slack_channel or "console").encode()

    def json_sender(topic: Any) -> SendJson:
        async def send(key: str, record: dict[str, Any]) -> object:
            return await topic.send(key=key.encode(), value=orjson.dumps(record))
        return send

    async def send_slack(record: dict[str, Any]) -> object:
        return await outbox.send(key=channel, value=orjson.dumps(record))

    async def on_posted(record: dict[str, Any]) -> object:
        return await posted.send(key=str(record["key"]).encode(), value=orjson.dumps(record))

    async def flush() -> None:
        await app.producer.flush()

    metrics = w.metrics

    def count_retry(exc: Any) -> None:  # a POS outage the client's retries ride out shows too
        from sinks.pos.retry import retry_reason

        metrics.pos_retries.labels(exc.sink, retry_reason(exc)).inc()

    pos = pos_client(settings, hold_policy, on_retry=count_retry)
    executor = HoldExecutor(
        pos=pos, mode=settings.giftguard_hold_mode, policy=hold_policy, metrics=metrics,
        outputs=Outputs(holds=json_sender(holds), audit=json_sender(audit),
                        commands=json_sender(commands), slack=send_slack, flush=flush),
        failpoint=os.environ.get("GIFTGUARD_FAILPOINT") or None)
    executor.table = declare_registry(app, parts)
    sink = make_sink(on_posted)

    async def send_hold(key: str, value: bytes) -> object:
        return await holds.send(key=key.encode(), value=value)

    actions = AlertActions(settings.giftguard_hold_mode, sink, send_hold, metrics,
                           policy=hold_policy, executor=executor,
                           send_audit=json_sender(audit), send_command=json_sender(commands),
                           send_slack=send_slack)
    w.on_alert = actions
    w.classify = actions.classify
    model_version = w.engine.model_version

    registry = BatchTable(app, executor.table)

    def held_alert(ev: Any, partition: int) -> Alert | None:
        if ev.type not in DEBIT_TYPES:
            return None
        # The registry is keyed and partitioned by card as the transactions are: the card's
        # entry is in the partition its event came from (as Faust looks it up in an agent).
        raw = registry.get(partition, ev.card_id.encode())
        if not raw:
            return None
        from streams.holds import CardHolds

        return held_card_alert(CardHolds.decode(ev.card_id, raw), ev, model_version)

    w.held_alert = held_alert

    async def dead_letter(event: Any, exc: Exception) -> None:
        await _dead_letter(w, event, exc)

    register_hold_agents(app, executor, feedback, commands, dead_letter)
    register_slack_outbox(app, sink, outbox, settings.bootstrap_servers)
    learner = FeedbackLearner(settings.bootstrap_servers, w.engine.on_feedback)

    @app.task
    async def learn_from_feedback() -> None:
        await learner.run()

    @app.on_before_shutdown.connect
    async def close_sinks(app: Any, **kwargs: object) -> None:
        await sink.close()  # delivers what is queued, releases connections
        if pos is not None:
            await pos.close()

    return actions
