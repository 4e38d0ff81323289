"""Faust floor: the worker's Faust app (same settings, same loop, same way of running) with a
single agent on ``giftcard.transactions`` that only deserialises each event.

    python -m bench.floor --web-port N             # /metrics: bench_events_total, /healthz
    python -m bench.floor --web-port N --batched   # the worker's delivery instead of an agent

Whatever the worker does on top of this costs throughput; this is what Faust itself costs.
``--batched`` takes the records as the worker's scoring loops do (:mod:`streams.delivery`: a
fetch at a time, not Faust events): what is left of Faust's cost on the worker's own path.
"""

from __future__ import annotations

import argparse
import asyncio

import faust
import orjson
from faust.web import Request, Response, View

from streams import topics
from streams.admin import ensure_topics
from streams.agents import BATCH_MAX, INBOX_LIMIT, raw_topic
from streams.app import create_app
from streams.delivery import Delivery, Inbox
from streams.runtime import use_uvloop
from streams.settings import load_settings
from streams.worker import serve


def build(web_port: int, batched: bool = False) -> faust.App:
    settings = load_settings()
    app = create_app(settings, web_port=web_port)
    source = raw_topic(app, topics.TRANSACTIONS, settings.giftguard_partitions)
    seen = [0]

    if batched:
        app.topics.add(source)
        inbox = Inbox(INBOX_LIMIT)
        Delivery(app, {topics.TRANSACTIONS: inbox})

        @app.task
        async def floor_batched() -> None:
            loads = orjson.loads
            while True:
                records = await inbox.take(BATCH_MAX)
                for record in records:
                    loads(record.value)
                seen[0] += len(records)
                inbox.done()
    else:
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
    parser.add_argument("--batched", action="store_true",
                        help="the worker's fetch-at-a-time delivery instead of a Faust agent")
    args = parser.parse_args()
    use_uvloop()  # as the worker does
    return serve(build(args.web_port, args.batched))


if __name__ == "__main__":
    raise SystemExit(main())
