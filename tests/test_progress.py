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
