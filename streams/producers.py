"""Kafka producers that keep, in their metadata, every topic they have written to.

aiokafka (0.14) asks the cluster for the metadata of the topics its client tracks, or of every
topic while it tracks none. ``send()`` starts tracking a topic only when the metadata lacks it,
so a topic first seen in an every-topic refresh (Faust declares its topics, then refreshes) is
written to untracked. The first write to a topic the metadata lacks then narrows the refreshes
to the tracked topics; the untracked ones drop out of the metadata, and a batch already queued
for one of them finds no leader, retries nothing and fails after ``request_timeout_ms``
(``NotLeaderForPartitionError``, 30 s here). A worker's scoring batch waited that long at a
fresh cluster's start (README.md, *Known gaps*).

Here every topic is tracked from its first write, so it stays in every refresh.
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers.aiokafka import Producer as FaustAIOKafkaProducer


class TrackingProducer(aiokafka.AIOKafkaProducer):
    """An AIOKafkaProducer whose metadata refreshes always cover the topics it writes to."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._written_topics: set[str] = set()

    async def send(self, topic: str, *args: Any, **kwargs: Any) -> Any:
        """``AIOKafkaProducer.send``, with ``topic`` tracked first."""
        if topic not in self._written_topics:
            self._written_topics.add(topic)
            self.client.add_topic(topic)  # (a refresh, not awaited: the send waits if needed)
        return await super().send(topic, *args, **kwargs)


class FaustTrackingProducer(FaustAIOKafkaProducer):
    """Faust's aiokafka producer on a :class:`TrackingProducer`."""

    @property
    def _producer_type(self) -> type[aiokafka.AIOKafkaProducer]:
        return TrackingProducer
