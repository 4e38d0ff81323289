"""Worker memory per tracked card: resident memory (VmRSS) with 100,000 and 1,000,000 cards of
state; bytes per card from the slope between the two.

Replaying a million activations through one worker would take most of the benchmark's time, so
the state is made the way the worker makes it — :class:`detectors.engine.Engine` over the
activations — and written to the tables' changelog topics, exactly the records the worker's
tables would have written (raw key, raw state, the partition of the card's events). A worker
started on them restores both tables into RocksDB and then holds the same state. One live
replay (``live_cards`` activations through the real agents) checks that the two agree.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass
from pathlib import Path

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.partitioner import DefaultPartitioner

from bench.common import (
    PARTITIONS,
    Proc,
    log,
    measure,
    metric_sum,
    preload,
    reset,
    rss_bytes,
    scrape,
    start_worker,
)
from bench.data import activations
from detectors.engine import Engine
from detectors.locations import Locations
from detectors.policy import Policy
from streams import topics

CARDS_CHANGELOG = "giftguard-cards-changelog"
ENTITIES_CHANGELOG = "giftguard-entities-changelog"


def states(cards: int, locations: Path, location_ids: list[str]
           ) -> tuple[dict[bytes, bytes], dict[bytes, bytes]]:
    """Card and entity states after ``cards`` activations, as the worker's tables hold them."""
    engine = Engine(Policy.load(None), Locations.load(locations))
    card_states: dict[bytes, bytes] = {}
    entity_states: dict[bytes, bytes] = {}
    from detectors.events import Event

    mark = _card_mark()
    parts = list(range(PARTITIONS))
    partitioner = DefaultPartitioner()
    for offset, (key, value) in enumerate(activations(cards, location_ids)):
        event = Event.from_json(value)
        out = engine.on_card_event(event, None)  # every card is activated once
        if out.state is not None:
            card_states[key] = mark(partitioner(key, parts, parts), offset) + out.state
        for ek in out.forward:
            k = ek.encode()
            eo = engine.on_entity_event(ek, event, entity_states.get(k))
            if eo.state is None:
                entity_states.pop(k, None)
            else:
                entity_states[k] = eo.state
    return card_states, entity_states


def _card_mark():  # type: ignore[no-untyped-def]
    """The worker's prefix on a card's table value (where its last event was read), if any."""
    try:
        from streams.agents import _MARK, _MARK_TAG
    except ImportError:
        return lambda partition, offset: b""
    return lambda partition, offset: _MARK.pack(_MARK_TAG, partition, offset)


async def _write_changelogs(bootstrap: str, cards: dict[bytes, bytes],
                            entities: dict[bytes, bytes]) -> None:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(name, PARTITIONS, 1,
                                            topic_configs={"cleanup.policy": "compact"})
                                   for name in (CARDS_CHANGELOG, ENTITIES_CHANGELOG)])
    finally:
        await admin.close()
    await preload(bootstrap, CARDS_CHANGELOG, cards.items())
    await preload(bootstrap, ENTITIES_CHANGELOG, entities.items())


@dataclass
class Point:
    cards: int
    entities: int
    rss_bytes: int
    table_keys: float
    seconds_to_restore: float
    state_bytes: int  # raw bytes of keys and values held


def _settled_rss(proc: Proc, want_keys: float, timeout: float = 300) -> tuple[int, float]:
    """RSS once the tables hold ``want_keys`` keys (RocksDB's estimate, refreshed every 5 s)
    and RSS stopped moving."""
    deadline = time.monotonic() + timeout
    keys = 0.0
    while time.monotonic() < deadline:
        keys = metric_sum(scrape(proc), "giftguard_table_keys")
        if keys >= 0.97 * want_keys:
            break
        time.sleep(1)
    last = rss_bytes(proc.pid)
    for _ in range(20):
        time.sleep(1.5)
        now = rss_bytes(proc.pid)
        if abs(now - last) < 2 << 20:
            return now, keys
        last = now
    return last, keys


def restored(bootstrap: str, workdir: Path, locations: Path, location_ids: list[str],
             cards: int) -> Point:
    """A worker restoring ``cards`` cards of state (and their entities) from the changelogs."""
    asyncio.run(reset(bootstrap))
    card_states, entity_states = states(cards, locations, location_ids)
    asyncio.run(_write_changelogs(bootstrap, card_states, entity_states))
    size = sum(len(k) + len(v) for d in (card_states, entity_states) for k, v in d.items())
    t0 = time.monotonic()
    proc = start_worker(bootstrap, workdir, name=f"memory-{cards}",
                        GIFTGUARD_LOCATIONS=str(locations))
    try:
        proc.wait_healthy(timeout=600)
        rss, keys = _settled_rss(proc, len(card_states) + len(entity_states))
        point = Point(cards, len(entity_states), rss, keys, time.monotonic() - t0, size)
        log(f"memory: {cards:,} cards + {len(entity_states):,} entities restored -> "
            f"RSS {rss / 2**20:,.1f} MiB ({keys:,.0f} keys)")
        return point
    finally:
        proc.stop()


def idle(bootstrap: str, workdir: Path, locations: Path) -> int:
    """RSS of a worker with empty tables (the baseline)."""
    asyncio.run(reset(bootstrap))
    proc = start_worker(bootstrap, workdir, name="memory-0", GIFTGUARD_LOCATIONS=str(locations))
    try:
        proc.wait_healthy()
        rss, _ = _settled_rss(proc, 0)
        return rss
    finally:
        proc.stop()


def live(bootstrap: str, workdir: Path, locations: Path, location_ids: list[str],
         cards: int) -> Point:
    """``cards`` activations through the real agents; RSS once they are all decided."""
    asyncio.run(reset(bootstrap))
    n = asyncio.run(preload(bootstrap, topics.TRANSACTIONS, activations(cards, location_ids)))
    proc = start_worker(bootstrap, workdir, name=f"memory-live-{cards}",
                        GIFTGUARD_LOCATIONS=str(locations))
    try:
        proc.wait_healthy()
        t0 = time.monotonic()
        measure(lambda: metric_sum(scrape(proc), "giftguard_events_total"), n, timeout=900,
                alive=proc.alive)
        rss, keys = _settled_rss(proc, cards)
        log(f"memory (live): {cards:,} activations -> RSS {rss / 2**20:,.1f} MiB")
        return Point(cards, 0, rss, keys, time.monotonic() - t0, 0)
    finally:
        proc.stop()
