"""The scoring agents send again a record Kafka failed with a transient error, instead of
dead-lettering the event (which left the card's state without it: the rebalance test once lost
19 cards' first events this way, on "not leader" answers to a just-created topic)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError, NotLeaderForPartitionError
from prometheus_client import CollectorRegistry

import streams.agents
from sinks.metrics import worker_metrics
from streams.agents import _produce, _settle
from tests.fakes.producer import ScriptedProducer


def _worker(producer: ScriptedProducer) -> Any:
    return SimpleNamespace(app=SimpleNamespace(producer=producer),
                           metrics=worker_metrics(CollectorRegistry()))


@pytest.fixture(autouse=True)
def quick_resends(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(streams.agents, "RESEND_AFTER", (0.01, 0.01))


async def test_a_transient_failure_is_sent_again_until_acknowledged() -> None:
    producer = ScriptedProducer({"entity": [NotLeaderForPartitionError(), KafkaTimeoutError()]})
    w = _worker(producer)
    records = [await _produce(w, "entity", None, b"packed", 1),
               await _produce(w, "alerts", b"k", b"alert")]
    await _settle(w, records)
    assert [r.future.exception() for r in records] == [None, None]
    assert producer.sends == ["entity", "alerts", "entity", "entity"]
    assert w.metrics.produce_resends._value.get() == 2


async def test_a_lasting_or_permanent_failure_is_left_failed() -> None:
    producer = ScriptedProducer({"entity": [NotLeaderForPartitionError()] * 5,
                                 "alerts": [MessageSizeTooLargeError()]})
    w = _worker(producer)
    records = [await _produce(w, "entity", None, b"packed", 1),
               await _produce(w, "alerts", b"k", b"alert")]
    await _settle(w, records)
    assert isinstance(records[0].future.exception(), NotLeaderForPartitionError)
    assert isinstance(records[1].future.exception(), MessageSizeTooLargeError)
    # the too-large alert is not sent again; the entity record is, after each wait
    assert producer.sends == ["entity", "alerts", "entity", "entity"]
