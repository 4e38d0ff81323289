"""Reliability 6: the same webhook many times, and Square's updates before their originals.

Fault: every webhook is delivered 4 times (twice to each of two bridges, as when Square retries
across a bridge restart or a second replica: each bridge's duplicate memory is its own, so each
event reaches ``giftcard.transactions`` twice and the worker must ignore the second copy), and
the ``gift_card.activity.updated`` webhook (PENDING -> COMPLETED or CANCELED) of two redemptions
arrives *before* the PENDING original.
Load: three cards: a drain whose redemption is completed (update first), a purchase whose
redemption is canceled (update first) and then spent again, and an ordinary card in order.
Counted and asserted: deliveries and their answers (all 200; a repeated delivery to a bridge is
answered without a second write, also when two copies arrive at the same moment), records
per event id on ``giftcard.transactions``
(exactly 2: one per bridge), and — against the same events run once, in order, in-process —
every card's state (balance, debits, credits, counters, learned statistics, windows and alert
state; all but the ring of recent event ids and open pending entries), and the alerts (same cards,
rules, levels and amounts, each raised once).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest

from detectors.engine import Engine
from detectors.events import format_time, parse_time
from detectors.locations import Locations
from detectors.square import normalize_square, salted_hasher
from detectors.state import CardState
from streams import topics
from streams.settings import Settings
from streams.signatures import SQUARE_SIGNATURE_HEADER, square_signature
from tests.kafka_helpers import end_offsets, read_since
from tests.reliability import (
    CARDS_CHANGELOG,
    FAST_FAILOVER,
    alerts_of,
    new_run,
    table_from_changelog,
    wait_consumed,
)
from tests.services import SIGNATURE_KEY, start_bridge, start_worker
from tests.square_envelopes import envelope

pytestmark = [pytest.mark.integration, pytest.mark.timeout(150)]

NOTIFICATION_URL = "https://giftguard.test/webhooks/square"
T0 = parse_time("2026-11-20T15:00:00Z")
COPIES_PER_BRIDGE = 2
#: Card-state fields that are bookkeeping of *how* events arrived (the ring of recent event ids,
#: open pending entries), not what the card is: everything else must match the in-order run.
BOOKKEEPING = {"eids", "eid_idx", "pending", "n_pending"}


def _t(minute: float) -> str:
    return format_time(T0 + minute * 60).replace(".000Z", "Z")


def stories(run: str) -> tuple[list[dict], list[dict]]:
    """(the webhooks in the order they happened, the order they are delivered in)."""
    drain, refund, plain = f"gftc:{run}-drain", f"gftc:{run}-cancel", f"gftc:{run}-plain"
    a = [
        envelope("ACTIVATE", activity_id=f"{run}-a1", card_id=drain, location_id="NYC",
                 amount=20000, balance=20000, created_at=_t(0)),
        envelope("REDEEM", activity_id=f"{run}-a2", card_id=drain, location_id="LA",
                 amount=19000, balance=1000, created_at=_t(7), status="PENDING"),
        envelope("REDEEM", activity_id=f"{run}-a2", card_id=drain, location_id="LA",
                 amount=19000, balance=1000, created_at=_t(7), status="COMPLETED",
                 event_type="gift_card.activity.updated"),
    ]
    b = [
        envelope("ACTIVATE", activity_id=f"{run}-b1", card_id=refund, location_id="NYC",
                 amount=10000, balance=10000, created_at=_t(0)),
        envelope("REDEEM", activity_id=f"{run}-b2", card_id=refund, location_id="NYC",
                 amount=3000, balance=7000, created_at=_t(300), status="PENDING"),
        envelope("REDEEM", activity_id=f"{run}-b2", card_id=refund, location_id="NYC",
                 amount=3000, balance=10000, created_at=_t(300), status="CANCELED",
                 event_type="gift_card.activity.updated"),
        envelope("REDEEM", activity_id=f"{run}-b3", card_id=refund, location_id="NYC",
                 amount=2500, balance=7500, created_at=_t(400), status="COMPLETED"),
    ]
    c = [
        envelope("ACTIVATE", activity_id=f"{run}-c1", card_id=plain, location_id="LA",
                 amount=5000, balance=5000, created_at=_t(0)),
        envelope("REDEEM", activity_id=f"{run}-c2", card_id=plain, location_id="LA",
                 amount=1200, balance=3800, created_at=_t(2000), status="COMPLETED"),
        envelope("LOAD", activity_id=f"{run}-c3", card_id=plain, location_id="LA",
                 amount=2000, balance=5800, created_at=_t(3000)),
    ]
    happened = [*a, *b, *c]
    delivered = [a[0], a[2], a[1], b[0], b[2], b[1], b[3], *c]  # updates before originals
    return happened, delivered


async def test_duplicates_and_out_of_order_updates(bootstrap: str, tmp_path: Path) -> None:
    run = new_run()
    locations = [
        {"location_id": "NYC", "name": "New York", "lat": 40.75, "lon": -73.98,
         "timezone": "America/New_York"},
        {"location_id": "LA", "name": "Los Angeles", "lat": 34.04, "lon": -118.25,
         "timezone": "America/Los_Angeles"},
    ]
    loc_file = tmp_path / "locations.json"
    loc_file.write_bytes(orjson.dumps(locations))
    happened, delivered = stories(run)

    # The reference: each event once, in the order it happened.
    hasher = salted_hasher(Settings().giftguard_hash_salt.get_secret_value())
    engine = Engine(locations=Locations.load(loc_file))
    ref_states: dict[str, bytes | None] = {}
    ref_alerts = []
    for env in happened:
        ev = normalize_square(env, hasher)
        out = engine.on_card_event(ev, ref_states.get(ev.card_id))
        ref_states[ev.card_id] = out.state
        ref_alerts += out.alerts

    bridges = []
    for i in range(2):
        (tmp_path / f"bridge{i}").mkdir()
        bridges.append(start_bridge(bootstrap, tmp_path / f"bridge{i}",
                                    notification_url=NOTIFICATION_URL))
    worker = start_worker(bootstrap, tmp_path, GIFTGUARD_LOCATIONS=str(loc_file), **FAST_FAILOVER)
    try:
        for b in bridges:
            await asyncio.to_thread(b.wait_healthy, 60)
        await asyncio.to_thread(worker.wait_healthy, 90)
        tx_since = await end_offsets(bootstrap, topics.TRANSACTIONS)
        alerts_since = await end_offsets(bootstrap, topics.ALERTS)
        changelog_since = await end_offsets(bootstrap, CARDS_CHANGELOG)
        answers: Counter[tuple[int, str]] = Counter()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as session:
            async def post(bridge, body: bytes) -> None:
                headers = {SQUARE_SIGNATURE_HEADER: square_signature(
                    SIGNATURE_KEY, NOTIFICATION_URL, body), "Content-Type": "application/json"}
                async with session.post(f"{bridge.url}/webhooks/square", data=body,
                                        headers=headers) as resp:
                    answers[(resp.status, (await resp.json()).get("status", "?"))] += 1

            for env in delivered:
                body = orjson.dumps(env)
                # Two deliveries at once to the first bridge (a retry racing the original),
                # then two one after the other to the second.
                await asyncio.gather(post(bridges[0], body), post(bridges[0], body))
                await post(bridges[1], body)
                await post(bridges[1], body)
        await wait_consumed(bootstrap, [topics.TRANSACTIONS, topics.ENTITY_EVENTS], timeout=60)
        tx = [r for r in await read_since(bootstrap, topics.TRANSACTIONS, tx_since, timeout=10)
              if run.encode() in (r.key or b"")]
        alerts = await alerts_of(bootstrap, f"gftc:{run}", alerts_since)
        states = await table_from_changelog(bootstrap, CARDS_CHANGELOG, run, changelog_since)
    finally:
        worker.stop()
        for b in bridges:
            b.stop()

    deliveries = len(delivered) * 2 * COPIES_PER_BRIDGE
    assert sum(answers.values()) == deliveries
    assert all(status == 200 for status, _ in answers), answers
    # A delivery racing the same one in flight shares its answer ("accepted"); a later one is
    # answered "duplicate"; either way the bridge writes once (counted on the topic below).
    assert answers[(200, "accepted")] + answers[(200, "duplicate")] == deliveries, answers
    assert answers[(200, "duplicate")] >= len(delivered), answers
    per_event = Counter(orjson.loads(r.value)["event_id"] for r in tx)
    assert len(per_event) == len(delivered) and set(per_event.values()) == {2}, per_event

    # Each card as if every event had happened once, in order.
    diffs = {}
    for card, ref in ref_states.items():
        ours, theirs = CardState.decode(states.get(card)), CardState.decode(ref)
        diffs[card] = {n: (getattr(ours, n), getattr(theirs, n)) for n in CardState.__slots__
                       if n not in BOOKKEEPING and getattr(ours, n) != getattr(theirs, n)}
        assert ours.n_pending == 0, "a settled redemption was left pending"
    assert not {c: d for c, d in diffs.items() if d}, diffs

    # The same alerts, each raised once (the event that raises a drain alert may be the
    # update rather than the original, when the update came first: compare what they say).
    def what(a: dict) -> tuple:
        return (a["card_id"], tuple(a["rules"]), a["level"], a["amount_at_risk_minor"])

    assert Counter(what(a) for a in alerts) == Counter(what(a.to_dict()) for a in ref_alerts)
    assert len({a["alert_id"] for a in alerts}) == len(alerts), "an alert was raised twice"
    print(f"\nduplicates/order: {len(delivered)} webhooks x {2 * COPIES_PER_BRIDGE} deliveries "
          f"= {deliveries}, answers {dict(answers)}; {len(tx)} records on giftcard.transactions "
          f"({len(per_event)} event ids x 2 bridges); {len(alerts)} alerts out "
          f"(reference {len(ref_alerts)}); {len(ref_states)} cards match the in-order run")
