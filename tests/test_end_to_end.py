"""The whole path on a real broker: broker, bridge and worker as separate processes.

Signed Square webhooks for a rapid drain and a bulk purchase go in; the test asserts the alerts
on ``giftcard.alerts`` (read with plain aiokafka), the Slack Web API calls (a local server that
behaves like Slack), the worker's ``/metrics``, the shadow hold on ``giftcard.holds``, and that a
forged signature got 401 and wrote nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams import topics
from streams.signatures import SQUARE_SIGNATURE_HEADER, square_signature
from tests.fakes.slack_api import FakeSlackApi
from tests.kafka_helpers import end_offsets, read_since
from tests.services import (
    SIGNATURE_KEY,
    Service,
    fakes_env,
    metric_sum,
    start_bridge,
    start_worker,
)
from tests.square_envelopes import envelope

pytestmark = pytest.mark.integration

LOCATIONS = [
    {"location_id": "NYC-5TH", "name": "New York 5th Ave", "lat": 40.7536, "lon": -73.9832,
     "timezone": "America/New_York"},
    {"location_id": "CHI-LOOP", "name": "Chicago Loop", "lat": 41.8837, "lon": -87.6289,
     "timezone": "America/Chicago"},
    {"location_id": "ONLINE", "name": "Web shop", "lat": 40.7, "lon": -74.0,
     "timezone": "America/New_York", "channel": "online"},
    {"location_id": "LA-DTLA", "name": "Los Angeles Downtown", "lat": 34.0407, "lon": -118.2468,
     "timezone": "America/Los_Angeles"},
]


def _t(minute: float) -> str:
    total = int(minute * 60)
    return f"2026-11-20T{15 + total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}Z"


def drain_story(run: str) -> tuple[str, list[dict]]:
    """A $200 card bought in New York, 95% redeemed 7 minutes later in Los Angeles."""
    card = f"gftc:drain-{run}"
    return card, [
        envelope("ACTIVATE", activity_id=f"act-{run}-d1", card_id=card, location_id="NYC-5TH",
                 amount=20000, balance=20000, created_at=_t(0),
                 details={"buyer_payment_instrument_ids": [f"ccof:{run}-victim"]}),
        envelope("REDEEM", activity_id=f"act-{run}-d2", card_id=card, location_id="LA-DTLA",
                 amount=19000, balance=1000, created_at=_t(7), status="COMPLETED"),
    ]


def bulk_story(run: str) -> tuple[list[str], list[dict]]:
    """Eight $500 cards at one Chicago store on one card within 20 minutes."""
    cards = [f"gftc:bulk-{run}-{i}" for i in range(8)]
    return cards, [
        envelope("ACTIVATE", activity_id=f"act-{run}-b{i}", card_id=card, location_id="CHI-LOOP",
                 amount=50000, balance=50000, created_at=_t(60 + 2.5 * i),
                 details={"buyer_payment_instrument_ids": [f"ccof:{run}-stolen"]})
        for i, card in enumerate(cards)
    ]


def same_store_story(run: str) -> tuple[str, list[dict]]:
    """The trap: a $100 card bought and 80% spent minutes later in the same store."""
    card = f"gftc:trap-{run}"
    return card, [
        envelope("ACTIVATE", activity_id=f"act-{run}-t1", card_id=card, location_id="NYC-5TH",
                 amount=10000, balance=10000, created_at=_t(30)),
        envelope("REDEEM", activity_id=f"act-{run}-t2", card_id=card, location_id="NYC-5TH",
                 amount=8000, balance=2000, created_at=_t(34), status="COMPLETED"),
    ]


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlackApi]:
    async with FakeSlackApi(limit=20, window=1.0) as fake:
        yield fake


@pytest.fixture
def services(bootstrap: str, tmp_path: Path, fake_slack: FakeSlackApi):
    locations = tmp_path / "locations.json"
    locations.write_bytes(orjson.dumps(LOCATIONS))
    bridge = start_bridge(bootstrap, tmp_path)
    worker = start_worker(bootstrap, tmp_path, GIFTGUARD_LOCATIONS=str(locations),
                          **fakes_env(slack=fake_slack))
    try:
        bridge.wait_healthy()
        worker.wait_healthy(timeout=90)
        yield bridge, worker
    finally:
        worker.stop()
        bridge.stop()


async def _post(session: aiohttp.ClientSession, bridge: Service, env: dict,
                key: str = SIGNATURE_KEY) -> int:
    body = orjson.dumps(env)
    url = bridge.env["SQUARE_WEBHOOK_URL"]
    headers = {SQUARE_SIGNATURE_HEADER: square_signature(key, url, body),
               "Content-Type": "application/json"}
    async with session.post(f"{bridge.url}/webhooks/square", data=body, headers=headers) as resp:
        return resp.status


async def _alerts_for(bootstrap: str, since: dict, run: str, until, timeout: float = 60.0,
                      ) -> list[dict]:
    """This run's alerts on giftcard.alerts, read until ``until(card ids)`` or ``timeout``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        records = await read_since(bootstrap, topics.ALERTS, since, timeout=1)
        alerts = [a for a in (orjson.loads(r.value) for r in records) if run in a["card_id"]]
        if until({a["card_id"] for a in alerts}) or asyncio.get_running_loop().time() > deadline:
            return alerts
        await asyncio.sleep(0.5)


