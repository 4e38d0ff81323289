"""streams.progress.Progress: the scoring agents' offsets come from how far they got."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

from faust.types import TP

from streams.progress import ANYWHERE, Progress

CARDS0, CARDS1 = TP("giftcard.transactions", 0), TP("giftcard.transactions", 1)
OTHER = TP("giftcard.alerts", 0)


@dataclass
class Msg:
    tp: TP
    offset: int


def events(tp: TP, *offsets: int) -> list[Msg]:
    return [Msg(tp, offset) for offset in offsets]


class Consumer:
    """The bookkeeping a Faust consumer keeps, with a gap at the head that never fills."""

    def __init__(self) -> None:
        self._acked = {CARDS0: [7, 8, 9], OTHER: [3, 4]}
        self._acked_index = {CARDS0: {7, 8, 9}, OTHER: {3, 4}}
        self.flow_active = True
        self.committed: dict[TP, int | None] = {}
        self.seeks: list[dict[TP, int]] = []
        self.positions: dict[TP, int] = {}

    async def seek_to_committed(self) -> dict[TP, int | None]:
        return dict(self.committed)

    async def seek_wait(self, partitions: dict[TP, int]) -> None:
        self.seeks.append(dict(partitions))

    async def position(self, tp: TP) -> int | None:
        return self.positions.get(tp)

    def assignment(self) -> set[TP]:
        return {CARDS0, CARDS1}

    def _new_offset(self, tp: TP) -> int | None:
        return 5 if tp == OTHER else None

    def _filter_tps_with_pending_acks(self, topics=None):
        return (tp for tp in self._acked if topics is None or tp in topics or tp.topic in topics)


def assigned(progress: Progress, *tps: TP) -> Progress:
    """As after Faust's seek of a new generation: these partitions start anywhere."""
    progress.starts.update(dict.fromkeys(tps, ANYWHERE))
    return progress


def test_marks_follow_the_processed_batches_not_the_acknowledgements() -> None:
    consumer = Consumer()
    progress = assigned(Progress(consumer, ["giftcard.transactions"]), CARDS0, CARDS1)
    assert consumer._new_offset(CARDS0) is None            # nothing processed yet
    progress.done([Msg(CARDS0, 5), Msg(CARDS0, 6), Msg(CARDS1, 40)])
    progress.done([Msg(CARDS0, 3)])                        # a replayed record: no step back
    assert consumer._new_offset(CARDS0) == 7               # processed through 6: commit 7
    assert consumer._new_offset(CARDS1) == 41
    assert consumer._acked[CARDS0] == [] and consumer._acked_index[CARDS0] == set()
    assert consumer._new_offset(OTHER) == 5               # other topics: Faust's own answer
    assert consumer._acked[OTHER] == [3, 4]


def test_a_new_generation_starts_from_the_committed_offset() -> None:
    consumer = Consumer()
    progress = assigned(Progress(consumer, ["giftcard.transactions"]), CARDS0, CARDS1)
    progress.done([Msg(CARDS0, 100), Msg(CARDS1, 7)])
    progress.forget({CARDS0})                              # revoked (or assigned anew)
    assert consumer._new_offset(CARDS0) is None
    assert consumer._new_offset(CARDS1) == 8


def test_a_batch_finished_after_its_partition_was_revoked_marks_nothing() -> None:
    """The next owner commits that partition; a late mark here must not be committed too."""
    consumer = Consumer()
    progress = assigned(Progress(consumer, ["giftcard.transactions"]), CARDS0, CARDS1)
    progress.forget({CARDS0})                              # revoked while the batch ran
    progress.done([Msg(CARDS0, 100), Msg(CARDS1, 7)])
    assert CARDS0 not in progress.marks and consumer._new_offset(CARDS0) is None
    assert consumer._new_offset(CARDS1) == 8


def test_records_skipped_within_a_generation_are_reported(caplog) -> None:
    """The agents read each partition in order: a jump means records never reached them (and
    the mark moves past them), which must not pass silently."""
    progress = assigned(Progress(Consumer(), ["giftcard.transactions"]), CARDS0)
    with caplog.at_level("INFO", logger="giftguard.progress"):
        progress.done([Msg(CARDS0, 10), Msg(CARDS0, 11)])
        progress.done([Msg(CARDS0, 12), Msg(CARDS0, 20)])
        progress.done([Msg(CARDS0, 15)])                   # a replay: neither a jump nor a step back
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["giftcard.transactions[0]: records 13..19 never reached the agent"]
    assert progress.marks[CARDS0] == 21
    assert any("first record processed since assignment at offset 10" in r.getMessage()
               for r in caplog.records)


