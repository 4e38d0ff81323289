"""``giftguard worker``: assemble the Faust app, the detectors and the sinks, then run."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

import faust
from faust.worker import Worker as FaustWorker
from prometheus_client import CollectorRegistry, Counter

from detectors.engine import Engine
from detectors.locations import Locations
from sinks.base import AlertSink
from sinks.console import ConsoleSink
from sinks.metrics import worker_metrics
from streams.actions import wire_actions
from streams.admin import ensure_topics
from streams.agents import Worker, register
from streams.app import create_app
from streams.holds import load_policies
from streams.logs import configure_logging
from streams.runtime import tune_gc, use_uvloop
from streams.settings import Settings
from streams.views import register_views

log = logging.getLogger("giftguard.worker")


def alert_sink(settings: Settings, messages: Counter, locations: Locations,
               on_posted: Callable[[dict[str, Any]], Awaitable[object]] | None = None,
               ) -> AlertSink:
    """Slack when a bot token is set (threads per incident), the console otherwise."""
    if settings.slack_bot_token is None:
        return ConsoleSink()
    from sinks.slack import SlackAlertSink

    settings.require("slack_channel", why="alerts go to this Slack channel")

    def location_name(location_id: str) -> str | None:
        loc = locations.get(location_id)
        return loc.name if loc else None

    return SlackAlertSink(
        settings.slack_bot_token, settings.slack_channel or "", base_url=settings.slack_api_url,
        hold_mode=settings.giftguard_hold_mode, gan_last4=lambda alert: alert.gan_last4,
        location_name=location_name, messages=messages, incidents=True, on_posted=on_posted)


def build_worker(settings: Settings, web_port: int = 6066, host: str = "127.0.0.1",
                 registry: CollectorRegistry | None = None) -> tuple[faust.App, Worker]:
    """The configured Faust app and the worker's parts, not yet running."""
    registry = registry or CollectorRegistry()
    metrics = worker_metrics(registry)
    locations = Locations.load(settings.giftguard_locations)
    policy, hold_policy = load_policies(settings.giftguard_policy)
    engine = Engine(policy=policy, locations=locations)
    app = create_app(settings, web_port=web_port, web_host=host)
    w = register(app, engine, metrics, on_alert=_not_ready, partitions=settings.giftguard_partitions)
    # Holds, the Slack outbox, decisions and learning (streams/actions.py, streams/holds.py).
    wire_actions(app, w, settings, hold_policy,
                 lambda on_posted: alert_sink(settings, metrics.slack_messages, locations,
                                              on_posted))

    register_views(app, registry)
    return app, w


async def _not_ready(alert: object) -> None:
    raise RuntimeError("alert handler not configured")


def run(settings: Settings, web_port: int = 6066, host: str = "127.0.0.1") -> int:
    """Run one worker in the foreground until interrupted."""
    use_uvloop()  # before the app exists: Faust binds its event loop when it is built
    app, _ = build_worker(settings, web_port=web_port, host=host)
    asyncio.run(ensure_topics(settings.bootstrap_servers, settings.giftguard_partitions))
    print(f"GiftGuard worker: Kafka {settings.kafka_bootstrap_servers}, "
          f"web http://{host}:{web_port} (/metrics, /healthz), hold mode "
          f"{settings.giftguard_hold_mode}", flush=True)
    return serve(app)


def serve(app: faust.App) -> int:
    """Run a built Faust app in the foreground as the worker does (the benchmark's Faust
    floor runs through here too, so both get the same loop and settings)."""
    level = os.environ.get("GIFTGUARD_LOG_LEVEL", "WARNING").upper()
    configure_logging(level)  # JSON lines unless on a terminal; Faust keeps its hands off
    worker = FaustWorker(app, loglevel=level, redirect_stdouts=False, override_logging=False)
    tune_gc()
    worker.spinner = None  # a progress spinner only mangles logs that are not on a terminal
    worker.execute_from_commandline()
    return 0
