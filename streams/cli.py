"""The ``giftguard`` command: broker, bridge, worker, simulate, backtest, demo."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from streams.settings import ConfigError, Settings, load_settings


def _broker(args: argparse.Namespace) -> int:
    from streams.broker import run_foreground

    return run_foreground(args.port, args.data_dir)


def _bridge(args: argparse.Namespace) -> int:
    from streams.bridge import run

    run(_settings(), args.host, args.port)
    return 0


def _worker(args: argparse.Namespace) -> int:
    from streams.worker import run

    return run(_settings(), web_port=args.web_port, host=args.host)


def _demo(args: argparse.Namespace) -> int:
    from streams.demo import run

    return run(minutes=args.minutes, rate=args.rate)


def _settings() -> Settings:
    return load_settings()


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for every subcommand."""
    parser = argparse.ArgumentParser(
        prog="giftguard", description="Streaming fraud detection for gift cards.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("broker", help="a single-node Apache Kafka (KRaft) on 127.0.0.1")
    p.add_argument("--port", type=int, default=9092)
    p.add_argument("--data-dir", type=Path, default=None,
                   help="where the broker keeps its data (default var/kafka in the project)")
    p.set_defaults(func=_broker)

    p = sub.add_parser("bridge", help="the webhook bridge (POS webhooks to Kafka)")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0 in a container)")
    p.set_defaults(func=_bridge)

    p = sub.add_parser("worker", help="a Faust worker that scores every event")
    p.add_argument("--web-port", type=int, default=6066, help="serves /metrics and /healthz")
    p.add_argument("--host", default="127.0.0.1", help="address for the web port")
    p.set_defaults(func=_worker)

    sub.add_parser("simulate", help="synthetic Square gift card traffic with labelled fraud",
                   add_help=False)
    sub.add_parser("backtest", help="replay events offline through the detectors",
                   add_help=False)
    sub.add_parser("audit", help="print a card's decisions and actions from giftcard.audit",
                   add_help=False)

    p = sub.add_parser("demo", help="broker, bridge, worker and simulated traffic, alerts live")
    p.add_argument("--minutes", type=float, default=3.0, help="how much traffic to send")
    p.add_argument("--rate", type=float, default=40.0, help="webhooks per second")
    p.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``giftguard`` command."""
    argv = sys.argv[1:] if argv is None else argv
    # simulate and backtest own their whole argument list.
    if argv and argv[0] == "simulate":
        from streams.simulate import main as simulate_main

        return simulate_main(argv[1:])
    if argv and argv[0] == "backtest":
        from detectors.backtest import main as backtest_main

        return backtest_main(argv[1:])
    if argv and argv[0] == "audit":
        from streams.audit import main as audit_main

        return audit_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.command == "broker" and args.data_dir is None:
        from streams.broker import DEFAULT_DATA_DIR

        args.data_dir = DEFAULT_DATA_DIR
    try:
        return int(args.func(args) or 0)
    except ConfigError as exc:
        print(f"giftguard: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
