"""The worker's web pages: ``/metrics`` (Prometheus) and ``/healthz``."""

from __future__ import annotations

import faust
from faust.web import Request, Response, View
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest


def register_views(app: faust.App, registry: CollectorRegistry) -> None:
    """Add the worker's pages to ``app``'s web server."""

    @app.page("/metrics")
    async def metrics(self: View, request: Request) -> Response:
        # aiohttp refuses a charset inside content_type; a header carries it whole.
        return self.bytes(generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        # Ready once it has its partitions and its tables are recovered (Faust's recovery has
        # completed at least once), and not while a rebalance is moving them.
        ready = (app.consumer is not None and app.tables.recovery.completed.is_set()
                 and app.rebalancing is False)
        return self.json({"status": "ok" if ready else "starting"}, status=200 if ready else 503)
