"""The Faust application, and nothing else: topics, tables and agents are registered elsewhere."""

from __future__ import annotations

from pathlib import Path

import faust

from streams.settings import Settings


def create_app(settings: Settings, web_port: int = 6066, web_host: str = "127.0.0.1") -> faust.App:
    """A Faust app configured from ``settings``; one per worker process."""
    datadir = Path(settings.giftguard_data_dir).resolve() / f"web-{web_port}"
    datadir.parent.mkdir(parents=True, exist_ok=True)
    return faust.App(
        "giftguard",
        broker=[f"kafka://{server}" for server in settings.bootstrap_servers],
        store=settings.giftguard_store,
        # One data directory per worker, so workers on one machine do not share a RocksDB.
        datadir=str(datadir),
        topic_partitions=settings.giftguard_partitions,
        topic_allow_declare=True,
        producer_acks=-1,
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
    )
