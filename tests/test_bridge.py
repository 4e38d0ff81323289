"""The webhook bridge against a real Kafka broker: signatures, validation, acks, duplicates."""

from __future__ import annotations

from collections.abc import AsyncIterator

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer

from detectors.events import Event
from streams import topics
from streams.bridge import Bridge
from streams.broker import free_port
from streams.settings import load_settings
from streams.signatures import SQUARE_SIGNATURE_HEADER, square_signature
from tests.kafka_helpers import end_offsets, read_since
from tests.square_envelopes import envelope

pytestmark = pytest.mark.integration

KEY = "test-signature-key"
URL = "https://giftguard.example.com/webhooks/square"


def signed(body: bytes, key: str = KEY) -> dict[str, str]:
    return {SQUARE_SIGNATURE_HEADER: square_signature(key, URL, body),
            "Content-Type": "application/json"}


async def _client(bootstrap: str) -> TestClient:
    settings = load_settings(kafka_bootstrap_servers=bootstrap, square_webhook_signature_key=KEY,
                             square_webhook_url=URL)
    bridge = Bridge(settings)
    client = TestClient(TestServer(bridge.web_app()))
    await client.start_server()
    for _ in range(200):  # wait until the producer is connected
        if (await client.get("/healthz")).status == 200:
            break
        import asyncio
        await asyncio.sleep(0.05)
    return client


@pytest.fixture
async def client(bootstrap: str) -> AsyncIterator[TestClient]:
    c = await _client(bootstrap)
    yield c
    await c.close()


async def test_accepted_webhook_is_on_both_topics(client: TestClient, bootstrap: str) -> None:
    env = envelope("REDEEM", activity_id="gcact_ok1", card_id="gftc:ok1", status="COMPLETED",
                   event_id="evt-ok-1")
    body = orjson.dumps(env)
    raw_before = await end_offsets(bootstrap, topics.WEBHOOKS_RAW)
    tx_before = await end_offsets(bootstrap, topics.TRANSACTIONS)
    resp = await client.post("/webhooks/square", data=body, headers=signed(body))
    assert resp.status == 200, await resp.text()
    assert (await resp.json())["event_id"] == "square:gcact_ok1"

    raw = await read_since(bootstrap, topics.WEBHOOKS_RAW, raw_before, expect=1)
    assert [r.value for r in raw] == [body]  # verbatim
    assert raw[0].key == b"evt-ok-1"
    headers = dict(raw[0].headers)
    assert headers[SQUARE_SIGNATURE_HEADER].decode() == square_signature(KEY, URL, body)
    assert headers["notification-url"].decode() == URL

    tx = await read_since(bootstrap, topics.TRANSACTIONS, tx_before, expect=1)
    assert len(tx) == 1 and tx[0].key == b"gftc:ok1"
    event = Event.from_json(tx[0].value)
    assert event.event_id == "square:gcact_ok1" and event.received_at


@pytest.mark.parametrize("tamper", ["forged", "one_byte", "missing"])
async def test_bad_signature_is_401_and_writes_nothing(client: TestClient, bootstrap: str,
                                                       tamper: str) -> None:
    body = orjson.dumps(envelope("REDEEM", activity_id=f"gcact_{tamper}"))
    headers = signed(body)
    if tamper == "forged":
        headers = signed(body, key="not-the-key")
    elif tamper == "one_byte":
        body = body.replace(b"5000", b"5001", 1)
    else:
        del headers[SQUARE_SIGNATURE_HEADER]
    before = await end_offsets(bootstrap, topics.TRANSACTIONS)
    dlq_before = await end_offsets(bootstrap, topics.DEADLETTER)
    resp = await client.post("/webhooks/square", data=body, headers=headers)
    assert resp.status == 401
    assert "signature" in (await resp.json())["error"]
    assert await end_offsets(bootstrap, topics.TRANSACTIONS) == before
    assert await end_offsets(bootstrap, topics.DEADLETTER) == dlq_before


@pytest.mark.parametrize("body, reason, words", [
    (b"{not json", "malformed_json", "not JSON"),
    (orjson.dumps({"type": "gift_card.activity.created"}), "invalid_envelope", "event_id"),
    (orjson.dumps({**envelope("REDEEM"), "data": {"type": "gift_card_activity"}}),
     "invalid_event", "gift_card_activity"),
])
async def test_authentic_but_malformed_is_400_and_dead_lettered(
        client: TestClient, bootstrap: str, body: bytes, reason: str, words: str) -> None:
    before = await end_offsets(bootstrap, topics.DEADLETTER)
    resp = await client.post("/webhooks/square", data=body, headers=signed(body))
    assert resp.status == 400
    assert words in (await resp.json())["error"]
    dead = await read_since(bootstrap, topics.DEADLETTER, before, expect=1)
    assert dead[-1].value == body
    assert dict(dead[-1].headers)[topics.DLQ_REASON].decode() == reason


async def test_repeated_event_id_is_written_once(client: TestClient, bootstrap: str) -> None:
    env = envelope("LOAD", activity_id="gcact_dup", card_id="gftc:dup", event_id="evt-dup")
    body = orjson.dumps(env)
    before = await end_offsets(bootstrap, topics.TRANSACTIONS)
    statuses = [(await client.post("/webhooks/square", data=body, headers=signed(body))).status
                for _ in range(3)]
    assert statuses == [200, 200, 200]
    tx = await read_since(bootstrap, topics.TRANSACTIONS, before, timeout=3)
    assert [r.key for r in tx].count(b"gftc:dup") == 1


async def test_oversize_body_is_413(client: TestClient) -> None:
    body = b'{"pad":"' + b"x" * (1024 * 1024 + 10) + b'"}'
    resp = await client.post("/webhooks/square", data=body, headers=signed(body))
    assert resp.status == 413


async def test_no_kafka_means_503_so_square_retries() -> None:
    settings = load_settings(kafka_bootstrap_servers=f"127.0.0.1:{free_port()}",
                             square_webhook_signature_key=KEY, square_webhook_url=URL)
    client = TestClient(TestServer(Bridge(settings).web_app()))
    await client.start_server()
    try:
        body = orjson.dumps(envelope("REDEEM"))
        resp = await client.post("/webhooks/square", data=body, headers=signed(body))
        assert resp.status == 503
        assert (await client.get("/healthz")).status == 503
    finally:
        await client.close()


async def test_metrics_count_requests_by_status(client: TestClient) -> None:
    body = orjson.dumps(envelope("REDEEM", activity_id="gcact_metrics"))
    await client.post("/webhooks/square", data=body, headers=signed(body, key="wrong"))
    text = await (await client.get("/metrics")).text()
    assert 'giftguard_bridge_requests_total{provider="square",status="401"} 1.0' in text
