"""The scoring topics' records, taken from Faust's consumer a fetch at a time.

A Faust agent pays for every record on its way in: a message object, a task for each delivery
(the drain loop's ``wait_first``), the conductor's callback, an event, a queue put and get, the
stream's sensors and acknowledgement bookkeeping. The benchmark's Faust floor (an agent that
only parses each record) spends most of its time there (bench/README.md). The scoring agents'
work per event is smaller than that, so for their topics the records skip it:
:class:`Delivery` wraps the consumer's fetch (``_wait_next_records``), moves the records of
these topics into :class:`Inbox` es, a fetch at a time, and hands Faust the rest (the alerts
topic keeps Faust's own path). A topic's partitions are shared out among its inboxes (lanes),
one scoring loop each. Everything else stays Faust's: the group, the assignment, pausing
partitions during recovery, seeking, committing (from :class:`streams.progress.Progress`'s
marks), tables and their changelogs.

What Faust's path did on the way, done here instead:

- records are delivered only while the consumer's flow is active, only for active partitions;
- a full inbox holds the fetch loop back (and lets go when the flow stops, for a rebalance);
- at a revocation the inboxes are emptied and the batches in progress are waited for before
  Faust's last commit (``wait_empty``), as Faust waits for its streams' unacknowledged events;
- Faust's monitor hears that each partition's records are being taken (its check for stuck
  streams).

Ordering and completeness per partition are :meth:`Progress.admit`'s job, as before.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faust.types import TP

log = logging.getLogger("giftguard.delivery")


@dataclass(slots=True)
class Record:
    """One fetched record: its partition, offset, key and value (bytes as Kafka holds them)."""

    tp: TP
    offset: int
    key: bytes | None
    value: bytes

    @property
    def topic(self) -> str:
        return self.tp.topic

    @property
    def partition(self) -> int:
        return self.tp.partition


class Inbox:
    """Fetched records of one topic waiting for its scoring loop, in the order fetched."""

    def __init__(self, limit: int) -> None:
        #: The fetch loop waits while this many records are waiting.
        self.limit = limit
        self._records: deque[Record] = deque()
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()
        #: Set while no batch taken from here is in progress (see :meth:`take`, :meth:`done`).
        self.idle = asyncio.Event()
        self.idle.set()

    def __len__(self) -> int:
        return len(self._records)

    def put(self, records: Iterable[Record]) -> None:
        self._records.extend(records)
        if self._records:
            self._ready.set()
        if len(self._records) >= self.limit:
            self._room.clear()

    @property
    def full(self) -> bool:
        return not self._room.is_set()

    async def wait_for_room(self, at_most: float) -> None:
        """Until fewer than ``limit`` records wait, or ``at_most`` seconds passed."""
        try:
            await asyncio.wait_for(self._room.wait(), at_most)
        except TimeoutError:
            pass

    async def take(self, at_most: int) -> list[Record]:
        """The waiting records, at most ``at_most`` (waits for one); the batch they make is in
        progress until :meth:`done`."""
        records = self._records
        while not records:
            self._ready.clear()
            await self._ready.wait()
        self.idle.clear()
        if len(records) <= at_most:
            batch = list(records)
            records.clear()
        else:
            popleft = records.popleft
            batch = [popleft() for _ in range(at_most)]
        if len(records) < self.limit:
            self._room.set()
        return batch

    def done(self) -> None:
        """The batch last taken is finished (or abandoned)."""
        self.idle.set()

    def clear(self) -> None:
        self._records.clear()
        self._room.set()


class Delivery:
    """Moves the fetched records of ``inboxes``' topics from Faust's consumer into them.

    A topic may have several inboxes (lanes), each with its own scoring loop: each partition
    goes to one lane (the one with the fewest partitions when it is first seen) and stays there
    until the next revocation, so one partition's records are still scored in order, by one
    loop, while another lane's loop uses the time the first spends waiting for Kafka."""

    #: How often a fetch held back by a full inbox looks whether the flow stopped meanwhile.
    RECHECK = 0.1

    def __init__(self, app: Any, inboxes: Mapping[str, Inbox | Sequence[Inbox]]) -> None:
        self.app = app
        self.lanes: dict[str, list[Inbox]] = {
            topic: [lanes] if isinstance(lanes, Inbox) else list(lanes)
            for topic, lanes in inboxes.items()}
        self._inboxes = [inbox for lanes in self.lanes.values() for inbox in lanes]
        self._lane: dict[TP, Inbox] = {}
        consumer = app.consumer
        self._consumer = consumer
        self._faust_wait_next_records = consumer._wait_next_records
        consumer._wait_next_records = self._wait_next_records
        self._faust_wait_empty = consumer.wait_empty
        consumer.wait_empty = self._wait_empty

    def lane(self, tp: TP) -> Inbox:
        """The inbox of ``tp``'s records (chosen when the partition is first seen)."""
        inbox = self._lane.get(tp)
        if inbox is None:
            lanes = self.lanes[tp.topic]
            load = {id(inbox): 0 for inbox in lanes}
            for other, taken in self._lane.items():
                if other.topic == tp.topic:
                    load[id(taken)] += 1
            inbox = self._lane[tp] = min(lanes, key=lambda i: load[id(i)])
        return inbox

    def records(self, tp: TP, fetched: list[Any]) -> list[Record]:
        """A fetch of one partition as :class:`Record` s."""
        return [Record(tp, r.offset, r.key, r.value) for r in fetched]

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        records, active = await self._faust_wait_next_records(timeout)
        if not records:
            return records, active
        lanes = self.lanes
        mine = [tp for tp in records if tp.topic in lanes]
        if not mine:
            return records, active
        rest = {tp: recs for tp, recs in records.items() if tp.topic not in lanes}
        consumer = self._consumer
        if not consumer.flow_active:  # (a rebalance: Faust seeks back to the committed offsets)
            return rest, active
        buffered = consumer._buffered_partitions
        monitor = self.app.monitor
        now = time.monotonic()
        for tp in mine:
            if active is not None and tp not in active and tp not in buffered:
                continue
            ftp = TP(tp.topic, tp.partition)
            self.lane(ftp).put(self.records(ftp, records[tp]))
            if monitor is not None:
                monitor.stream_inbound_time[ftp] = now
        for inbox in self._inboxes:
            while inbox.full and consumer.flow_active and not consumer.should_stop:
                await inbox.wait_for_room(self.RECHECK)
        return rest, active

    #: How often a revocation still waiting for a batch in progress says so.
    WAIT_LOG_EVERY = 10.0

    async def _wait_empty(self) -> None:
        """Faust's wait for its streams (before its last commit of a revocation or shutdown),
        preceded by emptying the inboxes and waiting for the batches in progress. The next
        assignment's partitions choose their lanes afresh."""
        for inbox in self._inboxes:
            inbox.clear()
        started = time.monotonic()
        for topic, lanes in self.lanes.items():
            for inbox in lanes:
                while not inbox.idle.is_set():
                    try:
                        await asyncio.wait_for(inbox.idle.wait(), self.WAIT_LOG_EVERY)
                    except TimeoutError:
                        log.warning("still waiting for a batch of %s after %.0f s", topic,
                                    time.monotonic() - started)
        self._lane.clear()
        await self._faust_wait_empty()