def test_the_commit_at_a_revocation_includes_the_marked_partitions() -> None:
    """Faust drops a revoked partition's acknowledgements before its last commit; the mark must
    still be committed, or the next owner re-reads what was done."""
    consumer = Consumer()
    progress = assigned(Progress(consumer, ["giftcard.transactions"]), CARDS0, CARDS1)
    progress.done([Msg(CARDS0, 41), Msg(CARDS1, 7)])
    consumer._acked.pop(CARDS0)                            # Faust, at the revocation
    pending = set(consumer._filter_tps_with_pending_acks())
    assert {CARDS0, CARDS1, OTHER} <= pending
    assert consumer._new_offset(CARDS0) == 42
    assert set(consumer._filter_tps_with_pending_acks({"giftcard.alerts"})) == {OTHER}


def offsets(admitted: list[Msg]) -> list[tuple[int, int]]:
    return [(e.tp.partition, e.offset) for e in admitted]


async def test_a_generation_starts_each_partition_at_its_committed_offset() -> None:
    """Records that come before Faust's seek has read the committed offsets wait for it; those
    below the committed offset were processed by the last owner and are skipped."""
    consumer = Consumer()
    progress = Progress(consumer, ["giftcard.transactions"])
    waiting = asyncio.ensure_future(progress.admit(events(CARDS0, 657, 658, 659, 660)
                                                   + events(CARDS1, 0, 1)))
    await asyncio.sleep(0.05)
    assert not waiting.done()                              # the start is not known yet
    consumer.committed = {CARDS0: 659, CARDS1: None}       # CARDS1: nothing committed
    await consumer.seek_to_committed()                     # Faust's seek, after recovery
    admitted = await asyncio.wait_for(waiting, 1)
    assert offsets(admitted) == [(0, 659), (0, 660), (1, 0), (1, 1)]
    assert progress.starts == {CARDS0: 659, CARDS1: ANYWHERE}
    assert consumer.seeks == []


async def test_a_hole_is_read_again_not_committed_past() -> None:
    """The rebalance test's loss: a partition started 42 records past its committed offset.
    Those records must be read again before anything after them is processed."""
    consumer = Consumer()
    consumer.committed = {CARDS0: 659, CARDS1: 5}
    progress = Progress(consumer, ["giftcard.transactions"])
    await consumer.seek_to_committed()
    admitted = await progress.admit(events(CARDS0, 701, 702) + events(CARDS1, 5))
    assert offsets(admitted) == [(1, 5)]                   # the other partition goes on
    assert consumer.seeks == [{CARDS0: 659}]
    assert offsets(await progress.admit(events(CARDS0, 703))) == []    # still in flight
    assert consumer.seeks == [{CARDS0: 659}]                            # no second seek yet
    admitted = await progress.admit(events(CARDS0, 659, 660))
    assert offsets(admitted) == [(0, 659), (0, 660)]
    progress.done(admitted)
    assert consumer._new_offset(CARDS0) == 661             # never past the hole
    assert progress._repairs == {}


async def test_a_hole_within_a_generation_is_read_again(monkeypatch, caplog) -> None:
    consumer = Consumer()
    consumer.committed = {CARDS0: 10}
    progress = Progress(consumer, ["giftcard.transactions"])
    await consumer.seek_to_committed()
    progress.done(await progress.admit(events(CARDS0, 10, 11)))
    with caplog.at_level("WARNING", logger="giftguard.progress"):
        admitted = await progress.admit(events(CARDS0, 12, 15, 16))
    assert offsets(admitted) == [(0, 12)]
    assert consumer.seeks == [{CARDS0: 13}]
    assert "record 15 came where 13 was next" in caplog.text


async def test_records_that_never_come_back_are_given_up_after_some_seeks(monkeypatch,
                                                                        caplog) -> None:
    """(Records deleted by retention before they were read.) No endless loop of seeks."""
    consumer = Consumer()
    consumer.committed = {CARDS0: 100}
    progress = Progress(consumer, ["giftcard.transactions"])
    monkeypatch.setattr(progress, "SEEK_AGAIN", 0.0)
    await consumer.seek_to_committed()
    for _ in range(progress.SEEKS):
        assert await progress.admit(events(CARDS0, 120)) == []
    assert len(consumer.seeks) == progress.SEEKS
    with caplog.at_level("ERROR", logger="giftguard.progress"):
        assert offsets(await progress.admit(events(CARDS0, 120, 121))) == [(0, 120), (0, 121)]
    assert "records 100..119 did not come after 3 seeks" in caplog.text


