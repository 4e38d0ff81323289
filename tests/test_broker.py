"""``giftguard broker``: ready line, a real produce/consume, clean stop, data kept across runs;
the group join delay the benchmark's broker sets."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition

from streams.broker import DevBroker, free_port
from tests.kafka_helpers import read_since
from tests.services import ROOT

pytestmark = pytest.mark.integration


def _start(port: int, data_dir: Path) -> tuple[subprocess.Popen[str], str]:
    proc = subprocess.Popen([sys.executable, "-m", "streams.cli", "broker", "--port", str(port),
                             "--data-dir", str(data_dir)], cwd=ROOT, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    assert proc.stdout is not None
    return proc, proc.stdout.readline()  # blocks until ready (or the process failed)


def _stop(proc: subprocess.Popen[str]) -> tuple[int, str]:
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    return proc.returncode, out


async def test_broker_command_runs_stops_and_keeps_data(tmp_path: Path) -> None:
    port = free_port()
    proc, line = _start(port, tmp_path)
    try:
        assert line.strip().startswith(f"Kafka broker ready: bootstrap 127.0.0.1:{port}"), line
        producer = AIOKafkaProducer(bootstrap_servers=f"127.0.0.1:{port}", acks="all")
        await producer.start()
        await producer.send_and_wait("broker.smoke", b"kept", key=b"k")
        await producer.stop()
    finally:
        code, out = _stop(proc)
    assert code == 0 and "Kafka broker stopped" in out

    proc, line = _start(port, tmp_path)  # same data directory: the record survived
    try:
        assert "ready" in line
        records = await read_since(f"127.0.0.1:{port}", "broker.smoke", expect=1, timeout=20)
        assert [r.value for r in records] == [b"kept"]
    finally:
        assert _stop(proc)[0] == 0


async def _first_assignments(bootstrap: str, stagger_s: float) -> list[set[int]]:
    """Two consumers of one new group on an 8-partition topic, the second started
    ``stagger_s`` after the first: the partitions each got in its first assignment."""
    topic, group = "broker.join", f"join-{free_port()}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap)
    await producer.start()
    await producer.send_and_wait(topic, b"x")  # auto-created with the broker's 8 partitions
    await producer.stop()
    first: list[set[int] | None] = [None, None]

    class Listener(ConsumerRebalanceListener):
        def __init__(self, i: int) -> None:
            self.i = i

        async def on_partitions_revoked(self, revoked: object) -> None:
            pass

        async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
            if first[self.i] is None:
                first[self.i] = {tp.partition for tp in assigned}

    async def member(i: int) -> None:
        await asyncio.sleep(i * stagger_s)
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=group)
        consumer.subscribe([topic], listener=Listener(i))
        await consumer.start()
        try:
            deadline = time.monotonic() + 30
            while None in first and time.monotonic() < deadline:
                await consumer.getmany(timeout_ms=100)
            await asyncio.sleep(1)  # (stay in the group while the other is assigned)
        finally:
            await consumer.stop()

    await asyncio.gather(member(0), member(1))
    assert None not in first, first
    return [s for s in first if s is not None]


def test_group_join_delay_gives_members_started_together_one_assignment(
        tmp_path: Path, bootstrap: str) -> None:
    # The benchmark's broker waits 3 s for a new group's members (Kafka's default): two
    # workers started together share the partitions from the start.
    broker = DevBroker(port=free_port(), data_dir=tmp_path / "kafka", group_join_delay_ms=3000)
    broker.start(timeout=120)
    try:
        a, b = asyncio.run(_first_assignments(broker.bootstrap, stagger_s=1.0))
    finally:
        broker.stop()
    assert len(a) == len(b) == 4 and not a & b
    # The tests' broker (0 ms): the first member took every partition on its own.
    a, _ = asyncio.run(_first_assignments(bootstrap, stagger_s=1.0))
    assert len(a) == 8
