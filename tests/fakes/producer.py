"""A stand-in for the app's Kafka producer, as the scoring agents call it (``producer.send``)."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any


class ScriptedProducer:
    """Answers each send of a topic with the next outcome of its script (then success), and
    keeps what it was sent."""

    def __init__(self, script: dict[str, list[BaseException]] | None = None) -> None:
        self.script = script or {}
        self.sends: list[str] = []
        #: (topic, partition, value) of every send, in order
        self.sent: list[tuple[str, int | None, Any]] = []

    async def send(self, topic: str, key: Any, value: Any, **kwargs: Any) -> asyncio.Future[Any]:
        self.sends.append(topic)
        self.sent.append((topic, kwargs.get("partition"), value))
        future = asyncio.get_running_loop().create_future()
        outcomes = self.script.get(topic, [])
        if outcomes:
            future.set_exception(outcomes.pop(0))
        else:
            future.set_result(SimpleNamespace(partition=kwargs.get("partition") or 0, offset=7))
        return future
