"""Faust's Kafka consumer, with fetches that wait a few milliseconds for records to gather.

Faust's worker consumer asks the broker for at least one byte (aiokafka's default), so under a
steady trickle each fetch brings back one or two records, and each becomes a batch of its own
in the scoring loops: its own hand-over from Faust's consumer thread, its own produce requests
and acknowledgements, its own state writes. At 1,000 webhooks/s the worker kept 0.64-0.68 of a
CPU busy (about 650 µs per event, against 80 when it reads a backlog), and the machine had
little CPU left for the broker and the bridge. A fetch that waits up to :data:`FETCH_MAX_WAIT_MS`
for :data:`FETCH_MIN_BYTES` brings several records at a time; with a backlog the bytes are there
at once and nothing waits (bench/README.md has the measurements).
"""

from __future__ import annotations

from typing import Any

import aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as FaustAIOKafkaConsumer

#: A fetch returns once this much is there to read (aiokafka: 1 byte)...
FETCH_MIN_BYTES = 64 * 1024
#: ...or once it waited this long (Faust: 1,500 ms, which with 1 byte never mattered).
FETCH_MAX_WAIT_MS = 5


class GatheringConsumerThread(AIOKafkaConsumerThread):
    """Faust's aiokafka consumer thread; its worker consumer's fetches wait to gather records."""

    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # Faust passes neither setting through; both are read when the consumer starts (its
        # fetcher is built in start()), which is after this returns.
        consumer._fetch_min_bytes = FETCH_MIN_BYTES
        consumer._fetch_max_wait_ms = FETCH_MAX_WAIT_MS
        return consumer


class GatheringConsumer(FaustAIOKafkaConsumer):
    """Faust's aiokafka consumer on a :class:`GatheringConsumerThread`."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return GatheringConsumerThread(self, loop=self.loop, beacon=self.beacon)
