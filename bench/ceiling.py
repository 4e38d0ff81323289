"""Ceiling: a plain aiokafka consumer reading ``giftcard.transactions`` in batches and parsing
every record with orjson. Nothing in Python on this machine reads the topic faster."""

from __future__ import annotations

import asyncio
import time

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import Rate, partitions
from streams import topics


async def ceiling(bootstrap: str, expected: int) -> Rate:
    """Read the whole topic from the start (no group, no commits); time from the first fetch to
    the last record."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                auto_offset_reset="earliest", max_partition_fetch_bytes=4 << 20,
                                fetch_max_bytes=64 << 20)
    await consumer.start()
    try:
        parts = await partitions(consumer, topics.TRANSACTIONS)
        tps = [TopicPartition(topics.TRANSACTIONS, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        loads = orjson.loads
        n = 0
        started = time.perf_counter()  # assigned and at the beginning: the clock starts
        cpu0 = time.process_time()
        while n < expected:
            batch = await consumer.getmany(timeout_ms=500, max_records=10_000)
            for records in batch.values():
                for record in records:
                    loads(record.value)
                n += len(records)
        return Rate(n, time.perf_counter() - started, time.process_time() - cpu0)
    finally:
        await consumer.stop()


def run(bootstrap: str, expected: int) -> Rate:
    return asyncio.run(ceiling(bootstrap, expected))
