"""Where a worker's time goes: py-spy over a worker (or the Faust floor) replaying the data.

    python -m bench.profile [--events 100000] [--target worker|floor] [--seconds 30]

Extra Faust settings to try: ``BENCH_FAUST_CONF='{"producer_linger": 0.002}'`` (see
:mod:`bench.tryconf`). Needs ``py-spy`` on PATH (or ``PY_SPY=/path/to/py-spy``); it is not a
project dependency: ``pip install py-spy``. Samples only threads holding the GIL (CPU, not
waits). Prints the functions with the most samples, inclusive and self, and
keeps the raw collapsed stacks in ``var/bench/profile-<target>.txt``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import time
from collections import Counter
from pathlib import Path

from bench.common import VAR, Broker, env_for, free_port, log, preload, reset, start
from bench.data import dataset
from streams import topics


def summarize(raw: Path, top: int = 40) -> str:
    """Inclusive and self sample counts per function from py-spy's collapsed stacks."""
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f.split(" (")[0] + " (" + f.split(" (")[1].split(":")[0].rsplit("/", 1)[-1]
                  if " (" in f else f for f in stack.split(";")]
        for f in set(frames):
            inclusive[f] += count
        if frames:
            own[frames[-1]] += count
    lines = [f"{total} samples", "", "inclusive:"]
    lines += [f"{100 * c / total:5.1f}%  {f}" for f, c in inclusive.most_common(top)]
    lines += ["", "self:"]
    lines += [f"{100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.profile")
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--target", choices=("worker", "floor"), default="worker")
    parser.add_argument("--seconds", type=int, default=30)
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    args = parser.parse_args()
    py_spy = os.environ.get("PY_SPY") or shutil.which("py-spy")
    if not py_spy:
        raise SystemExit("py-spy not found: pip install py-spy, or set PY_SPY")
    ds = dataset(args.events)
    workdir = VAR / f"profile-{args.target}"
    shutil.rmtree(workdir, ignore_errors=True)
    with Broker() as broker:
        asyncio.run(reset(broker.bootstrap))
        n = asyncio.run(preload(broker.bootstrap, topics.TRANSACTIONS, ds.records()))
        log(f"pre-loaded {n:,} events")
        port = free_port()
        env = env_for(broker.bootstrap, GIFTGUARD_DATA_DIR=str(workdir / "data"),
                      GIFTGUARD_LOCATIONS=str(ds.locations))
        # BENCH_FAUST_CONF / BENCH_UVLOOP (bench.tryconf) pass through from our environment
        proc = start(args.target, ["-m", "bench.tryconf", args.target, "--web-port", str(port)],
                     env, workdir, port)
        try:
            proc.wait_healthy()
            time.sleep(2)
            raw = VAR / f"profile-{args.target}.txt"
            subprocess.run([py_spy, "record", "-p", str(proc.pid), "-d", str(args.seconds),
                            "-r", str(args.rate), "--format", "raw", "-o", str(raw), "--nonblocking",
                            "--gil"],  # only samples holding the GIL: CPU, not waits
                           check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            proc.stop()
    print(summarize(raw))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
