"""Reliability 7 (rebalance), the loss behind it: fetched records that never reach scoring.

Fault: a worker that drops three runs of records on their way to the scoring loops, once each
(``tests/fakes/lossy_worker.py``), as Faust's consumer once dropped records around a rebalance
(the rebalance test saw a partition start 42 records past its committed offset, and those
records were committed past and lost: 77 cards): 25 records in the middle of a
``giftcard.transactions`` partition, 3 of a ``giftguard.entity-events`` partition (when it gets
that many: its records are batches), and the last 5 records of another transactions partition
(a hole with nothing after it to show it).
Load: about 1,000 simulated events at 200/s.
Counted and asserted: every card's final state against the same events run in-process (so the
dropped records were read again and applied, in order, once), the card-scope alert ids, that the
worker logged reading each hole again, and that the group committed every partition's end.
"""

from __future__ import annotations

import re

import pytest
from aiokafka.partitioner import DefaultPartitioner

from streams import topics
from streams.admin import ensure_topics
from tests.kafka_helpers import end_offsets
from tests.reliability import (
    CARDS_CHANGELOG,
    alerts_of,
    produce,
    reference,
    sim_run,
    state_diff,
    table_from_changelog,
    wait_consumed,
)
from tests.services import start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]


async def test_records_lost_before_the_agent_are_read_again(bootstrap: str, tmp_path) -> None:
    run = sim_run(tmp_path, events=1000, seed=21)
    ref = reference(run)
    await ensure_topics([bootstrap], 4)                    # (the worker would make them)
    txn = {tp.partition: o for tp, o in (await end_offsets(bootstrap, topics.TRANSACTIONS)).items()}
    ent = {tp.partition: o for tp, o in (await end_offsets(bootstrap, topics.ENTITY_EVENTS)).items()}
    alerts_since = await end_offsets(bootstrap, topics.ALERTS)
    changelog_since = await end_offsets(bootstrap, CARDS_CHANGELOG)
    # How many of the run's events each transactions partition gets (keyed by card, murmur2).
    per_partition = [0] * len(txn)
    for e in run.events:
        per_partition[DefaultPartitioner()(e.card_id.encode(), sorted(txn), None)] += 1
    tail = txn[3] + per_partition[3]
    lose = (f"{topics.TRANSACTIONS}:1:{txn[1] + 60}:{txn[1] + 84},"
            f"{topics.ENTITY_EVENTS}:2:{ent[2] + 3}:{ent[2] + 5},"
            f"{topics.TRANSACTIONS}:3:{tail - 5}:{tail - 1}")
    worker = start_worker(bootstrap, tmp_path, module="tests.fakes.lossy_worker",
                          GIFTGUARD_LOCATIONS=str(run.locations_path), GG_LOSE=lose,
                          GIFTGUARD_LOG_LEVEL="INFO")
    try:
        worker.wait_healthy(90)
        sent = await produce(bootstrap, run.events, rate=200.0)
        await wait_consumed(bootstrap, [topics.TRANSACTIONS, topics.ENTITY_EVENTS], timeout=90)
        alerts = await alerts_of(bootstrap, run.run, alerts_since)
        states = await table_from_changelog(bootstrap, CARDS_CHANGELOG, run.run, changelog_since)
    finally:
        worker.stop()
    log = worker.log_path.read_text()
    dropped = {(t, int(p)): int(o) for t, p, o in re.findall(
        r"lossy_worker: dropped (\S+)\[(\d+)\] from offset (\d+)", log)}
    # The transactions holes always happen (their offsets follow from the events); the entity
    # topic's records are batches of updates, so how many a partition gets varies.
    assert {(topics.TRANSACTIONS, 1), (topics.TRANSACTIONS, 3)} <= set(dropped), dropped
    for (topic, partition), first in dropped.items():
        # (read again from the hole, or from before it when a slow start made the worker
        # read more again: on a fresh broker a new topic's first writes can wait 30 s)
        again = [int(o) for o in re.findall(
            rf"{re.escape(topic)}\[{partition}\]: reading again from offset (\d+)", log)]
        assert any(o <= first for o in again), (topic, partition, first, again)
    assert "did not come after" not in log and "never reached the agent" not in log
    wrong = {c: state_diff(states.get(c), s) for c, s in ref.card_states.items()
             if states.get(c) != s}
    assert not wrong, f"{len(wrong)} of {len(ref.card_states)} cards differ: {list(wrong.items())[:2]}"
    assert {a["alert_id"] for a in alerts} >= set(ref.card_alerts)
    print(f"\nholes: {sent} events in; records dropped once before the agents from "
          f"{sorted(dropped.items())} (25 and the last 5 of two transactions partitions, 3 "
          f"entity records), all read again; {len(ref.card_states)} card states identical; "
          f"{len(alerts)} alert records")
