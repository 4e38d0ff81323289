"""The bridge's answer to a retry of a delivery it answered 503: nothing written twice.

Kafka is replaced by a producer whose acknowledgements the test gives (or withholds) by hand,
so the moments that matter are exact: a record acknowledged after its delivery was answered 503
(the broker was slow, or came back), and one of the two records failing while the other landed
(which must be answered 503 even when both settle before either acknowledgement is looked at),
and a failed record that had landed after all (the read-back, streams/readback.py, is a fake
here that answers what the test says; tests/test_readback.py runs the real one on Kafka).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from aiokafka.errors import KafkaTimeoutError

import streams.bridge
from streams import topics
from streams.bridge import Bridge
from streams.broker import free_port
from streams.readback import record_identity
from streams.settings import load_settings
from streams.signatures import SQUARE_SIGNATURE_HEADER, square_signature
from tests.square_envelopes import envelope

KEY = "test-signature-key"
URL = "https://giftguard.example.com/webhooks/square"


class HandAckedProducer:
    """Records every ``send``; its futures settle only when the test says so."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, asyncio.Future[Any]]] = []
        #: The identity of each record sent (raw: its key; canonical: its event id).
        self.values: list[bytes] = []
        self.client = SimpleNamespace(cluster=SimpleNamespace(partitions_for_topic=lambda t: None))
        self._more = asyncio.Event()

    async def send(self, topic: str, value: bytes, key: bytes | None = None,
                   partition: int | None = None, headers: Any = None) -> asyncio.Future[Any]:
        future = asyncio.get_running_loop().create_future()
        self.sent.append((topic, future))
        self.values.append(record_identity(topic, key, value) or b"")
        self._more.set()
        return future

    async def sent_at_least(self, n: int) -> None:
        while len(self.sent) < n:
            self._more.clear()
            await self._more.wait()

    async def stop(self) -> None:
        pass

    def topics_sent(self) -> list[str]:
        return [topic for topic, _ in self.sent]


class FakeReadBack:
    """Answers whether a failed record landed from ``on_topic``; raises while ``down``."""

    def __init__(self) -> None:
        self.on_topic: set[tuple[str, bytes]] = set()
        self.asked: list[tuple[str, bytes]] = []
        self.down = False

    async def landed(self, topic: str, partition: int | None, since_ms: int,
                     identity: bytes) -> bool:
        self.asked.append((topic, identity))
        if self.down:
            raise KafkaTimeoutError()
        return (topic, identity) in self.on_topic

    async def stop(self) -> None:
        pass


@pytest.fixture
def readback() -> FakeReadBack:
    return FakeReadBack()


@pytest.fixture
async def bridge(monkeypatch: pytest.MonkeyPatch,
                 readback: FakeReadBack) -> AsyncIterator[tuple[TestClient, HandAckedProducer]]:
    monkeypatch.setattr(streams.bridge, "KAFKA_WRITE_TIMEOUT", 0.2)
    settings = load_settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
                             square_webhook_signature_key=KEY, square_webhook_url=URL)
    b = Bridge(settings, readback=readback)  # type: ignore[arg-type]
    client = TestClient(TestServer(b.web_app()))
    await client.start_server()
    producer = HandAckedProducer()
    b.producer = producer  # type: ignore[assignment]
    yield client, producer
    await client.close()


async def _post(client: TestClient, body: bytes) -> tuple[int, str]:
    headers = {SQUARE_SIGNATURE_HEADER: square_signature(KEY, URL, body),
               "Content-Type": "application/json"}
    resp = await client.post("/webhooks/square", data=body, headers=headers)
    return resp.status, (await resp.json()).get("status", "")


async def test_retry_waits_for_the_write_answered_503_instead_of_writing_again(bridge) -> None:
    client, producer = bridge
    body = orjson.dumps(envelope("REDEEM", activity_id="gcact_slow", status="COMPLETED"))
    assert (await _post(client, body))[0] == 503          # not acknowledged in time
    assert producer.topics_sent() == [topics.WEBHOOKS_RAW, topics.TRANSACTIONS]
    assert (await _post(client, body))[0] == 503          # still on its way: not sent again
    assert len(producer.sent) == 2
    for _, future in producer.sent:                       # Kafka acknowledges the first write
        future.set_result(None)
    await asyncio.sleep(0)
    assert await _post(client, body) == (200, "duplicate")
    assert len(producer.sent) == 2


async def _half_failed(client: TestClient, producer: HandAckedProducer, activity: str) -> bytes:
    """A delivery whose raw record was acknowledged and whose canonical one failed (503)."""
    body = orjson.dumps(envelope("REDEEM", activity_id=activity, status="COMPLETED"))
    task = asyncio.create_task(_post(client, body))
    await asyncio.wait_for(producer.sent_at_least(2), 5)
    (_, raw), (_, canon) = producer.sent
    raw.set_result(None)
    canon.set_exception(KafkaTimeoutError())
    assert (await task)[0] == 503
    return body


async def test_retry_writes_only_the_record_that_failed(bridge, readback) -> None:
    client, producer = bridge
    body = await _half_failed(client, producer, "gcact_half")
    retry = asyncio.create_task(_post(client, body))
    await asyncio.wait_for(producer.sent_at_least(3), 5)
    assert producer.topics_sent()[2:] == [topics.TRANSACTIONS]
    assert [topic for topic, _ in readback.asked] == [topics.TRANSACTIONS]  # looked first
    producer.sent[2][1].set_result(None)
    assert await retry == (200, "accepted")
    assert len(producer.sent) == 3


async def test_a_failed_record_that_landed_anyway_is_not_written_again(bridge, readback) -> None:
    """The broker appended it and died before answering: the retry finds it on the topic."""
    client, producer = bridge
    body = await _half_failed(client, producer, "gcact_landed")
    readback.on_topic = {(topics.TRANSACTIONS, producer.values[1])}
    assert await _post(client, body) == (200, "accepted")
    assert len(producer.sent) == 2                         # nothing written a second time


async def test_a_retry_that_cannot_read_back_writes_nothing(bridge, readback) -> None:
    """Kafka still down: nobody knows whether the record landed, so it is not written; the
    next retry looks again."""
    client, producer = bridge
    body = await _half_failed(client, producer, "gcact_unknown")
    readback.down = True
    assert (await _post(client, body))[0] == 503
    assert len(producer.sent) == 2
    readback.down = False
    retry = asyncio.create_task(_post(client, body))
    await asyncio.wait_for(producer.sent_at_least(3), 5)
    producer.sent[2][1].set_result(None)
    assert await retry == (200, "accepted")
    assert len(readback.asked) == 2