async def _settled_metrics(worker: Service, timeout: float = 60.0) -> str:
    """The worker's /metrics once two reads a second apart agree (it has caught up)."""
    previous = None
    for _ in range(int(timeout)):
        status, body = worker.get("/metrics")
        assert status == 200
        text = "\n".join(line for line in body.decode().splitlines()
                         if line.startswith(("giftguard_events_total", "giftguard_alert",
                                             "giftguard_slack")))
        if text == previous:
            return body.decode()
        previous = text
        await asyncio.sleep(1.0)
    raise AssertionError("worker metrics did not settle")




async def test_webhooks_in_alerts_out(services: tuple[Service, Service], bootstrap: str,
                                      fake_slack: FakeSlackApi) -> None:
    bridge, worker = services
    run = uuid.uuid4().hex[:8]
    drain_card, drain = drain_story(run)
    bulk_cards, bulk = bulk_story(run)
    trap_card, trap = same_store_story(run)
    baseline = await _settled_metrics(worker)
    alerts_before = await end_offsets(bootstrap, topics.ALERTS)
    holds_before = await end_offsets(bootstrap, topics.HOLDS)
    tx_before = await end_offsets(bootstrap, topics.TRANSACTIONS)

    dlq_before = await end_offsets(bootstrap, topics.DEADLETTER)
    # A record the bridge would never write (not JSON) goes straight onto the topic: the worker
    # must dead-letter it and go on with the events behind it.
    poison = f"not an event {run}".encode()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    try:
        await producer.send_and_wait(topics.TRANSACTIONS, poison, key=drain_card.encode())
    finally:
        await producer.stop()

    async with aiohttp.ClientSession() as session:
        forged = envelope("REDEEM", activity_id=f"act-{run}-forged", card_id=f"gftc:f-{run}")
        assert await _post(session, bridge, forged, key="not-the-key") == 401
        statuses = [await _post(session, bridge, env) for env in [*drain, *trap, *bulk]]
    assert statuses == [200] * len(statuses)

    alerts = await _alerts_for(bootstrap, alerts_before, run,
                               until=lambda cards: drain_card in cards and len(cards & set(bulk_cards)) >= 4)
    metrics = await _settled_metrics(worker)  # every event scored, every alert acted on
    alerts = await _alerts_for(bootstrap, alerts_before, run, until=lambda cards: False, timeout=2)
    by_card = {a["card_id"]: a for a in alerts}

    drain_alert = by_card[drain_card]
    assert "rapid_drain" in drain_alert["rules"]
    assert drain_alert["event_id"] == f"square:act-{run}-d2"
    assert drain_alert["amount_at_risk_minor"] > 0 and drain_alert["reasons"]
    bulk_alerts = [a for a in alerts if "bulk_purchase" in a["rules"]]
    assert bulk_alerts, alerts
    # Alerts from several partitions arrive in no set order: take the one naming most of the batch.
    widest = max(bulk_alerts, key=lambda a: len(a["related_card_ids"]))
    related = set(widest["related_card_ids"]) | {widest["card_id"]}
    assert related <= set(bulk_cards) and len(related) >= 4, bulk_alerts
    assert trap_card not in by_card, "same-store spend after purchase must not alert"
    for a in alerts:
        assert set(a) >= {"alert_id", "card_id", "related_card_ids", "location_id", "event_id",
                          "occurred_at", "decided_at", "score", "level", "rules", "reasons",
                          "amount_at_risk_minor", "action", "model_version"}

    dead = [r for r in await read_since(bootstrap, topics.DEADLETTER, dlq_before, timeout=3)
            if r.value == poison]
    # At-least-once: a rebalance may replay the poison before its offset was committed, and
    # every copy is the same record with the same origin.
    assert dead and len({(r.value, tuple(r.headers)) for r in dead}) == 1
    headers = {k: v.decode() for k, v in dead[0].headers}
    assert headers[topics.DLQ_SOURCE] == "worker" and headers[topics.DLQ_REASON] == "invalid_event"
    assert headers[topics.DLQ_TOPIC] == topics.TRANSACTIONS and headers[topics.DLQ_OFFSET].isdigit()

    # Nothing from the forged request reached Kafka.
    tx = await read_since(bootstrap, topics.TRANSACTIONS, tx_before, timeout=5)
    assert not [r for r in tx if r.key == f"gftc:f-{run}".encode()]
    assert len([r for r in tx if run.encode() in r.key]) == len(statuses) + 1  # + the poison

    # Slack got every alert exactly once, with the card's last four digits only; alerts of one
    # incident (the bulk batch) share a thread, so a reply may carry several of them.
    ids = {a["alert_id"] for a in alerts}
    for _ in range(100):
        posts = [p for p in fake_slack.posts() if any(i in p.text + str(p.blocks) for i in ids)]
        if all(any(i in str(p.blocks) for p in posts) for i in ids):
            break
        await asyncio.sleep(0.2)
    assert all(sum(i in str(p.blocks) for p in posts) == 1 for i in ids)
    assert all(p.blocks for p in posts)
    text = orjson.dumps([p.body for p in posts]).decode()
    assert "4567" in text and "7783320001234567" not in text

    # High alerts become shadow hold records; nothing was sent to a POS.
    holds = [h for h in (orjson.loads(r.value) for r in
                         await read_since(bootstrap, topics.HOLDS, holds_before, timeout=3))
             if run in h["card_id"]]
    high = {a["card_id"] for a in alerts if a["level"] == "high"}
    assert {h["card_id"] for h in holds} == high
    assert all(h["action"] == "shadow" for h in holds)

    # The worker's /metrics counts the events and the alerts (deltas over this test).
    def delta(name: str, **labels: str) -> float:
        return metric_sum(metrics, name, **labels) - metric_sum(baseline, name, **labels)

    assert delta("giftguard_events_total") == len(statuses)
    assert delta("giftguard_deadletter_total", source="worker") == len(dead)
    assert delta("giftguard_events_total", type="activate") == 10
    assert delta("giftguard_alerts_total") == len(alerts)
    assert delta("giftguard_alert_rules_total", rule="rapid_drain") >= 1
    assert delta("giftguard_alert_rules_total", rule="bulk_purchase") >= 1
    assert delta("giftguard_slack_messages_total", outcome="sent") == len(alerts)

    # State gauges: table sizes and consumer lag are exported (updated every few seconds).
    for _ in range(30):
        text = worker.get("/metrics")[1].decode()
        if metric_sum(text, "giftguard_table_keys", table="cards") >= 11:
            break
        await asyncio.sleep(0.5)
    assert metric_sum(text, "giftguard_table_keys", table="cards") >= 11
    assert "giftguard_consumer_lag_messages{" in text
