"""Plain aiokafka helpers for tests: where a topic ends now, and what was written after."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord


async def end_offsets(bootstrap: str, topic: str) -> dict[TopicPartition, int]:
    """The next offset of every partition of ``topic`` (its current end)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        for _ in range(50):
            parts = consumer.partitions_for_topic(topic)
            if parts:
                break
            await consumer._client.force_metadata_update()
            await asyncio.sleep(0.1)
        tps = [TopicPartition(topic, p) for p in sorted(parts or [])]
        return dict(await consumer.end_offsets(tps)) if tps else {}
    finally:
        await consumer.stop()


async def read_since(bootstrap: str, topic: str, since: dict[TopicPartition, int] | None = None,
                     *, expect: int | None = None, timeout: float = 10.0) -> list[ConsumerRecord]:
    """Records written to ``topic`` after ``since`` (all when None).

    Reads until ``expect`` records arrived or ``timeout`` passed; with ``expect=None`` it reads
    until the topic's current end.
    """
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest")
    await consumer.start()
    records: list[ConsumerRecord] = []
    try:
        parts = consumer.partitions_for_topic(topic)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        for tp in tps:
            consumer.seek(tp, (since or {}).get(tp, 0))
        ends = await consumer.end_offsets(tps)
        deadline = asyncio.get_running_loop().time() + timeout
        while asyncio.get_running_loop().time() < deadline:
            batch = await consumer.getmany(timeout_ms=200)
            for recs in batch.values():
                records.extend(recs)
            if expect is not None and len(records) >= expect:
                break
            if expect is None and all([await consumer.position(tp) >= ends[tp] for tp in tps]):
                break
        return records
    finally:
        await consumer.stop()
