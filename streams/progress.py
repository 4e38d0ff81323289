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
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator
from typing import Any

from faust.types import TP

log = logging.getLogger("giftguard.progress")


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

    def done(self, messages: Iterable[Any]) -> None:
        """These records are processed: each partition's mark moves past the highest offset."""
        marks = self.marks
        for msg in messages:
            tp, offset = msg.tp, msg.offset
            mark = marks.get(tp)
            if mark is None:
                log.info("%s[%d]: first record processed since assignment at offset %d",
                         tp.topic, tp.partition, offset)
            elif offset > mark:
                log.warning("%s[%d]: records %d..%d never reached the agent", tp.topic,
                            tp.partition, mark, offset - 1)
            if mark is None or offset >= mark:
                marks[tp] = offset + 1

    def forget(self, partitions: Iterable[TP]) -> None:
        """Revoked or newly assigned: the next generation starts from the committed offset."""
        for tp in partitions:
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