async def test_a_revocation_releases_a_batch_waiting_for_its_start() -> None:
    """Faust waits for in-flight events at a revocation: a batch must not wait for a start that
    only the next generation will bring. Its events are left for whoever owns them next."""
    consumer = Consumer()
    progress = Progress(consumer, ["giftcard.transactions"])
    waiting = asyncio.ensure_future(progress.admit(events(CARDS0, 5, 6)))
    await asyncio.sleep(0.02)
    consumer.flow_active = False                           # Faust's stop_flow at revocation
    assert await asyncio.wait_for(waiting, 1) == []


async def test_the_start_is_learnt_again_after_a_revocation() -> None:
    consumer = Consumer()
    consumer.committed = {CARDS0: 10}
    progress = Progress(consumer, ["giftcard.transactions"])
    await consumer.seek_to_committed()
    progress.done(await progress.admit(events(CARDS0, 10, 11)))
    progress.forget({CARDS0}, revoked=False)               # the assignment signal: keeps starts
    assert progress.starts == {CARDS0: 10}
    progress.forget({CARDS0})                              # a revocation
    assert progress.starts == {}
    consumer.committed = {CARDS0: 30}                      # the next owner got to 30
    await consumer.seek_to_committed()
    assert offsets(await progress.admit(events(CARDS0, 12, 30))) == [(0, 30)]


async def test_a_hole_at_the_end_of_a_partition_is_read_again(monkeypatch) -> None:
    """Records lost with none after them: nothing arrives to show the hole, but the consumer's
    position stays past the next offset while nothing moves."""
    consumer = Consumer()
    consumer.committed = {CARDS0: 10, CARDS1: 4}
    progress = Progress(consumer, ["giftcard.transactions"])
    monkeypatch.setattr(progress, "STALL", 0.0)
    await consumer.seek_to_committed()
    progress.done(await progress.admit(events(CARDS0, 10, 11)))
    consumer.positions = {CARDS0: 15, CARDS1: 4}           # 12..14 fetched, never delivered
    await progress.check_tails()                           # (first look: remembers the offsets)
    assert consumer.seeks == []
    await progress.check_tails()
    assert consumer.seeks == [{CARDS0: 12}]                # CARDS1: nothing fetched past 4
    admitted = await progress.admit(events(CARDS0, 12, 13, 14))
    assert offsets(admitted) == [(0, 12), (0, 13), (0, 14)] and progress._repairs == {}


async def test_a_start_that_never_comes_is_not_waited_for_forever(monkeypatch, caplog) -> None:
    """(Faust's seek failed.) After START_WAIT the batch goes on unchecked for the partitions
    still assigned; records of a partition no longer assigned are left out."""
    consumer = Consumer()
    progress = Progress(consumer, ["giftcard.transactions"])
    monkeypatch.setattr(progress, "START_WAIT", 0.05)
    gone = TP("giftcard.transactions", 3)
    with caplog.at_level("WARNING", logger="giftguard.progress"):
        admitted = await progress.admit(events(CARDS0, 7, 8) + events(gone, 1))
    assert offsets(admitted) == [(0, 7), (0, 8)]
    assert "giftcard.transactions[0]: committed offset unknown" in caplog.text


async def test_a_batch_in_progress_is_not_taken_for_a_hole(monkeypatch) -> None:
    """A batch waiting for Kafka (a produce retried for 30 s) holds its partition's next offset
    still while the consumer fetches on: not a hole, nothing to read again."""
    consumer = Consumer()
    consumer.committed = {CARDS0: 10}
    progress = Progress(consumer, ["giftcard.transactions"])
    monkeypatch.setattr(progress, "STALL", 0.0)
    await consumer.seek_to_committed()
    admitted = await progress.admit(events(CARDS0, 10, 11))   # the batch starts...
    consumer.positions = {CARDS0: 40}
    await progress.check_tails()
    await progress.check_tails()
    assert consumer.seeks == []                                # ...and is still going
    progress.done(admitted)
    await progress.check_tails()
    await progress.check_tails()
    assert consumer.seeks == [{CARDS0: 12}]                    # done, and 12..39 never came
