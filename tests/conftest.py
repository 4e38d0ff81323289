"""Shared fixtures: a real Apache Kafka broker for the session, free ports, settings."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.broker import DevBroker, free_port


@pytest.fixture(scope="module")
def kafka() -> Iterator[DevBroker]:
    """A single-node KRaft broker on a free loopback port, one per test module.

    A broker of its own (a few seconds to start) keeps each module's topics, consumer groups and
    table changelogs apart: a worker never has to chew through another module's backlog, and a
    worker killed with -9 in one module never holds partitions in another's group.
    """
    data_dir = Path(tempfile.mkdtemp(prefix="giftguard-kafka-"))
    broker = DevBroker(port=free_port(), data_dir=data_dir)
    broker.start(timeout=120)
    try:
        yield broker
    finally:
        broker.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def bootstrap(kafka: DevBroker) -> str:
    """The test broker's bootstrap address."""
    return kafka.bootstrap


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No GiftGuard/Square/Slack/Kafka variables from the outer environment, no .env file."""
    for name in list(os.environ):
        if name.startswith(("GIFTGUARD_", "SQUARE_", "SLACK_", "KAFKA_")):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)
    return tmp_path
