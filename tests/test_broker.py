"""``giftguard broker``: ready line, a real produce/consume, clean stop, data kept across runs."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

import pytest
from aiokafka import AIOKafkaProducer

from streams.broker import free_port
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
