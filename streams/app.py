"""The Faust application, and nothing else: topics, tables and agents are registered elsewhere."""

from __future__ import annotations

from pathlib import Path

import faust
from faust.types import ConsumerT, ProducerT
from mode.utils.objects import cached_property
from mode.utils.queues import FlowControlEvent

from streams.consumers import MainLoopConsumer
from streams.producers import FaustTrackingProducer
from streams.settings import Settings


class FlowControl(FlowControlEvent):
    """Faust's flow control without one silent drop.

    Faust's table recovery resumes the stream partitions, seeks them to their committed offsets
    and then calls ``flow_control.resume()``, which empties every stream queue even when flow was
    already running (recovery resumed it to read the changelogs). Events fetched in between were
    dropped unacknowledged, and the fetch position was already past them: this worker never read
    them again and, as Faust will not commit across a hole, its offset commits stopped there for
    good (lag grew until the next restart). Here a resume while flowing keeps the queues; a resume
    after a suspension still clears them, and revocation clears them itself, as before.
    """

    def resume(self) -> None:
        if self.is_active():
            return
        super().resume()


class App(faust.App):
    """faust.App with :class:`FlowControl`, a producer that keeps its topics' metadata
    (:mod:`streams.producers`) and a consumer whose fetches gather records
    (:mod:`streams.consumers`)."""

    @cached_property
    def flow_control(self) -> FlowControlEvent:
        return FlowControl(loop=self.loop)

    def _new_producer(self) -> ProducerT:
        return FaustTrackingProducer(self.transport, loop=self.loop, beacon=self.beacon)

    def _new_consumer(self) -> ConsumerT:
        return MainLoopConsumer(
            self.transport, callback=self.topics.on_message, loop=self.loop,
            on_partitions_revoked=self._on_partitions_revoked,
            on_partitions_assigned=self._on_partitions_assigned, beacon=self.beacon)


def create_app(settings: Settings, web_port: int = 6066, web_host: str = "127.0.0.1") -> faust.App:
    """A Faust app configured from ``settings``; one per worker process."""
    datadir = Path(settings.giftguard_data_dir).resolve() / f"web-{web_port}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return App(
        "giftguard",
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        store=settings.giftguard_store,
        # One data directory per worker, so workers on one machine do not share a RocksDB.
        datadir=str(datadir),
        topic_partitions=settings.giftguard_partitions,
        topic_allow_declare=True,
        producer_acks=-1,
        # Faust's default is 20 minutes, which is also how long a produce batch, or a metadata
        # request, may stay pending. One that never completed (a partition whose leader the
        # producer never learned, seen in the rebalance test) held every offset commit behind
        # producer.flush() for that long, and a rebalance waiting on that commit never ended.
        # Kafka's own default is 30 s; a record that times out is dead-lettered, not lost.
        producer_request_timeout=30.0,
        consumer_auto_offset_reset="earliest",
        web_enabled=True,
        web_port=web_port,
        web_bind=web_host,
        web_host=web_host,
        autodiscover=False,
        # Tables are rebuilt from changelogs when a store is missing; keep standbys off by
        # default (a single worker has nobody to stand by for).
        table_standby_replicas=0,
        # A worker that died (kill -9) is noticed after 10 s instead of Kafka's 45 s default,
        # so its partitions move to the survivors sooner.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        # Offsets committed every second (Faust: 2.8 s): after a crash, the next owner replays
        # (and skips, by the replay marks) at most about a second of events.
        broker_commit_interval=1.0,
        # aiokafka keeps one batch per partition open and one produce request in flight; when
        # the batch is full, the next send waits for that request. At Faust's 16 KiB a scoring
        # batch's changelog writes took three round trips. 512 KiB holds a batch's records in
        # one, and stays under the broker's default record-batch limit (1 MiB).
        producer_max_batch_size=512 * 1024,
        # Fetches of 256 KiB per partition (Faust: 1 MiB): aiokafka fetches a partition again only
        # once its last fetch is handed over, and fetches of 10,000 records and more left the
        # scoring loops waiting while the next one came (bench/README.md).
        consumer_max_fetch_size=256 * 1024,
    )
