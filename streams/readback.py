"""Did a write that failed land anyway? The bridge asks before it writes a record again.

A produce request can fail ambiguously: the broker appended the record, then died (or the
connection did) before answering, and the producer's request timed out. The bridge answered 503,
the sender retries, and writing the record again would put the event on its topic twice (the
idempotent producer cannot tell: after a broker restart it is a new producer, or a new request).
So before a retry writes a record whose earlier write failed, the bridge reads the partition
from the moment of that first write and looks for it: the raw webhook by its key (Square's event
id), the canonical event by its ``event_id``.

Only retries of failed writes pay for this, and a scan is kept per partition, so a burst of
retries after an outage reads each partition once.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from streams import topics

log = logging.getLogger("giftguard.bridge")


def record_identity(topic: str, key: bytes | None, value: bytes | None) -> bytes | None:
    """What identifies a bridge record: the raw webhook's key (the provider's event id), the
    canonical event's ``event_id``."""
    if topic == topics.TRANSACTIONS:
        try:
            event_id = orjson.loads(value or b"{}").get("event_id")
        except (orjson.JSONDecodeError, AttributeError):
            return None
        return event_id.encode() if isinstance(event_id, str) else None
    return key


@dataclass
class _Scan:
    """The identities read from one partition, offsets ``start`` (inclusive) to ``end``."""

    start: int
    end: int
    seen: set[bytes] = field(default_factory=set)


class ReadBack:
    """Looks records up on their partitions, with one consumer (no group) started on demand."""

    #: Identities kept per partition before a scan starts over.
    MAX_SEEN = 1_000_000

    def __init__(self, bootstrap_servers: list[str], timeout: float) -> None:
        self._servers = bootstrap_servers
        self._timeout = timeout
        self._consumer: AIOKafkaConsumer | None = None
        self._scans: dict[TopicPartition, _Scan] = {}
        self._lock = asyncio.Lock()

    async def landed(self, topic: str, partition: int | None, since_ms: int,
                     identity: bytes) -> bool:
        """Whether a record with ``identity`` was written to ``topic`` (at ``partition``, or
        any partition when it is not known) at or after ``since_ms`` (its producer's clock).
        Raises when Kafka cannot answer: then nobody knows, and the caller must not write."""
        async with self._lock:
            try:
                return await asyncio.wait_for(
                    self._landed(topic, partition, since_ms, identity), self._timeout)
            except BaseException:
                await self.stop()  # (a fresh consumer next time)
                raise

    async def _landed(self, topic: str, partition: int | None, since_ms: int,
                      identity: bytes) -> bool:
        consumer = await self._started()
        if partition is None:
            partitions = consumer.partitions_for_topic(topic)
            if not partitions:
                await consumer._client.force_metadata_update()
                partitions = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        else:
            tps = [TopicPartition(topic, partition)]
        if not tps:
            raise LookupError(f"no partitions known for {topic}")
        consumer.assign(tps)
        starts = await consumer.offsets_for_times({tp: since_ms for tp in tps})
        ends = await consumer.end_offsets(tps)
        for tp in tps:
            found = starts.get(tp)
            if found is None:
                continue  # nothing written at or after since_ms
            if await self._scan(consumer, tp, found.offset, ends[tp], identity):
                return True
        return False

    async def _scan(self, consumer: AIOKafkaConsumer, tp: TopicPartition, start: int, end: int,
                    identity: bytes) -> bool:
        scan = self._scans.get(tp)
        if scan is None or start < scan.start or len(scan.seen) > self.MAX_SEEN:
            scan = self._scans[tp] = _Scan(start, start)
        if identity in scan.seen:
            return True
        consumer.seek(tp, scan.end)
        while scan.end < end:
            batch = await consumer.getmany(tp, timeout_ms=500)
            for record in batch.get(tp, []):
                ident = record_identity(tp.topic, record.key, record.value)
                if ident is not None:
                    scan.seen.add(ident)
                scan.end = record.offset + 1
            if not batch:
                scan.end = max(scan.end, await consumer.position(tp))
        return identity in scan.seen

    async def _started(self) -> AIOKafkaConsumer:
        if self._consumer is None:
            consumer = AIOKafkaConsumer(
                bootstrap_servers=self._servers, enable_auto_commit=False,
                auto_offset_reset="earliest", request_timeout_ms=int(self._timeout * 1000))
            await consumer.start()
            self._consumer = consumer
        return self._consumer

    async def stop(self) -> None:
        """Close the consumer (the scans are kept)."""
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            try:
                await consumer.stop()
            except Exception as exc:  # (closing a consumer of a broker that went away)
                log.debug("read-back consumer did not close cleanly: %r", exc)
