"""Reliability 7: a second worker joins during the stream and leaves again.

Fault: while a stream is being written, a second worker (its own web port and RocksDB
directory) joins the consumer group; partitions and their table partitions move to it
(restored from the changelogs); later it is stopped (SIGTERM) and its partitions move back.
Load: a simulated stream of about 3,000 canonical events written at a steady rate.
Counted and asserted: events each worker scored (its ``giftguard_events_total``: both did work,
so partitions really moved), and, against the same events run once in-process, every card's final
state (byte-for-byte: no event processed by neither worker, none applied twice) and the distinct
card-scope alert ids; every incident the reference alerts on is alerted.
"""

from __future__ import annotations

import asyncio
import re
import time
from pathlib import Path

import pytest

from streams import topics
from tests.kafka_helpers import end_offsets
from tests.reliability import (
    CARDS_CHANGELOG,
    FAST_FAILOVER,
    alerts_of,
    changelog_history,
    incidents_alerted,
    produce,
    reference,
    sim_run,
    state_diff,
    table_from_changelog,
    wait_consumed,
)
from tests.services import start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

RATE = 150.0


def _events_scored(text: str) -> float:
    return sum(float(m.group(1)) for m in
               re.finditer(r"^giftguard_events_total\{[^}]*\} ([0-9.e+-]+)$", text, re.M))


async def test_second_worker_joins_and_leaves(bootstrap: str, tmp_path: Path) -> None:
    run = sim_run(tmp_path, events=3000, seed=12)
    ref = reference(run)
    alerts_since = await end_offsets(bootstrap, topics.ALERTS)
    changelog_since = await end_offsets(bootstrap, CARDS_CHANGELOG)
    env = dict(GIFTGUARD_LOCATIONS=str(run.locations_path), **FAST_FAILOVER)
    first = start_worker(bootstrap, tmp_path, name="worker-a", **env)
    second = None
    moments: dict[str, float] = {}
    scored: dict[str, float] = {}
    try:
        await asyncio.to_thread(first.wait_healthy, 90)
        started = time.monotonic()

        async def join_and_leave() -> None:
            nonlocal second
            await asyncio.sleep(5)
            moments["joined"] = time.monotonic() - started
            second = start_worker(bootstrap, tmp_path, name="worker-b", **env)
            await asyncio.to_thread(second.wait_healthy, 90)
            moments["healthy"] = time.monotonic() - started
            await asyncio.sleep(6)
            # It leaves once it has scored something: joining, restoring its tables and
            # catching up can take longer on a loaded machine, and a busy worker may answer
            # /metrics slowly.
            for _ in range(40):
                body = (await asyncio.to_thread(second.get, "/metrics", 10.0))[1]
                scored["b"] = _events_scored(body.decode())
                if scored["b"] > 0:
                    break
                await asyncio.sleep(0.5)
            moments["left"] = time.monotonic() - started
            await asyncio.to_thread(second.stop)

        mover = asyncio.create_task(join_and_leave())
        sent = await produce(bootstrap, run.events, rate=RATE)
        await mover
        await wait_consumed(bootstrap, [topics.TRANSACTIONS, topics.ENTITY_EVENTS], timeout=120)
        elapsed = time.monotonic() - started
        scored["a"] = _events_scored(first.get("/metrics")[1].decode())
        alerts = await alerts_of(bootstrap, run.run, alerts_since)
        states = await table_from_changelog(bootstrap, CARDS_CHANGELOG, run.run, changelog_since)
    finally:
        first.stop()
        if second is not None:
            second.stop()

    assert scored["b"] > 0, "the second worker never got a partition"
    assert scored["a"] > 0
    wrong = {c: state_diff(states.get(c), s) for c, s in ref.card_states.items()
             if states.get(c) != s}
    if wrong:
        history = await changelog_history(bootstrap, list(wrong)[:3], changelog_since)
        pytest.fail(f"{len(wrong)} of {len(ref.card_states)} cards differ: "
                    f"{list(wrong.items())[:2]}; changelog (partition, offset, event offset, "
                    f"events applied): {history}")
    distinct = {a["alert_id"] for a in alerts}
    assert distinct & set(ref.card_alerts) == set(ref.card_alerts)
    expected = incidents_alerted(run, ref.alerts.values())
    assert incidents_alerted(run, alerts) >= expected
    print(f"\nrebalance: {sent} events in; worker B joined at {moments['joined']:.1f} s (healthy "
          f"{moments['healthy']:.1f} s), left at {moments['left']:.1f} s; events scored: A "
          f"{scored['a']:.0f} (incl. its share before and after), B {scored['b']:.0f}; "
          f"{len(ref.card_states)} card states identical; {len(alerts)} alert records, "
          f"{len(distinct)} distinct ({len(ref.card_alerts)} card-scope as the reference); "
          f"{len(expected)} incidents alerted; all consumed at {elapsed:.0f} s")
