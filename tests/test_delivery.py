"""streams.delivery: the scoring topics' records taken from Faust's consumer a fetch at a time."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from aiokafka import TopicPartition
from faust.types import TP

from streams.delivery import Delivery, Inbox

CARDS = "giftcard.transactions"
ALERTS = "giftcard.alerts"


def fetched(*offsets: int) -> list[Any]:
    return [SimpleNamespace(offset=o, key=b"k%d" % o, value=b"v%d" % o) for o in offsets]


class Consumer:
    """What Delivery uses of Faust's consumer: its fetch, its flow and its wait for streams."""

    def __init__(self, *fetches: dict[Any, list[Any]], active: set[Any] | None = None) -> None:
        self.fetches = list(fetches)
        self.active = active
        self.flow_active = True
        self.should_stop = False
        self._buffered_partitions: set[Any] = set()
        self.faust_waited = 0

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        return (self.fetches.pop(0) if self.fetches else {}), self.active

    async def wait_empty(self) -> None:
        self.faust_waited += 1


def delivery(consumer: Consumer, limit: int = 100) -> tuple[Delivery, Inbox, SimpleNamespace]:
    app = SimpleNamespace(consumer=consumer, monitor=SimpleNamespace(stream_inbound_time={}))
    inbox = Inbox(limit)
    return Delivery(app, {CARDS: inbox}), inbox, app


async def test_scoring_records_go_to_their_inbox_in_order_and_faust_gets_the_rest() -> None:
    c0, c1, a0 = TopicPartition(CARDS, 0), TopicPartition(CARDS, 1), TopicPartition(ALERTS, 0)
    consumer = Consumer({c0: fetched(5, 6), a0: fetched(1), c1: fetched(9)})
    _, inbox, app = delivery(consumer)
    rest, _ = await consumer._wait_next_records(1.0)      # as Faust's getmany calls it
    assert list(rest) == [a0] and [r.offset for r in rest[a0]] == [1]
    batch = await inbox.take(10)
    assert [(r.tp, r.offset, r.key, r.value) for r in batch] == [
        (TP(CARDS, 0), 5, b"k5", b"v5"), (TP(CARDS, 0), 6, b"k6", b"v6"),
        (TP(CARDS, 1), 9, b"k9", b"v9")]
    assert batch[0].topic == CARDS and batch[2].partition == 1
    assert set(app.monitor.stream_inbound_time) == {TP(CARDS, 0), TP(CARDS, 1)}


async def test_nothing_is_delivered_while_the_flow_is_stopped_or_for_paused_partitions() -> None:
    c0, c1 = TopicPartition(CARDS, 0), TopicPartition(CARDS, 1)
    consumer = Consumer({c0: fetched(1)}, {c0: fetched(2), c1: fetched(7)}, active={c1})
    _, inbox, _ = delivery(consumer)
    consumer.flow_active = False                           # a rebalance: Faust seeks back
    assert (await consumer._wait_next_records(1.0))[0] == {}
    assert len(inbox) == 0
    consumer.flow_active = True
    await consumer._wait_next_records(1.0)                 # c0 is paused (recovering)
    assert [(r.partition, r.offset) for r in await inbox.take(10)] == [(1, 7)]


async def test_a_full_inbox_holds_the_fetch_back_until_a_batch_is_taken() -> None:
    c0 = TopicPartition(CARDS, 0)
    consumer = Consumer({c0: fetched(*range(5))}, {c0: fetched(5)})
    _, inbox, _ = delivery(consumer, limit=4)
    fetch = asyncio.ensure_future(consumer._wait_next_records(1.0))
    await asyncio.sleep(0.05)
    assert not fetch.done() and len(inbox) == 5           # five waiting, the limit is four
    assert [r.offset for r in await inbox.take(3)] == [0, 1, 2]
    await asyncio.wait_for(fetch, 1)                       # room again: the fetch goes on
    second = asyncio.ensure_future(consumer._wait_next_records(1.0))
    await asyncio.wait_for(second, 1)                      # 2 + 1 waiting: below the limit
    assert [r.offset for r in await inbox.take(10)] == [3, 4, 5]


