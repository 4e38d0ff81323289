"""streams.readback.ReadBack on the real broker: does a record the bridge failed to write sit on
its partition anyway? Found by the raw webhook's key and by the canonical event's event id, from
the first write's time on, in one partition or (partition unknown) in all of them."""

from __future__ import annotations

import time
import uuid

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams import topics
from streams.admin import ensure_topics
from streams.readback import ReadBack

pytestmark = pytest.mark.integration


async def test_records_are_found_where_they_landed_and_only_there(bootstrap: str) -> None:
    await ensure_topics([bootstrap], 4)
    run = uuid.uuid4().hex[:8]
    before = int(time.time() * 1000) - 1000
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        raw = await (await producer.send(topics.WEBHOOKS_RAW, b"{}", key=f"{run}-sq".encode(),
                                         partition=2))
        canonical = orjson.dumps({"event_id": f"{run}-ev", "card_id": "c"})
        await (await producer.send(topics.TRANSACTIONS, canonical, key=b"c", partition=1))
        for i in range(300):  # others' records after them: the scan reads past these
            await producer.send(topics.TRANSACTIONS, orjson.dumps({"event_id": f"{run}-{i}"}),
                                key=b"x", partition=1)
        await producer.flush()
    finally:
        await producer.stop()
    after = int(time.time() * 1000) + 1000
    readback = ReadBack([bootstrap], timeout=10.0)
    try:
        assert await readback.landed(topics.WEBHOOKS_RAW, 2, before, f"{run}-sq".encode())
        assert await readback.landed(topics.TRANSACTIONS, 1, before, f"{run}-ev".encode())
        assert await readback.landed(topics.TRANSACTIONS, None, before, f"{run}-ev".encode())
        assert await readback.landed(topics.TRANSACTIONS, 1, before, f"{run}-299".encode())
        # Not there: another event id, another partition, or written before the time asked.
        assert not await readback.landed(topics.TRANSACTIONS, 1, before, f"{run}-nope".encode())
        assert not await readback.landed(topics.TRANSACTIONS, 3, before, f"{run}-ev".encode())
        assert not await readback.landed(topics.WEBHOOKS_RAW, 2, after, f"{run}-sq".encode())
        assert raw.partition == 2
    finally:
        await readback.stop()
