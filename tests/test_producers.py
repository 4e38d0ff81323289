"""streams.producers on the real broker: a batch queued for a topic known only from an
every-topic metadata refresh is still delivered after the first write to a topic the metadata
lacks (aiokafka alone drops the first topic from its metadata, and the batch times out)."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError, NotLeaderForPartitionError

from streams.app import create_app
from streams.producers import FaustTrackingProducer, TrackingProducer
from streams.settings import Settings

pytestmark = pytest.mark.integration


async def _queued_then_new_topic(bootstrap: str, producer: AIOKafkaProducer,
                                 ) -> tuple[float, BaseException | None]:
    """Write to a known topic (the batch lingers), then to a topic created after the producer's
    last metadata refresh; how long the first write took, and its error."""
    run = uuid.uuid4().hex[:8]
    known, new = f"known-{run}", f"new-{run}"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(known, 2, 1)])
        await producer.start()
        try:
            # Every topic's metadata while the producer tracks none (as after Faust declares
            # its topics): the known topic is in it, untracked.
            for _ in range(50):
                await producer.client.force_metadata_update()
                if producer.client.cluster.partitions_for_topic(known):
                    break
                await asyncio.sleep(0.1)
            await admin.create_topics([NewTopic(new, 1, 1)])
            await asyncio.sleep(0.5)
            started = time.monotonic()
            queued = await producer.send(known, b"queued", partition=1)
            await producer.send(new, b"first", partition=0)
            try:
                await queued
                error = None
            except KafkaError as exc:
                error = exc
            return time.monotonic() - started, error
        finally:
            await producer.stop()
    finally:
        await admin.close()


async def test_a_queued_batch_is_delivered_after_a_write_to_a_new_topic(bootstrap: str) -> None:
    producer = TrackingProducer(bootstrap_servers=bootstrap, linger_ms=300,
                                request_timeout_ms=10_000)
    seconds, error = await _queued_then_new_topic(bootstrap, producer)
    assert error is None
    assert seconds < 5  # not the request timeout


async def test_plain_aiokafka_still_times_the_batch_out(bootstrap: str) -> None:
    """Why TrackingProducer exists. When this fails, aiokafka has mended it: drop the class."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=300,
                                request_timeout_ms=3_000)
    seconds, error = await _queued_then_new_topic(bootstrap, producer)
    assert isinstance(error, NotLeaderForPartitionError)
    assert seconds >= 2.5


def test_the_worker_app_produces_through_a_tracking_producer(tmp_path: Path) -> None:
    app = create_app(Settings(kafka_bootstrap_servers="127.0.0.1:9", giftguard_data_dir=tmp_path))
    assert isinstance(app.producer, FaustTrackingProducer)
    assert issubclass(app.producer._producer_type, TrackingProducer)