async def test_a_full_inbox_lets_the_fetch_go_when_the_flow_stops() -> None:
    c0 = TopicPartition(CARDS, 0)
    consumer = Consumer({c0: fetched(*range(5))})
    _, inbox, _ = delivery(consumer, limit=4)
    fetch = asyncio.ensure_future(consumer._wait_next_records(1.0))
    await asyncio.sleep(0.05)
    assert not fetch.done()
    consumer.flow_active = False                           # a revocation must not wait on us
    await asyncio.wait_for(fetch, 1)


async def test_a_revocation_empties_the_inbox_and_waits_for_the_batch_in_progress() -> None:
    c0 = TopicPartition(CARDS, 0)
    consumer = Consumer({c0: fetched(1, 2, 3)})
    _, inbox, _ = delivery(consumer)
    await consumer._wait_next_records(1.0)
    batch = await inbox.take(1)                            # a batch in progress
    assert [r.offset for r in batch] == [1] and len(inbox) == 2
    waiting = asyncio.ensure_future(consumer.wait_empty())
    await asyncio.sleep(0.05)
    assert not waiting.done() and consumer.faust_waited == 0
    assert len(inbox) == 0                                 # the next owner reads those
    inbox.done()
    await asyncio.wait_for(waiting, 1)
    assert consumer.faust_waited == 1                      # then Faust's wait and last commit


async def test_each_partition_keeps_one_lane_until_a_revocation() -> None:
    c0, c1, c2 = (TopicPartition(CARDS, p) for p in (0, 1, 2))
    consumer = Consumer({c0: fetched(1), c1: fetched(1)}, {c0: fetched(2), c2: fetched(1)},
                        {c2: fetched(2), c1: fetched(2)})
    app = SimpleNamespace(consumer=consumer, monitor=SimpleNamespace(stream_inbound_time={}))
    a, b = Inbox(100), Inbox(100)
    Delivery(app, {CARDS: [a, b]})
    for _ in range(3):
        await consumer._wait_next_records(1.0)

    def lane(inbox: Inbox) -> list[tuple[int, int]]:
        return [(r.partition, r.offset) for r in inbox._records]

    # first seen, first free lane; a third partition goes to the lane with fewer; each
    # partition's records stay in one lane, in order (one loop scores them, in order)
    assert lane(a) == [(0, 1), (0, 2), (2, 1), (2, 2)] and lane(b) == [(1, 1), (1, 2)]

    await consumer.wait_empty()                            # a revocation: lanes chosen afresh
    assert len(a) == len(b) == 0 and consumer.faust_waited == 1
    consumer.fetches = [{c2: fetched(3), c0: fetched(3)}]
    await consumer._wait_next_records(1.0)
    assert lane(a) == [(2, 3)] and lane(b) == [(0, 3)]


async def test_a_revocation_waits_for_the_batches_of_every_lane() -> None:
    c0, c1 = TopicPartition(CARDS, 0), TopicPartition(CARDS, 1)
    consumer = Consumer({c0: fetched(1), c1: fetched(1)})
    app = SimpleNamespace(consumer=consumer, monitor=SimpleNamespace(stream_inbound_time={}))
    a, b = Inbox(100), Inbox(100)
    Delivery(app, {CARDS: [a, b]})
    await consumer._wait_next_records(1.0)
    await a.take(10)
    await b.take(10)                                       # both lanes have a batch going
    waiting = asyncio.ensure_future(consumer.wait_empty())
    a.done()
    await asyncio.sleep(0.05)
    assert not waiting.done()                              # lane b's batch is still going
    b.done()
    await asyncio.wait_for(waiting, 1)
    assert consumer.faust_waited == 1
