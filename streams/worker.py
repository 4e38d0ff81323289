"""``giftguard worker``: assemble the Faust app, the detectors and the sinks, then run."""

from __future__ import annotations

import asyncio
import logging
import os

import faust
from faust.worker import Worker as FaustWorker
from prometheus_client import CollectorRegistry, Counter

from detectors.engine import Engine
from detectors.locations import Locations
from detectors.policy import Policy
from sinks.base import AlertSink
from sinks.console import ConsoleSink
from sinks.metrics import worker_metrics
from streams.actions import AlertActions
from streams.admin import ensure_topics
from streams import topics
from streams.agents import Worker, raw_topic, register
from streams.app import create_app
from streams.logs import configure_logging
from streams.settings import Settings
from streams.views import register_views

log = logging.getLogger("giftguard.worker")


def alert_sink(settings: Settings, messages: Counter, locations: Locations) -> AlertSink:
    """Slack when a bot token is set, the console otherwise."""
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
        location_name=location_name, messages=messages)


def build_worker(settings: Settings, web_port: int = 6066, host: str = "127.0.0.1",
                 registry: CollectorRegistry | None = None) -> tuple[faust.App, Worker]:
    """The configured Faust app and the worker's parts, not yet running."""
    registry = registry or CollectorRegistry()
    metrics = worker_metrics(registry)
    locations = Locations.load(settings.giftguard_locations)
    engine = Engine(policy=Policy.load(settings.giftguard_policy), locations=locations)
    app = create_app(settings, web_port=web_port, web_host=host)
    w = register(app, engine, metrics, on_alert=_not_ready, partitions=settings.giftguard_partitions)
    holds = raw_topic(app, topics.HOLDS, settings.giftguard_partitions)

    async def send_hold(key: str, value: bytes) -> object:
        return await holds.send(key=key.encode(), value=value)

    actions = AlertActions(settings.giftguard_hold_mode,
                           alert_sink(settings, metrics.slack_messages, locations), send_hold,
                           metrics)
    w.on_alert = actions

    @app.on_before_shutdown.connect
    async def close_sinks(app: faust.App, **kwargs: object) -> None:
        await actions.sink.close()  # delivers what is queued, releases connections

    register_views(app, registry)
    return app, w


async def _not_ready(alert: object) -> None:
    raise RuntimeError("alert handler not configured")


def run(settings: Settings, web_port: int = 6066, host: str = "127.0.0.1") -> int:
    """Run one worker in the foreground until interrupted."""
    app, _ = build_worker(settings, web_port=web_port, host=host)
    asyncio.run(ensure_topics(settings.bootstrap_servers, settings.giftguard_partitions))
    print(f"GiftGuard worker: Kafka {settings.kafka_bootstrap_servers}, "
          f"web http://{host}:{web_port} (/metrics, /healthz), hold mode "
          f"{settings.giftguard_hold_mode}", flush=True)
    level = os.environ.get("GIFTGUARD_LOG_LEVEL", "WARNING").upper()
    configure_logging(level)  # JSON lines unless on a terminal; Faust keeps its hands off
    worker = FaustWorker(app, loglevel=level, redirect_stdouts=False, override_logging=False)
    worker.spinner = None  # a progress spinner only mangles logs that are not on a terminal
    worker.execute_from_commandline()
    return 0
