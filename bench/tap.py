"""Reads ``giftcard.alerts`` from its current end and writes ``event_id<TAB>time`` (then the
worker's ``decided_at`` and the rules, to look into slow ones) for every alert as it is
consumed, until stopped (SIGTERM). A process of its own, so the time taken at consumption does
not wait for the load generator's event loop.

    python -m bench.tap --bootstrap HOST:PORT --out FILE
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import time
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition

from bench.common import partitions
from streams import topics


async def tap(bootstrap: str, out: str, ready: str) -> None:
    # Long polls (aiokafka's defaults: 1 byte or 500 ms): the broker answers a fetch as soon as
    # an alert is written. Polls of 5 ms cost this process and the broker 200 fetches a second.
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    try:
        tps = [TopicPartition(topics.ALERTS, p) for p in await partitions(consumer, topics.ALERTS)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        for tp in tps:
            await consumer.position(tp)
        Path(ready).touch()  # noqa: ASYNC240
        with Path(out).open("w", buffering=1) as fh:  # noqa: ASYNC230 - small line writes
            while not stop.is_set():
                batch = await consumer.getmany(timeout_ms=100)
                now = time.time()
                for records in batch.values():
                    for r in records:
                        a = orjson.loads(r.value)
                        fh.write(f"{a['event_id']}\t{now:.6f}\t{a.get('decided_at', '')}\t"
                                 f"{','.join(a.get('rules', ()))}\n")
    finally:
        await consumer.stop()


def main() -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tap")
    p.add_argument("--bootstrap", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--ready", required=True, help="touched once reading from the end")
    args = p.parse_args()
    asyncio.run(tap(args.bootstrap, args.out, args.ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
