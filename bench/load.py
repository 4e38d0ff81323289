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
from urllib.parse import urlsplit

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


class Connection(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection that sends pre-built requests one at a time.

    The load generator shares two CPUs with everything it measures, so it does no more than
    write the bytes and read the status line and ``Content-Length`` of each answer: aiohttp's
    client spent about 270 µs of CPU per request at 1,000 requests/s (bench/README.md)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buffer = bytearray()
        self._answer: asyncio.Future[int] | None = None
        self.closed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._answer is not None and not self._answer.done():
            self._answer.set_exception(ConnectionError("connection closed"))

    def data_received(self, data: bytes) -> None:
        buf = self._buffer
        buf += data
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0 or self._answer is None:
            return
        head = bytes(buf[:head_end]).split(b"\r\n")
        length = 0
        for line in head[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        if len(buf) < head_end + 4 + length:
            return
        status = int(head[0].split()[1])
        del buf[:head_end + 4 + length]
        self._answer.set_result(status)

    async def request(self, message: bytes) -> int:
        """Send one request; its answer's status code."""
        assert self.transport is not None
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(message)
        try:
            return await self._answer
        finally:
            self._answer = None


def messages(url: str, items: list[tuple[str, str, bytes]], key: str,
             notification_url: str) -> list[bytes]:
    """Each envelope as a whole signed POST request, ready to write."""
    parts = urlsplit(url)
    head = (f"POST {parts.path} HTTP/1.1\r\nHost: {parts.netloc}\r\n"
            f"Content-Type: application/json\r\n").encode()
    return [head + f"{SQUARE_SIGNATURE_HEADER}: {square_signature(key, notification_url, b)}"
            f"\r\nContent-Length: {len(b)}\r\n\r\n".encode() + b for _, _, b in items]


async def run(args: argparse.Namespace) -> dict[str, object]:
    items = read(args.events, args.skip, args.count)
    requests = messages(args.url, items, args.key, args.notification_url)
    parts = urlsplit(args.url)
    loop = asyncio.get_running_loop()
    statuses: dict[int, int] = {}
    times: list[tuple[str, float]] = []
    lag = [0.0]

    async def connect() -> Connection:
        _, conn = await loop.create_connection(Connection, parts.hostname, parts.port)
        return conn

    async def post(conn: Connection, i: int) -> Connection:
        times.append((items[i][0], time.time()))
        try:
            if conn.closed:
                conn = await connect()
            async with asyncio.timeout(30):
                status = await conn.request(requests[i])
        except (ConnectionError, TimeoutError, OSError):
            status = 0
            if conn.transport is not None:
                conn.transport.close()
            conn.closed = True
        statuses[status] = statuses.get(status, 0) + 1
        return conn

    conns = [await connect() for _ in range(args.concurrency)]
    started, cpu0 = time.perf_counter(), time.process_time()
    if args.rate:
        queues: list[asyncio.Queue[int | None]] = [asyncio.Queue()
                                                   for _ in range(args.concurrency)]

        async def sender(conn: Connection, q: asyncio.Queue[int | None]) -> None:
            while (i := await q.get()) is not None:
                conn = await post(conn, i)

        tasks = [asyncio.create_task(sender(c, q)) for c, q in zip(conns, queues, strict=True)]
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

        async def worker(conn: Connection) -> None:
            while (i := next(counter)) < len(items):
                conn = await post(conn, i)

        await asyncio.gather(*(worker(c) for c in conns))
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    for conn in conns:
        if conn.transport is not None:
            conn.transport.close()
    if args.times:
        lines = "".join(f"{eid}\t{t:.6f}\n" for eid, t in times)
        Path(args.times).write_text(lines)  # noqa: ASYNC240 - the clock has stopped
    return {"sent": len(items), "ok": statuses.get(200, 0), "seconds": seconds,
            "statuses": {str(k): v for k, v in statuses.items()},
            "max_schedule_lag": lag[0], "cpu_seconds": cpu}


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
