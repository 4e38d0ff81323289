"""Faust floor: the worker's Faust app (same settings, same loop, same way of running) with a
single agent on ``giftcard.transactions`` that only deserialises each event.

    python -m bench.floor --web-port N     # /metrics: bench_events_total, /healthz

Whatever the worker does on top of this costs throughput; this is what Faust itself costs.
"""

from __future__ import annotations

import argparse
import asyncio

import faust
import orjson
from faust.web import Request, Response, View

from streams import topics
from streams.admin import ensure_topics
from streams.agents import raw_topic
from streams.app import create_app
from streams.runtime import use_uvloop
from streams.settings import load_settings
from streams.worker import serve


def build(web_port: int) -> faust.App:
    settings = load_settings()
    app = create_app(settings, web_port=web_port)
    source = raw_topic(app, topics.TRANSACTIONS, settings.giftguard_partitions)
    seen = [0]

    @app.agent(source, name="floor")
    async def floor(stream: faust.StreamT[bytes]) -> None:
        loads = orjson.loads
        async for event in stream.events():  # as the worker's agents iterate
            loads(event.value)
            seen[0] += 1

    @app.page("/metrics")
    async def metrics(self: View, request: Request) -> Response:
        return self.bytes(f"bench_events_total {seen[0]}\n".encode())

    @app.page("/healthz")
    async def healthz(self: View, request: Request) -> Response:
        return self.json({"status": "ok"})

    asyncio.run(ensure_topics(settings.bootstrap_servers, settings.giftguard_partitions))
    return app


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor")
    parser.add_argument("--web-port", type=int, required=True)
    args = parser.parse_args()
    use_uvloop()  # as the worker does
    return serve(build(args.web_port))


if __name__ == "__main__":
    raise SystemExit(main())
