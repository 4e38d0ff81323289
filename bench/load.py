"""Signed Square webhook POSTs from a file of envelopes, in a process of its own.

    python -m bench.load --url URL --key KEY --notification-url URL --events FILE \\
        --skip N --count N [--rate EPS] [--concurrency C] --out RESULT.json [--times FILE]

With ``--rate`` deliveries follow a fixed schedule (open loop, one card's events in order on one
of ``--concurrency`` senders) and every POST's wall-clock time is written to ``--times`` as
``event_id<TAB>time``; without it, ``--concurrency`` senders POST back to back (closed loop,
for the most a server can take). Bodies are read and signed before the clock starts.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import sys
import time
import zlib
from pathlib import Path

import aiohttp
import orjson

from detectors.square import normalize_square
from streams.signatures import SQUARE_SIGNATURE_HEADER, square_signature


def read(path: str, skip: int, count: int) -> list[tuple[str, str, bytes]]:
    """``(event_id, card_id, body)`` for ``count`` envelopes after the first ``skip``."""
    out = []
    with open(path, "rb") as fh:
        for line in itertools.islice(fh, skip, skip + count):
            body = line.rstrip(b"\n")
            event = normalize_square(orjson.loads(body))
            out.append((event.event_id, event.card_id, body))
    return out


async def run(args: argparse.Namespace) -> dict[str, object]:
    items = read(args.events, args.skip, args.count)
    headers = [{"content-type": "application/json",
                SQUARE_SIGNATURE_HEADER: square_signature(args.key, args.notification_url, b)}
               for _, _, b in items]
    statuses: dict[int, int] = {}
    times: list[tuple[str, float]] = []
    lag = [0.0]
    connector = aiohttp.TCPConnector(limit=args.concurrency * 2)
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def post(i: int) -> None:
            times.append((items[i][0], time.time()))
            try:
                async with session.post(args.url, data=items[i][2], headers=headers[i]) as resp:
                    await resp.read()
                    status = resp.status
            except (aiohttp.ClientError, TimeoutError, OSError):
                status = 0
            statuses[status] = statuses.get(status, 0) + 1

        started = time.perf_counter()
        if args.rate:
            queues: list[asyncio.Queue[int | None]] = [asyncio.Queue()
                                                       for _ in range(args.concurrency)]

            async def sender(q: asyncio.Queue[int | None]) -> None:
                while (i := await q.get()) is not None:
                    await post(i)

            tasks = [asyncio.create_task(sender(q)) for q in queues]
            for i, (_, card, _) in enumerate(items):
                delay = started + i / args.rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                else:
                    lag[0] = max(lag[0], -delay)
                queues[zlib.crc32(card.encode()) % len(queues)].put_nowait(i)
            for q in queues:
                q.put_nowait(None)
            await asyncio.gather(*tasks)
        else:
            counter = itertools.count()

            async def worker() -> None:
                while (i := next(counter)) < len(items):
                    await post(i)

            await asyncio.gather(*(worker() for _ in range(args.concurrency)))
        seconds = time.perf_counter() - started
    if args.times:
        lines = "".join(f"{eid}\t{t:.6f}\n" for eid, t in times)
        Path(args.times).write_text(lines)  # noqa: ASYNC240 - the clock has stopped
    return {"sent": len(items), "ok": statuses.get(200, 0), "seconds": seconds,
            "statuses": {str(k): v for k, v in statuses.items()},
            "max_schedule_lag": lag[0]}


def main() -> int:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(1))
    p = argparse.ArgumentParser(prog="python -m bench.load")
    p.add_argument("--url", required=True)
    p.add_argument("--key", required=True)
    p.add_argument("--notification-url", required=True)
    p.add_argument("--events", required=True)
    p.add_argument("--skip", type=int, default=0)
    p.add_argument("--count", type=int, required=True)
    p.add_argument("--rate", type=float)
    p.add_argument("--concurrency", type=int, default=32)
    p.add_argument("--out", required=True)
    p.add_argument("--times")
    args = p.parse_args()
    try:
        import uvloop  # a cheaper client leaves more of the machine to the server measured

        uvloop.install()
    except ImportError:
        pass
    result = asyncio.run(run(args))
    with open(args.out, "wb") as fh:
        fh.write(orjson.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
