"""Reliability 4: poison input reaches the worker; it is dead-lettered and the worker goes on.

Fault: records on ``giftcard.transactions`` the detectors cannot process, of every kind we found:
- not JSON at all, and JSON with a wrong type (``amount_minor: "12.50"``): rejected by
  validation in the card agent (reason ``invalid_event``);
- a *valid* event whose optional ``received_at`` is not a time: it passes validation and raises
  later in the card agent, from the worker's own code (a bug class: unvalidated optional field);
- a *valid* activation dated 0001-01-01T00:00:00Z at a store west of Greenwich: the card scope
  takes it, and the location model raises ``OverflowError`` (local time before year 1) inside
  the **entity** agent, on the internal topic (a value out of range);
- a *valid* activation whose ``payment_ref`` is a number, not a string: it raises ``TypeError``
  inside the entity agent (a wrong type the validation lets through).
Faust would skip an event whose agent raised, silently; ours must dead-letter it.
Load: the poison records interleaved with ordinary stories on the same card and the same store
(one rapid drain on a poisoned card, one bulk purchase at the poisoned store), so the very keys
that carried poison must still be processed afterwards.
Counted: poison records in, dead-letter records out (exactly one each, with the reason, the
source, topic, partition and offset headers, and the original bytes), alerts out for the stories
behind the poison, and the worker's ``giftguard_deadletter_total`` by reason.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest
from aiokafka import AIOKafkaProducer

from streams import topics
from tests.kafka_helpers import end_offsets, read_since
from tests.reliability import FAST_FAILOVER, alerts_of, new_run, wait_consumed
from tests.services import metric_sum, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]




def _t(minute: float) -> str:
    total = int(minute * 60)
    return f"2026-11-20T{15 + total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}Z"


def _event(run: str, n: str, typ: str, card: str, loc: str, amount: int, minute: float,
           **extra: object) -> dict:
    return {"event_id": f"square:{run}-{n}", "type": typ, "card_id": f"{run}-{card}",
            "location_id": f"{run}-{loc}", "amount_minor": amount, "currency": "USD",
            "occurred_at": _t(minute), "source": "square", **extra}


async def test_poison_is_dead_lettered_and_the_worker_goes_on(bootstrap: str,
                                                               tmp_path: Path) -> None:
    run = new_run()
    locations = [
        {"location_id": f"{run}-NYC", "name": "New York", "lat": 40.75, "lon": -73.98,
         "timezone": "America/New_York"},
        {"location_id": f"{run}-LA", "name": "Los Angeles", "lat": 34.04, "lon": -118.25,
         "timezone": "America/Los_Angeles"},
    ]
    loc_file = tmp_path / "locations.json"
    loc_file.write_bytes(orjson.dumps(locations))

    def enc(ev: dict) -> bytes:
        return orjson.dumps(ev)

    # (key, value bytes, expected reason, the topic the failing agent reads)
    poison = [
        (f"{run}-drain", f"not an event {run}".encode(), "invalid_event", topics.TRANSACTIONS),
        (f"{run}-drain", enc(_event(run, "p1", "redeem", "drain", "NYC", 100, 1,
                                    amount_minor="12.50")), "invalid_event",
         topics.TRANSACTIONS),
        (f"{run}-recv", enc(_event(run, "p2", "activate", "recv", "NYC", 100, 2,
                                   received_at="yesterday")), "invalid_event",
         topics.TRANSACTIONS),
        (f"{run}-ancient", enc(dict(_event(run, "p3", "activate", "ancient", "NYC", 10000, 0),
                                    occurred_at="0001-01-01T00:00:00Z")), "OverflowError",
         topics.ENTITY_EVENTS),
        (f"{run}-typed", enc(_event(run, "p4", "activate", "typed", "NYC", 50000, 3,
                                    payment_ref=12345)), "TypeError", topics.ENTITY_EVENTS),
    ]
    good = [
        # A rapid drain on the card that carried the first two poison records.
        _event(run, "d1", "activate", "drain", "NYC", 20000, 5),
        _event(run, "d2", "redeem", "drain", "LA", 19000, 12, status="completed"),
        # A bulk purchase at the store whose location window saw the entity-agent poison.
        *[_event(run, f"b{i}", "activate", f"bulk{i}", "NYC", 50000, 60 + 2.5 * i,
                 payment_ref=f"{run}-stolen") for i in range(8)],
    ]
    worker = start_worker(bootstrap, tmp_path, GIFTGUARD_LOCATIONS=str(loc_file), **FAST_FAILOVER)
    try:
        await asyncio.to_thread(worker.wait_healthy, 90)
        before = worker.get("/metrics")[1].decode()
        dlq_since = await end_offsets(bootstrap, topics.DEADLETTER)
        alerts_since = await end_offsets(bootstrap, topics.ALERTS)
        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            # Poison first, then the stories on the same keys.
            for key, value, _, _ in poison:
                await producer.send_and_wait(topics.TRANSACTIONS, value, key=key.encode())
            for ev in good:
                await producer.send_and_wait(topics.TRANSACTIONS, enc(ev),
                                             key=ev["card_id"].encode())
        finally:
            await producer.stop()
        await wait_consumed(bootstrap, [topics.TRANSACTIONS, topics.ENTITY_EVENTS], timeout=60)
        dead = [r for r in await read_since(bootstrap, topics.DEADLETTER, dlq_since, timeout=10)
                if run.encode() in (r.key or b"") or run.encode() in r.value]
        alerts = await alerts_of(bootstrap, run, alerts_since)
        after = worker.get("/metrics")[1].decode()
        assert worker.process.poll() is None, "the worker died"
    finally:
        worker.stop()

    # One dead-letter record per poison record (copies only if replayed), original bytes and why.
    by_value = {}
    for r in dead:
        headers = {k: v.decode() for k, v in r.headers}
        # At-least-once: a rebalance may replay a poison record before its offset was committed;
        # every copy must then be the same record from the same place (as in the end-to-end test).
        assert by_value.get(r.value, headers) == headers, f"dead-lettered differently: {r.value[:80]!r}"
        by_value[r.value] = headers
    assert len(by_value) == len(poison), [(h[topics.DLQ_REASON], v[:60]) for v, h in by_value.items()]
    for _key, value, reason, topic in poison:
        headers = by_value[value]  # the original bytes, unchanged
        assert headers[topics.DLQ_REASON] == reason, headers
        assert headers[topics.DLQ_SOURCE] == "worker"
        assert headers[topics.DLQ_TOPIC] == topic
        assert headers[topics.DLQ_PARTITION].isdigit() and headers[topics.DLQ_OFFSET].isdigit()
        assert headers[topics.DLQ_ERROR]

    # The worker went on, on the very keys that carried poison.
    rules = {r for a in alerts for r in a["rules"]}
    assert any(a["card_id"] == f"{run}-drain" and "rapid_drain" in a["rules"] for a in alerts)
    assert "bulk_purchase" in rules, alerts
    for reason in ("invalid_event", "OverflowError", "TypeError"):
        expected = sum(1 for r in dead if dict(r.headers)[topics.DLQ_REASON].decode() == reason)
        got = (metric_sum(after, "giftguard_deadletter_total", reason=reason, source="worker")
               - metric_sum(before, "giftguard_deadletter_total", reason=reason, source="worker"))
        assert got == expected, (reason, got)
    print(f"\npoison: {len(poison)} poison records + {len(good)} good events in; "
          f"{len(dead)} dead-lettered ({sorted(h[topics.DLQ_REASON] for h in by_value.values())}); "
          f"{len(alerts)} alerts out ({sorted(rules)})")
