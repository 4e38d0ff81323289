"""Run the worker (or the Faust floor) with extra Faust settings, to try them before they go
into ``streams/app.py``: ``BENCH_FAUST_CONF='{"producer_linger": 0.002}' python -m bench.tryconf
worker --web-port N`` (or ``floor --web-port N``). ``BENCH_UVLOOP=1`` installs uvloop first;
``BENCH_ROCKSDB_OPTIONS='{}'`` replaces the tables' RocksDB options
(``streams.agents.ROCKSDB_OPTIONS``)."""

from __future__ import annotations

import json
import os
import sys

import faust


def main() -> int:
    conf = json.loads(os.environ.get("BENCH_FAUST_CONF") or "{}")
    original = faust.App.__init__

    def patched(self: faust.App, *args: object, **kwargs: object) -> None:
        kwargs.update(conf)
        original(self, *args, **kwargs)

    faust.App.__init__ = patched  # type: ignore[method-assign]
    if os.environ.get("BENCH_ROCKSDB_OPTIONS") is not None:  # e.g. '{}' for Faust's defaults
        import streams.agents

        streams.agents.ROCKSDB_OPTIONS = json.loads(os.environ["BENCH_ROCKSDB_OPTIONS"])
    if os.environ.get("BENCH_UVLOOP"):
        import uvloop

        uvloop.install()
    if sys.argv[1] == "floor":
        from bench.floor import main as floor_main

        sys.argv = [sys.argv[0], *sys.argv[2:]]
        return floor_main()
    from streams.cli import main as cli_main

    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    raise SystemExit(main())
