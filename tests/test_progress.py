"""streams.progress.Progress: the scoring agents' offsets come from how far they got."""

from __future__ import annotations

from dataclasses import dataclass

from faust.types import TP

from streams.progress import Progress

CARDS0, CARDS1 = TP("giftcard.transactions", 0), TP("giftcard.transactions", 1)
OTHER = TP("giftcard.alerts", 0)


@dataclass
class Msg:
    tp: TP
    offset: int


class Consumer:
    """The bookkeeping a Faust consumer keeps, with a gap at the head that never fills."""

    def __init__(self) -> None:
        self._acked = {CARDS0: [7, 8, 9], OTHER: [3, 4]}
        self._acked_index = {CARDS0: {7, 8, 9}, OTHER: {3, 4}}

    def _new_offset(self, tp: TP) -> int | None:
        return 5 if tp == OTHER else None

    def _filter_tps_with_pending_acks(self, topics=None):
        return (tp for tp in self._acked if topics is None or tp in topics or tp.topic in topics)


def test_marks_follow_the_processed_batches_not_the_acknowledgements() -> None:
    consumer = Consumer()
    progress = Progress(consumer, ["giftcard.transactions"])
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
    progress = Progress(consumer, ["giftcard.transactions"])
    progress.done([Msg(CARDS0, 100), Msg(CARDS1, 7)])
    progress.forget({CARDS0})                              # revoked (or assigned anew)
    assert consumer._new_offset(CARDS0) is None
    assert consumer._new_offset(CARDS1) == 8


def test_records_skipped_within_a_generation_are_reported(caplog) -> None:
    """The agents read each partition in order: a jump means records never reached them (and
    the mark moves past them), which must not pass silently."""
    progress = Progress(Consumer(), ["giftcard.transactions"])
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
    progress = Progress(consumer, ["giftcard.transactions"])
    progress.done([Msg(CARDS0, 41), Msg(CARDS1, 7)])
    consumer._acked.pop(CARDS0)                            # Faust, at the revocation
    pending = set(consumer._filter_tps_with_pending_acks())
    assert {CARDS0, CARDS1, OTHER} <= pending
    assert consumer._new_offset(CARDS0) == 42
    assert set(consumer._filter_tps_with_pending_acks({"giftcard.alerts"})) == {OTHER}
