"""The offsets the scoring agents commit: how far each partition is processed.

Faust commits, per partition, the end of the first unbroken run of acknowledged offsets, and
never commits across a gap. Around rebalances its bookkeeping of acknowledgements can keep a gap
that will never be filled (acknowledgements arriving after a partition was revoked, records
fetched between a recovery's resume and its seek); that partition's commits then stop for good
(seen in the rebalance test: about 100 records of lag left on a partition until a restart).

The scoring agents know exactly how far they got: each reads its partitions in order, a batch at
a time, and a batch's events are done (states, alerts and forwarded records acknowledged by
Kafka, or the event dead-lettered) when the batch's ``finish()`` returns. :class:`Progress`
keeps that mark per partition and answers Faust's ``_new_offset`` with it for the topics it owns;
every other topic keeps Faust's own logic. Faust still decides when to commit.

A mark is only right if the agent saw every record before it. That did not always hold: after
a rebalance a worker was seen starting partitions 5 to 42 records past the offset the last owner
had committed (the rebalance test, 77 cards; the records had been fetched, but never reached the
agent), and its marks then committed past records nobody processed. So :meth:`admit` lets a
record through only if it is the next one of its partition:

- the start of each partition in a generation is the committed offset Faust's seek learns from
  Kafka after recovery (a batch that comes earlier waits for it);
- a record below the next offset was processed already and is skipped;
- a record above it (a hole) is not processed: the partition is read again from the next offset;
- a hole at the end of a partition, with nothing after it to show it, is found by
  :meth:`check_tails`: records fetched that stay unprocessed are read again.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from faust.types import TP

log = logging.getLogger("giftguard.progress")


class _Positioned(Protocol):
    """What admit and done read of a record (a delivered record, or a Faust message)."""

    tp: TP
    offset: int


R = TypeVar("R", bound=_Positioned)

#: ``starts`` value for a partition with no committed offset: it starts at its first record.
ANYWHERE = -1


@dataclass
class _Repair:
    """A hole being read again: from which offset, when the last seek was, how many seeks."""

    offset: int
    sought_at: float
    seeks: int = 1


class Progress:
    """Per-partition "processed up to" marks for ``topics``, committed by Faust's consumer."""

    def __init__(self, consumer: Any, topics: Iterable[str]) -> None:
        self.topics = frozenset(topics)
        self.marks: dict[TP, int] = {}
        self._consumer = consumer
        self._faust_new_offset = consumer._new_offset
        consumer._new_offset = self._new_offset
        self._faust_pending = consumer._filter_tps_with_pending_acks
        consumer._filter_tps_with_pending_acks = self._pending
        self._faust_seek_to_committed = consumer.seek_to_committed
        consumer.seek_to_committed = self._seek_to_committed
        #: Where each partition starts in this generation: Kafka's committed offset (or ANYWHERE).
        self.starts: dict[TP, int] = {}
        self._repairs: dict[TP, _Repair] = {}
        #: Per partition: its next offset when last looked at by check_tails, and since when.
        self._still: dict[TP, tuple[int, float]] = {}
        #: Partitions with records admitted and not yet done, since when (a batch in progress).
        self._busy: dict[TP, float] = {}

    #: How long a batch waits for its partitions' committed offsets before going on unchecked.
    START_WAIT = 30.0
    #: A hole is sought again if its next record has not come this long after the last seek...
    SEEK_AGAIN = 5.0
    #: ...up to this many seeks; then the records are taken as gone (logged as an error).
    SEEKS = 3

    async def admit(self, records: Sequence[R]) -> list[R]:
        """The records of a batch to process: per partition, the run that continues from where
        it was processed to (or from its committed offset). Records of a partition whose start
        is unknown because flow stopped (a revocation) are left for the next owner; the rest of
        a partition after a hole is left out while the hole is read again."""
        tps = {record.tp for record in records}
        if any(tp not in self.starts and tp not in self.marks for tp in tps):
            await self._wait_for_starts(tps)
        admitted: list[R] = []
        expected: dict[TP, int | None] = {}
        seek: dict[TP, int] = {}
        for record in records:
            tp, offset = record.tp, record.offset
            if tp in expected:
                nxt = expected[tp]
            else:
                nxt = self.marks.get(tp)
                if nxt is None:
                    if tp not in self.starts:
                        expected[tp] = None  # flow stopped before the start was known
                        continue
                    nxt = self.starts[tp]
            if nxt is None or tp in seek:
                continue
            if nxt == ANYWHERE or offset == nxt or (offset > nxt and self._give_up(tp, nxt, offset)):
                if tp in self._repairs and offset == nxt:
                    del self._repairs[tp]
                    log.info("%s[%d]: reading again from offset %d", tp.topic, tp.partition, nxt)
                expected[tp] = offset + 1
                admitted.append(record)
            elif offset > nxt:
                if self._should_seek(tp, nxt, offset):
                    seek[tp] = nxt
                expected[tp] = nxt
            # (offset < nxt: processed already, here or by the last owner)
        now = time.monotonic()
        for tp in {record.tp for record in admitted}:
            self._busy.setdefault(tp, now)
        if seek:
            await self._seek(seek)
        return admitted

    #: A partition whose fetched records have stayed unprocessed this long is read again...
    STALL = 10.0
    #: ...unless a batch of it is in progress (waiting for Kafka), for up to this long.
    BUSY_AT_MOST = 120.0

    async def check_tails(self) -> None:
        """Read again the partitions whose next offset has not moved for STALL seconds while
        the consumer has fetched past it: records lost on the way with none after them (a batch
        that is merely slow is harmless to read again: :meth:`admit` skips the copies)."""
        now = time.monotonic()
        for tp in list(self.starts.keys() | self.marks.keys()):
            nxt = self.marks.get(tp, self.starts.get(tp))
            if nxt is None or nxt == ANYWHERE:
                continue
            still = self._still.get(tp)
            if still is None or still[0] != nxt:
                self._still[tp] = (nxt, now)
                continue
            busy_since = self._busy.get(tp)
            if now - still[1] < self.STALL or (busy_since is not None
                                               and now - busy_since < self.BUSY_AT_MOST):
                continue
            try:
                position = await self._consumer.position(tp)
            except Exception:  # (revoked meanwhile: nothing to read again here)
                continue
            if position is None or position <= nxt:
                continue
            log.warning("%s[%d]: records %d..%d fetched but not processed for %.0f s; reading "
                        "again from %d", tp.topic, tp.partition, nxt, position - 1,
                        now - still[1], nxt)
            self._repairs[tp] = _Repair(nxt, now)
            self._still[tp] = (nxt, now)
            await self._seek({tp: nxt})

    async def _seek(self, offsets: dict[TP, int]) -> None:
        """Read these partitions again from these offsets (the repair retries if it fails)."""
        try:
            await self._consumer.seek_wait(offsets)
        except Exception as exc:  # (a rebalance took the partition: the next owner reads it)
            log.warning("seek to %s failed: %r", offsets, exc)

    async def _wait_for_starts(self, tps: set[TP]) -> None:
        deadline = time.monotonic() + self.START_WAIT
        while any(tp not in self.starts and tp not in self.marks for tp in tps):
            if not self._consumer.flow_active:
                return
            if time.monotonic() > deadline:
                assigned = self._consumer.assignment()
                for tp in tps:
                    if tp not in self.starts and tp in assigned:  # (others: left out)
                        log.warning("%s[%d]: committed offset unknown after %.0f s; going on "
                                    "unchecked", tp.topic, tp.partition, self.START_WAIT)
                        self.starts[tp] = ANYWHERE
                return
            await asyncio.sleep(0.005)

    def _should_seek(self, tp: TP, nxt: int, offset: int) -> bool:
        """A hole before ``offset``: seek back to ``nxt`` now, unless a seek there is recent."""
        repair, now = self._repairs.get(tp), time.monotonic()
        if repair is None or repair.offset != nxt:
            log.warning("%s[%d]: record %d came where %d was next; reading again from %d",
                        tp.topic, tp.partition, offset, nxt, nxt)
            self._repairs[tp] = _Repair(nxt, now)
            return True
        if now - repair.sought_at >= self.SEEK_AGAIN:
            repair.sought_at, repair.seeks = now, repair.seeks + 1
            return True
        return False

    def _give_up(self, tp: TP, nxt: int, offset: int) -> bool:
        """Whether the records ``nxt..offset-1`` are taken as gone (sought SEEKS times)."""
        repair = self._repairs.get(tp)
        if (repair is None or repair.offset != nxt or repair.seeks < self.SEEKS
                or time.monotonic() - repair.sought_at < self.SEEK_AGAIN):
            return False
        log.error("%s[%d]: records %d..%d did not come after %d seeks; going on from %d",
                  tp.topic, tp.partition, nxt, offset - 1, repair.seeks, offset)
        del self._repairs[tp]
        return True

    async def _seek_to_committed(self) -> Mapping[TP, Any]:
        """Faust's seek after recovery; its answer is where each partition starts."""
        committed = await self._faust_seek_to_committed()
        for tp, offset in committed.items():
            if tp.topic in self.topics:
                self.starts[TP(tp.topic, tp.partition)] = (
                    offset if offset is not None and offset >= 0 else ANYWHERE)
        return committed

    def done(self, records: Iterable[Any]) -> None:
        """These records are processed: each partition's mark moves past the highest offset.
        A partition revoked while its batch was in progress is not marked (not ours now)."""
        marks, busy, starts = self.marks, self._busy, self.starts
        for record in records:
            tp, offset = record.tp, record.offset
            busy.pop(tp, None)
            mark = marks.get(tp)
            if mark is None and tp not in starts:
                continue
            if mark is None:
                log.info("%s[%d]: first record processed since assignment at offset %d",
                         tp.topic, tp.partition, offset)
            elif offset > mark:
                log.warning("%s[%d]: records %d..%d never reached the agent", tp.topic,
                            tp.partition, mark, offset - 1)
            if mark is None or offset >= mark:
                marks[tp] = offset + 1

    def abandon(self, records: Iterable[Any]) -> None:
        """A batch failed: its records are not done (the next ones show the hole)."""
        for record in records:
            self._busy.pop(record.tp, None)

    def forget(self, partitions: Iterable[TP], revoked: bool = True) -> None:
        """Revoked or newly assigned: the next generation starts from the committed offset
        (learnt again from Faust's seek once revoked; an assignment may come after that seek)."""
        for tp in partitions:
            if revoked:
                self.starts.pop(tp, None)
                self._repairs.pop(tp, None)
                self._still.pop(tp, None)
                self._busy.pop(tp, None)
            mark = self.marks.pop(tp, None)
            if mark is not None:
                log.info("%s[%d]: processed up to offset %d at the rebalance", tp.topic,
                         tp.partition, mark)

    def log_marks(self, when: str) -> None:
        """Log how far each partition got (at shutdown: where the next owner should start)."""
        for tp, mark in sorted(self.marks.items()):
            log.info("%s[%d]: processed up to offset %d %s", tp.topic, tp.partition, mark, when)

    def _pending(self, topics: Any = None) -> Iterator[TP]:
        """The partitions a commit looks at: Faust's (those with acknowledgements), and every
        partition with a mark. At a revocation Faust forgets a partition's acknowledgements
        before its last commit; without this, that commit skipped the revoked partitions and
        the next owner re-read up to a commit interval of records that were done."""
        tps = set(self._faust_pending(topics))
        for tp in self.marks:
            if topics is None or tp in topics or tp.topic in topics:
                tps.add(tp)
        return iter(tps)

    def _new_offset(self, tp: TP) -> int | None:
        if tp.topic not in self.topics:
            return self._faust_new_offset(tp)
        # Faust's own lists for these partitions are not used: keep them from growing.
        acked, index = self._consumer._acked.get(tp), self._consumer._acked_index.get(tp)
        if acked:
            acked.clear()
        if index:
            index.clear()
        return self.marks.get(tp)
