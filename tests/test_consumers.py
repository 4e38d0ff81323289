"""streams.consumers on the real broker: the worker's consumer (the very aiokafka consumer Faust's
thread builds for the worker app) gathers a trickle of records into fewer fetches than aiokafka's
defaults do, and a fetch that cannot gather its bytes still returns after a few milliseconds."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from streams.app import create_app
from streams.consumers import MainLoopConsumer
from streams.settings import Settings

pytestmark = pytest.mark.integration


def _worker_consumer(bootstrap: str, data_dir: Path) -> AIOKafkaConsumer:
    """The aiokafka consumer the worker app's consumer thread would start."""
    app = create_app(Settings(kafka_bootstrap_servers=bootstrap, giftguard_data_dir=data_dir))
    assert isinstance(app.consumer, MainLoopConsumer)
    return app.consumer._thread._create_worker_consumer(app.transport)


async def _fetches(consumer: AIOKafkaConsumer, tp: TopicPartition, count: int,
                   received: list[int]) -> None:
    """Read ``count`` records of ``tp``; each fetch's size appended to ``received``."""
    while sum(received) < count:
        batch = await consumer.getmany(tp, timeout_ms=2_000)
        if batch.get(tp):
            received.append(len(batch[tp]))


async def test_a_trickle_arrives_in_fewer_fetches_than_with_aiokafkas_defaults(
        bootstrap: str, tmp_path: Path) -> None:
    topic = f"trickle-{uuid.uuid4().hex[:8]}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    tp = TopicPartition(topic, 0)
    worker = _worker_consumer(bootstrap, tmp_path)
    plain = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    for consumer in (worker, plain):
        consumer.assign([tp])
        await consumer.start()
    await producer.start()
    try:
        for consumer in (worker, plain):
            await consumer.seek_to_beginning(tp)
            await consumer.position(tp)
        count = 40
        gathered: list[int] = []
        single: list[int] = []
        readers = [asyncio.create_task(_fetches(worker, tp, count, gathered)),
                   asyncio.create_task(_fetches(plain, tp, count, single))]
        await asyncio.sleep(0.3)  # both fetches in flight
        for _ in range(count):  # one produce request each, about a round trip apart
            await (await producer.send(topic, b"x" * 200, partition=0))
        await asyncio.wait_for(asyncio.gather(*readers), 30)
        assert sum(gathered) == sum(single) == count
        assert len(gathered) * 3 <= len(single) * 2, (gathered, single)

        # A fetch that cannot gather FETCH_MIN_BYTES returns after FETCH_MAX_WAIT_MS (with
        # Faust's own wait, 1,500 ms, a lone record would wait that long).
        await asyncio.sleep(0.3)
        started = time.monotonic()
        await (await producer.send(topic, b"lone", partition=0))
        batch = await worker.getmany(tp, timeout_ms=5_000)
        assert len(batch[tp]) == 1
        assert time.monotonic() - started < 0.5
    finally:
        await producer.stop()
        for consumer in (worker, plain):
            await consumer.stop()


async def test_the_worker_consumer_runs_on_the_workers_own_loop(bootstrap: str,
                                                                tmp_path: Path) -> None:
    """No second thread and loop: aiokafka's consumer starts, reads metadata and stops on the
    loop that runs the agents."""
    app = create_app(Settings(kafka_bootstrap_servers=bootstrap, giftguard_data_dir=tmp_path))
    service = app.consumer._thread
    threads = threading.active_count()
    await asyncio.wait_for(service.start(), 30)
    try:
        assert threading.active_count() == threads
        consumer = service._ensure_consumer()
        topics = await asyncio.wait_for(consumer.topics(), 10)
        assert isinstance(topics, set)
    finally:
        await asyncio.wait_for(service.stop(), 30)
    assert threading.active_count() == threads
