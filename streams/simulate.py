"""``giftguard simulate``: seeded, labelled Square gift card traffic, to files and/or a bridge.

The library lives in :mod:`streams.simulation`; this module is the command line.

    giftguard simulate --events 200000 --out var/sim
    giftguard simulate --events 5000000 --jobs 4 --out var/big    # same files as --jobs 1
    giftguard simulate --cards 500 --days 14 --post http://127.0.0.1:8080/webhooks/square \\
        --rate 200 --out var/sim
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import sys
import time
from datetime import date

import orjson

from streams.simulation import SimConfig, SimEvent, Simulation
from streams.simulation.output import RunWriter, Tally, write_run
from streams.simulation.parallel import write_parallel
from streams.simulation.poster import PostConfig, post_events

__all__ = ["build_parser", "main"]


def _positive_int(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError("must be positive")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="giftguard simulate",
        description="Generate realistic Square gift card webhooks with labelled fraud, "
                    "write them to files and/or POST them, signed, to a bridge.")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--events", type=_positive_int, metavar="N",
                      help="approximate number of events (default 100000)")
    size.add_argument("--cards", type=_positive_int, metavar="N",
                      help="number of ordinary cards to activate (fraud cards come on top)")
    parser.add_argument("--days", type=_positive_int, default=30, help="days simulated (30)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (7)")
    parser.add_argument("--fraud-rate", type=float, default=0.015, metavar="R",
                        help="share of cards in fraud incidents (0.015)")
    parser.add_argument("--start", type=date.fromisoformat, default=date(2025, 12, 1),
                        metavar="YYYY-MM-DD", help="first simulated day (2025-12-01)")
    parser.add_argument("--out", metavar="DIR",
                        help="write events.jsonl, labels.jsonl, locations.json here")
    post = parser.add_argument_group("posting to a bridge")
    post.add_argument("--post", metavar="URL", help="POST each envelope to this URL")
    post.add_argument("--signature-key", metavar="KEY",
                      help="Square signature key (default $SQUARE_WEBHOOK_SIGNATURE_KEY)")
    post.add_argument("--notification-url", metavar="URL",
                      help="URL the signature covers (default $SQUARE_WEBHOOK_URL, "
                           "else the --post URL)")
    post.add_argument("--rate", type=_positive_float, metavar="EPS",
                      help="pace to this many events per second (default: as fast as accepted)")
    post.add_argument("--speedup", type=_positive_float, metavar="X",
                      help="replay simulated time X times faster (idle gaps capped at 2 s)")
    post.add_argument("--concurrency", type=_positive_int, default=16,
                      help="parallel senders (16); one card's events always share a sender")
    post.add_argument("--max-attempts", type=_positive_int, metavar="N",
                      help="give up on a delivery after N attempts (default: never)")
    parser.add_argument("--jobs", type=_positive_int, default=1, metavar="N",
                        help="generator processes when writing files (1); the output is the "
                             "same for any N")
    parser.add_argument("--quiet", action="store_true", help="print only the summary line")
    return parser


def _post_config(args: argparse.Namespace) -> PostConfig | str:
    """The posting settings, or one line naming what is missing."""
    key = args.signature_key or os.environ.get("SQUARE_WEBHOOK_SIGNATURE_KEY")
    url = args.notification_url or os.environ.get("SQUARE_WEBHOOK_URL")
    if not key or not url:
        try:
            from streams.settings import load_settings
            settings = load_settings()
        except Exception as exc:  # a broken .env must not hide the real problem
            return str(exc)
        if not key and settings.square_webhook_signature_key is not None:
            key = settings.square_webhook_signature_key.get_secret_value()
        url = url or settings.square_webhook_url
    if not key:
        return ("missing setting SQUARE_WEBHOOK_SIGNATURE_KEY: --post signs every webhook "
                "(or pass --signature-key)")
    return PostConfig(url=args.post, signature_key=key, notification_url=url or args.post,
                      concurrency=args.concurrency, rate=args.rate, speedup=args.speedup,
                      max_attempts=args.max_attempts)


def main(argv: list[str] | None = None) -> int:
    """Run the command; return the exit status (0 ok, 1 deliveries failed, 2 bad usage)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.out and not args.post:
        parser.error("nothing to do: give --out DIR and/or --post URL")
    try:
        cfg = SimConfig(seed=args.seed, cards=args.cards, events=args.events, days=args.days,
                        fraud_rate=args.fraud_rate, start=args.start)
    except ValueError as exc:
        parser.error(str(exc))
    post_cfg = _post_config(args) if args.post else None
    if isinstance(post_cfg, str):
        print(f"giftguard simulate: {post_cfg}", file=sys.stderr)
        return 2

    # Live cards are long-lived, cycle-free objects: collect them less often (restored after).
    thresholds = gc.get_threshold()
    gc.set_threshold(50_000, 20, 50)
    try:
        return _run(cfg, post_cfg, args)
    finally:
        gc.set_threshold(*thresholds)


def _run(cfg: SimConfig, post_cfg: PostConfig | None, args: argparse.Namespace) -> int:
    started = time.perf_counter()
    if post_cfg is None and args.jobs > 1:
        tally = write_parallel(cfg, args.out, args.jobs)
        failed = 0
    elif post_cfg is None:
        sim = Simulation(cfg)
        tally = write_run(sim, args.out, sim.locations)
        failed = 0
    else:
        tally, failed = _post(Simulation(cfg), post_cfg, args)
    seconds = time.perf_counter() - started
    summary = tally.as_dict()
    if not args.quiet:
        print(orjson.dumps(summary, option=orjson.OPT_INDENT_2).decode())
    rate = tally.events / seconds if seconds else 0.0
    where = f" to {args.out}" if args.out else ""
    print(f"simulated {tally.events} events ({tally.fraud} fraud, "
          f"{summary['incidents']} incidents){where} in {seconds:.1f} s ({rate:,.0f} events/s)")
    return 1 if failed else 0


def _post(sim: Simulation, cfg: PostConfig, args: argparse.Namespace) -> tuple[Tally, int]:
    tally = Tally()
    writer = RunWriter(args.out, sim.locations) if args.out else None

    def seen(event: SimEvent, body: bytes) -> None:
        tally.add(event)
        if writer is not None:
            writer.write(event, body)

    def complain(message: str) -> None:
        if not args.quiet:
            print(f"giftguard simulate: {message}", file=sys.stderr)

    try:
        summary = asyncio.run(post_events(sim, cfg, on_event=seen, on_error=complain))
    finally:
        if writer is not None:
            writer.close()
    print(summary.line() + (f"; errors {summary.errors}" if summary.errors else ""))
    return tally, summary.failed


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
