"""Faust's Kafka consumer, with fetches that wait a few milliseconds for records to gather.

Faust's worker consumer asks the broker for at least one byte (aiokafka's default), so under a
steady trickle each fetch brings back one or two records, and each becomes a batch of its own
in the scoring loops: its own hand-over from Faust's consumer thread, its own produce requests
and acknowledgements, its own state writes. At 1,000 webhooks/s the worker kept 0.64-0.68 of a
CPU busy (about 650 µs per event, against 80 when it reads a backlog), and the machine had
little CPU left for the broker and the bridge. A fetch that waits up to :data:`FETCH_MAX_WAIT_MS`
for :data:`FETCH_MIN_BYTES` brings several records at a time; with a backlog the bytes are there
at once and nothing waits (bench/README.md has the measurements).

Faust also runs that consumer in a thread of its own, with an event loop of its own, and hands
every fetch, commit and seek across; :class:`MainLoopConsumer` runs it on the worker's loop
instead, which at 1,000 webhooks/s took 8-15 % less of the worker's CPU and did not change its
throughput reading a backlog.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import aiokafka
from faust.transport.drivers.aiokafka import AIOKafkaConsumerThread
from faust.transport.drivers.aiokafka import Consumer as FaustAIOKafkaConsumer
from mode.utils.futures import maybe_async

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


class MainLoopConsumerThread(GatheringConsumerThread):
    """Faust's consumer "thread", run as a service on the worker's own event loop.

    Faust runs aiokafka's consumer in a thread with an event loop of its own, and every fetch,
    commit and seek crosses to it through a method queue and back through a future. Both loops
    wake for each crossing, and the two threads take turns at the GIL.
    """

    def __init__(self, consumer: Any, *, loop: Any, **kwargs: Any) -> None:
        super().__init__(consumer, loop=loop, thread_loop=loop, **kwargs)
        self._serving: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start serving on this loop; returns once the consumer started (or raises why not)."""
        self._thread_started.set()
        self._thread_running = self.parent_loop.create_future()
        self._serving = self.parent_loop.create_task(self._serve())
        self._serving.add_done_callback(_retrieve)
        try:
            if not self.should_stop:
                await self._thread_running
        finally:
            self._thread_running = None

    async def stop(self) -> None:
        """Stop the consumer and wait for its service to finish."""
        await super().stop()
        if self._serving is not None:
            await asyncio.wait([self._serving])

    async def on_thread_started(self) -> None:
        """No method queue: calls run directly."""

    async def call_thread(self, fun: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call ``fun`` here (awaiting it if it is a coroutine): the consumer lives on this loop."""
        return await maybe_async(fun(*args, **kwargs))

    async def _gather_remaining_tasks(self) -> None:
        # A thread's loop holds only its own tasks; this loop holds the whole worker's.
        return None


def _retrieve(task: asyncio.Task[None]) -> None:
    """Mark the serving task's error as seen: mode's service already crashed the worker with it
    (and failed the start that awaited it), so asyncio need not log it again at exit."""
    if not task.cancelled():
        task.exception()


class MainLoopConsumer(FaustAIOKafkaConsumer):
    """Faust's aiokafka consumer on a :class:`MainLoopConsumerThread`: on the worker's loop,
    with fetches that gather records."""

    def _new_consumer_thread(self) -> AIOKafkaConsumerThread:
        return MainLoopConsumerThread(self, loop=self.loop, beacon=self.beacon)
