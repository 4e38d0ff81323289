"""The card scope's forwarded records, packed the worker's way, and read back by the entity scope:
everyday sales travel as runs of sale times, each key's items stay in its events' order, and the
entity states come out as the backtest's inline routing leaves them; known locations are placed
round-robin."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from faust.types import TP
from prometheus_client import CollectorRegistry

from detectors.engine import Engine
from detectors.testing import ev
from sinks.metrics import worker_metrics
from streams import topics
from streams.agents import _ENTITY_MARK, Item, _Batch, _score_card, _score_entity
from streams.delivery import Record
from streams.forwarding import times_of, unpack
from streams.partitioning import EntityPlacement
from tests.fakes.producer import ScriptedProducer

PARTITIONS = 4


class Table:
    """The part of a BatchTable a batch uses, over a dict."""

    def __init__(self) -> None:
        self.data: dict[bytes, bytes] = {}
        self.table = SimpleNamespace(changelog_topic_name="changelog", name="t")

    def get(self, partition: int, key: bytes) -> bytes | None:
        return self.data.get(key)

    def write(self, writes: Any, offsets: Any) -> None:
        for _, key, value in writes:
            self.data[key] = value


def _worker(engine: Engine, producer: ScriptedProducer) -> Any:
    return SimpleNamespace(app=SimpleNamespace(producer=producer), engine=engine,
                           metrics=worker_metrics(CollectorRegistry()), held_alert=None,
                           classify=None, place=EntityPlacement(["L1", "L2"], PARTITIONS))


async def test_everyday_sales_go_as_runs_and_leave_the_states_the_backtest_does() -> None:
    events = [ev("activate", 2500, 1, card="a"), ev("activate", 3000, 2, card="b"),
              ev("activate", 2000, 3, card="c", loc="L2"),
              ev("activate", 50000, 4, card="d"),               # high-value: the whole event
              ev("activate", 4000, 5, card="e"), ev("load", 1500, 6, card="a")]
    engine, producer = Engine(), ScriptedProducer()
    w = _worker(engine, producer)
    batch = _Batch(Table())  # type: ignore[arg-type]
    for offset, e in enumerate(events):
        record = Record(TP(topics.TRANSACTIONS, 0), offset, e.card_id.encode(), e.to_json())
        await _score_card(w, Item(record, 0, record.key, record.value), batch)
    await batch.finish(w)

    forwarded = [(p, unpack(v)) for t, p, v in producer.sent if t == topics.ENTITY_EVENTS]
    by_key: dict[bytes, list[Any]] = {}
    for _, pairs in forwarded:
        for key, value in pairs:
            times = times_of(value)
            by_key.setdefault(key, []).append(times if times is not None else "event")
    ts = [e.ts for e in events]
    assert by_key[b"loc:L1"] == [[ts[0], ts[1]], "event", [ts[4], ts[5]]]
    assert by_key[b"loc:L2"] == [[ts[2]]]
    # The known locations go round-robin in the file's order, not by hash.
    placed = {key: p for p, pairs in forwarded for key, _ in pairs if key.startswith(b"loc:")}
    assert placed == {b"loc:L1": 0, b"loc:L2": 1}

    # The entity scope reads them back: the same states as routing each event inline.
    entities = Table()
    ew = _worker(Engine(), ScriptedProducer())
    ebatch = _Batch(entities)  # type: ignore[arg-type]
    for offset, (p, pairs) in enumerate(forwarded):
        record = Record(TP(topics.ENTITY_EVENTS, p), offset, None, b"")
        for index, (key, value) in enumerate(pairs):
            await _score_entity(ew, Item(record, index, key, value), ebatch)
    await ebatch.finish(ew)
    inline: dict[str, bytes | None] = {}
    reference = Engine()
    cards: dict[str, bytes | None] = {}
    for e in events:
        out = reference.on_card_event(e, cards.get(e.card_id))
        cards[e.card_id] = out.state
        reference.entity_scope(out, e, inline)
    assert set(inline) == {k.decode() for k in entities.data}
    for key, value in entities.data.items():
        assert value[_ENTITY_MARK.size:] == inline[key.decode()]
