"""``make bench`` / ``python -m bench.run [--quick] [--only A,B] [--events N]``.

One broker, one simulated data set (``giftguard simulate``), every measurement against a
baseline taken in the same run; prints a table and writes ``bench/results.json`` and
``bench/RESULTS.md``. Measurements (``--only`` names): ``ceiling``, ``floor``,
``floor_batched``, ``worker``, ``two_workers``, ``latency``, ``bridge``, ``memory``, ``detector``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import platform
import shutil
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path

from bench import ceiling, detector, latency, memory, throughput
from bench.common import VAR, Broker, host_speed, load_average, log, median_index, preload, reset
from bench.data import dataset, location_ids
from streams import topics

HERE = Path(__file__).resolve().parent
ALL = ("ceiling", "floor", "floor_batched", "worker", "two_workers", "latency", "bridge", "memory",
       "detector")

FULL = dict(events=500_000, latency_seconds=20, bridge_requests=40_000, bridge_warmup=20_000,
            memory_cards=(100_000, 1_000_000), live_cards=100_000, throughput_pairs=3,
            detector_runs=3)
QUICK = dict(events=60_000, latency_seconds=8, bridge_requests=8_000, bridge_warmup=8_000,
             memory_cards=(20_000, 200_000), live_cards=0, throughput_pairs=1, detector_runs=1)

TARGETS = {
    "worker_vs_floor": 0.7, "worker_eps": 5_000, "two_workers_scaling": 1.7,
    "latency_p99_ms": 50, "bridge_rps": 3_000, "bytes_per_card": 300, "detector_eps": 50_000,
}


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def _near(r: float, target: float) -> str:
    """A ratio with two decimals, or, near its target, three cut (not rounded) so that a
    ratio under its target never reads as the target."""
    return f"{math.floor(r * 1000) / 1000:.3f}" if abs(r - target) < 0.005 else f"{r:.2f}"


def _guarded(res: dict, name: str, fn: Callable[[], None]) -> None:
    """Run one measurement; a failure is recorded (and logged) and the others still run.
    The machine's speed is taken just before (``host_speed`` in the results)."""
    res.setdefault("host_speed", {})[name] = host_speed()
    try:
        fn()
    except Exception as exc:  # reported in the results; the other measurements go on
        log(f"{name} failed: {exc!r}")
        res.setdefault("errors", {})[name] = repr(exc)[-500:]


def run(args: argparse.Namespace) -> dict:
    cfg = dict(QUICK if args.quick else FULL)
    if args.events:
        cfg["events"] = args.events
    only = set(args.only.split(",")) if args.only else set(ALL)
    unknown = only - set(ALL)
    if unknown:
        raise SystemExit(f"unknown measurement(s): {', '.join(sorted(unknown))}")
    workdir = VAR / "run"
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    ds = dataset(cfg["events"])
    records = list(ds.records())
    n = len(records)
    res: dict = {"events": n, "quick": bool(args.quick), "command": _command(args),
                 "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                 "machine": f"{platform.machine()}, {_cpus()} CPUs, Python "
                            f"{platform.python_version()}",
                 "load_average_start": load_average()}
    log(f"{n:,} events from {ds.dir}; load average {load_average():.2f}")
    started = time.monotonic()
    with Broker() as broker:
        bs = broker.bootstrap

        def fresh_topic() -> None:
            asyncio.run(reset(bs))
            t = time.perf_counter()
            asyncio.run(preload(bs, topics.TRANSACTIONS, records))
            log(f"pre-loaded {n:,} events in {time.perf_counter() - t:.1f} s")

        if "ceiling" in only:
            def _ceiling() -> None:
                fresh_topic()
                r = ceiling.run(bs, n)
                res["ceiling_eps"] = r.eps
                log(f"ceiling: {r.eps:,.0f} ev/s")
            _guarded(res, "ceiling", _ceiling)
        if "floor" in only:
            def _floor() -> None:
                fresh_topic()
                r = throughput.floor(bs, workdir / "floor", n)
                res["faust_floor_eps"] = r.eps
                res["faust_floor_cpu_us_per_event"] = 1e6 * r.cpu_seconds / max(1, r.records)
                log(f"Faust floor: {r.eps:,.0f} ev/s")
            _guarded(res, "floor", _floor)
        if "floor_batched" in only:
            def _floor_batched() -> None:
                fresh_topic()
                r = throughput.floor(bs, workdir / "floor_batched", n, batched=True)
                res["faust_floor_batched_eps"] = r.eps
                res["faust_floor_batched_cpu_us_per_event"] = (1e6 * r.cpu_seconds
                                                               / max(1, r.records))
                log(f"Faust floor, the worker's delivery: {r.eps:,.0f} ev/s")
            _guarded(res, "floor_batched", _floor_batched)
        scaling = [m for m in ("worker", "two_workers") if m in only]
        if scaling:
            def _warm_up() -> None:
                # Unmeasured: a fresh broker's JVM compiles its produce and fetch paths over
                # its first two passes of this data, its JIT threads taking 0.12-0.19 of the
                # two CPUs meanwhile (0.01-0.03 once warm), CPU the two workers need.
                fresh_topic()
                w = throughput.workers(bs, workdir / "warmup", n, 2, ds.locations,
                                       broker_pid=broker.pid)
                res["broker_warmup"] = {"two_workers_eps": w.all_hops.eps,
                                        "broker_cpus_busy": w.broker_cpus_busy,
                                        "broker_jit_cpus_busy": w.broker_jit_cpus_busy}
            _guarded(res, "broker_warmup", _warm_up)

            def _scaling() -> None:
                # Pairs of the two steps, the headline figures the median pair's (by its
                # ratio): identical pairs on this shared machine spread wider than a change
                # would. Every other pair runs two workers first, so that the machine getting
                # slower (or faster) through the run does not favour either.
                pairs = []
                for k in range(cfg["throughput_pairs"]):
                    pair = {}
                    steps = [("worker", 1), ("two_workers", 2)]
                    for name, count in (steps if k % 2 == 0 else steps[::-1]):
                        if name not in scaling:
                            continue
                        speed = host_speed()
                        fresh_topic()
                        w = throughput.workers(bs, workdir / f"{name}-{k}", n, count,
                                               ds.locations, broker_pid=broker.pid)
                        pair[name] = _worker_figures(name, w)
                        pair[name][f"{name}_host_speed"] = speed
                    if len(pair) == 2:
                        pair["ratio"] = _ratio(pair["two_workers"]["two_workers_eps"],
                                               pair["worker"]["worker_eps"])
                    pairs.append(pair)
                res["throughput_pairs"] = pairs
                if len(scaling) == 2:
                    values = [p["ratio"] for p in pairs]
                else:
                    values = [p[scaling[0]][f"{scaling[0]}_eps"] for p in pairs]
                middle = pairs[median_index(values)]
                for name in scaling:
                    res.update(middle[name])
            _guarded(res, "throughput", _scaling)
        if "latency" in only:
            def _latency() -> None:
                asyncio.run(reset(bs))
                secs = cfg["latency_seconds"]
                # The first step is not measured: on the broker, the bridge's single-webhook
                # writes and the workers' short fetches are code paths the throughput steps did
                # not warm (its JIT), and a worker's first seconds pay for first writes.
                steps = latency.run_steps(bs, workdir / "latency", ds.envelopes, ds.locations,
                                          [(1000, 1), (500, 1), (1000, 1), (2000, 1), (2000, 2)],
                                          secs, broker_pid=broker.pid)
                res["latency_warmup"] = steps[0].as_dict()
                steps = steps[1:]
                res["latency"] = [s.as_dict() for s in steps]
                at1k = next(s for s in steps if s.rate == 1000)
                res["latency_p50_ms"] = at1k.p50_ms
                res["latency_p95_ms"] = at1k.p95_ms
                res["latency_p99_ms"] = at1k.p99_ms
                res["latency_samples"] = at1k.samples
                two = next(s for s in steps if s.rate == 2000 and s.workers == 2)
                res["backlog_growth_2000_two_workers_eps"] = two.backlog_growth
                res["backlog_end_2000_two_workers"] = two.backlog_end
            _guarded(res, "latency", _latency)
        if "bridge" in only:
            def _bridge() -> None:
                asyncio.run(reset(bs))
                skip = 4 * 2000 * cfg["latency_seconds"]  # events the latency steps did not use
                count = min(cfg["bridge_requests"], max(1000, n - skip))
                skip = min(skip, max(0, n - count))
                # Unmeasured, through a bridge of its own: a fresh broker's JVM compiles its
                # produce path over the first tens of thousands of records, at several times the
                # CPU per record of a warm broker, on the same two CPUs as the bridge. In a full
                # run the latency steps have warmed it; with --only bridge nothing would have.
                warmup = min(cfg["bridge_warmup"], count)
                latency.bridge_capacity(bs, workdir / "bridge-warmup", ds.envelopes, warmup, skip)
                res["bridge_warmup_requests"] = warmup
                floor_run = latency.bridge_capacity(bs, workdir / "bridge", ds.envelopes, count,
                                                    skip, floor=True)
                bridge_run = latency.bridge_capacity(bs, workdir / "bridge", ds.envelopes, count,
                                                     skip)
                res["bridge_rps"] = bridge_run.rps
                res["bridge_cpu_ms_per_request"] = bridge_run.cpu_per_request_ms
                res["bridge_statuses"] = bridge_run.statuses
                res["http_floor_rps"] = floor_run.rps
            _guarded(res, "bridge", _bridge)
        if "memory" in only:
            def _memory() -> None:
                locs = location_ids(ds)
                small, big = cfg["memory_cards"]
                base = memory.idle(bs, workdir / "memory", ds.locations)
                p1 = memory.restored(bs, workdir / "memory", ds.locations, locs, small)
                p2 = memory.restored(bs, workdir / "memory", ds.locations, locs, big)
                res["memory_idle_rss_bytes"] = base
                res["memory_points"] = [p.__dict__ for p in (p1, p2)]
                res["bytes_per_card"] = (p2.rss_bytes - p1.rss_bytes) / (big - small)
                res["state_bytes_per_card"] = (p2.state_bytes - p1.state_bytes) / (big - small)
                if cfg["live_cards"]:
                    lp = memory.live(bs, workdir / "memory", ds.locations, locs,
                                     cfg["live_cards"])
                    res["memory_live"] = lp.__dict__
            _guarded(res, "memory", _memory)
        res["kafka_seconds"] = time.monotonic() - started
    if "detector" in only:
        def _detector() -> None:
            # Runs back to back, the median reported: one run takes about 10 s of the engine's
            # time, short enough for a busy moment of the shared machine to decide it.
            runs = [detector.backtest(ds.envelopes, ds.locations, workdir / "detector")
                    for _ in range(cfg["detector_runs"])]
            rates = [r.detector_eps for r in runs]
            d = runs[median_index(rates)]
            res["detector_runs_eps"] = rates
            res["detector_eps"] = d.detector_eps
            res["detector_end_to_end_eps"] = d.end_to_end_eps
            res["detector_state_bytes_per_card"] = d.mean_card_state_bytes
            res["detector_alerts"] = d.alerts
        _guarded(res, "detector", _detector)
    res["load_average_end"] = load_average()
    res["seconds"] = time.monotonic() - started
    return res


def _worker_figures(name: str, w: throughput.WorkerRun) -> dict:
    """One worker run's results, under ``name`` (``worker`` or ``two_workers``)."""
    out = {f"{name}_eps": w.all_hops.eps, f"{name}_card_scope_eps": w.cards.eps,
           # CPUs the workers kept busy over the card-scope interval
           f"{name}_cpus_busy": w.cards.cpu_seconds / max(1e-9, w.cards.seconds),
           f"{name}_broker_cpus_busy": w.broker_cpus_busy,
           f"{name}_broker_jit_cpus_busy": w.broker_jit_cpus_busy,
           f"{name}_machine_cpus_busy": w.machine_cpus_busy}
    if name == "worker":
        out.update(worker_cpu_us_per_event=1e6 * w.cards.cpu_seconds / max(1, w.cards.records),
                   worker_alerts=w.alerts, worker_rss_bytes_after_run=w.rss_bytes[0])
    else:
        out.update(two_workers_events_per_worker=w.events_per_worker,
                   two_workers_start_spread_s=w.start_spread_s)
    return out


def _cpus() -> int:
    import os

    return os.cpu_count() or 0


def _command(args: argparse.Namespace) -> str:
    return "python -m bench.run" + (" --quick" if args.quick else "") + (
        f" --events {args.events}" if args.events else "") + (
        f" --only {args.only}" if args.only else "")


def table(res: dict) -> list[str]:
    """The results as a Markdown table: value, baseline, ratio, target, met."""
    def f(v: float | None, unit: str = "") -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "—"
        return f"{v:,.0f}{unit}" if abs(v) >= 100 else f"{v:,.1f}{unit}"

    def met(ok: bool | None) -> str:
        return "—" if ok is None else ("yes" if ok else "**no**")

    g = res.get
    rows = [("measurement", "value", "baseline (same run)", "ratio", "target", "met")]
    if g("ceiling_eps"):
        rows.append(("ceiling: aiokafka batches + orjson", f(g("ceiling_eps"), " ev/s"), "—",
                     "1", "—", "—"))
    if g("faust_floor_eps"):
        rows.append(("Faust floor: agent that only deserialises", f(g("faust_floor_eps"), " ev/s"),
                     f"ceiling {f(g('ceiling_eps'))}",
                     f"{_ratio(g('faust_floor_eps'), g('ceiling_eps') or 0):.3f}", "—", "—"))
    if g("faust_floor_batched_eps"):
        rows.append(("Faust floor, the worker's fetch-at-a-time delivery (no agent)",
                     f(g("faust_floor_batched_eps"), " ev/s"),
                     f"floor {f(g('faust_floor_eps'))}",
                     f"{_ratio(g('faust_floor_batched_eps'), g('faust_floor_eps') or 0):.2f}",
                     "—", "—"))
    if g("worker_eps"):
        r = _ratio(g("worker_eps"), g("faust_floor_eps") or 0)
        rows.append(("GiftGuard worker, 1 process (all hops)", f(g("worker_eps"), " ev/s"),
                     f"floor {f(g('faust_floor_eps'))}", _near(r, 0.7),
                     "≥ 0.7 × floor, ≥ 5,000 ev/s",
                     met(r >= 0.7 and g("worker_eps") >= 5000)))
    if g("two_workers_eps"):
        r = _ratio(g("two_workers_eps"), g("worker_eps") or 0)
        ratios = sorted(p["ratio"] for p in g("throughput_pairs", []) if "ratio" in p)
        spread = (f"; median of {len(ratios)} pairs, {ratios[0]:.2f}–{ratios[-1]:.2f}"
                  if len(ratios) > 1 else "")
        rows.append(("GiftGuard workers, 2 processes", f(g("two_workers_eps"), " ev/s"),
                     f"1 worker {f(g('worker_eps'))}{spread}", _near(r, 1.7), "≥ 1.7 × one",
                     met(r >= 1.7)))
    for s in g("latency", []):
        ok = s["p99_ms"] <= 50 if s["rate"] == 1000 and s["workers"] == 1 else None
        rows.append((f"latency POST → alert, {s['rate']:,.0f} ev/s offered, {s['workers']} "
                     f"worker(s): p50 / p95 / p99",
                     f"{f(s['p50_ms'])} / {f(s['p95_ms'])} / {f(s['p99_ms'])} ms",
                     f"{s['samples']} alerts; receipt→decision p99 {f(s['decision_p99_ms'])} ms",
                     f"backlog {s['backlog_end']:,.0f} ({s['backlog_growth']:+,.0f}/s)",
                     "p99 ≤ 50 ms" if ok is not None else (
                         "no backlog growth" if s["workers"] == 2 else "—"),
                     met(ok) if ok is not None else (
                         met(s["backlog_growth"] <= 50 and s["drained_s"] < 5)
                         if s["workers"] == 2 else "—")))
    if g("bridge_rps"):
        rows.append(("bridge: signed, Kafka-acknowledged requests/s", f(g("bridge_rps"), " req/s"),
                     f"bare aiohttp {f(g('http_floor_rps'))}",
                     f"{_ratio(g('bridge_rps'), g('http_floor_rps') or 0):.2f}", "≥ 3,000 req/s",
                     met(g("bridge_rps") >= 3000)))
    if g("bytes_per_card") is not None:
        rows.append(("worker memory per card (slope 100k → 1M)", f(g("bytes_per_card"), " B"),
                     f"raw state {f(g('state_bytes_per_card'))} B/card",
                     f"{_ratio(g('bytes_per_card'), g('state_bytes_per_card') or 0):.2f}",
                     "≤ 300 B", met(g("bytes_per_card") <= 300)))
    if g("detector_eps"):
        runs = g("detector_runs_eps") or []
        rows.append(("detector alone (giftguard backtest)", f(g("detector_eps"), " ev/s"),
                     f"worker {f(g('worker_eps'))}" + (
                         f"; median of {len(runs)} runs, {f(min(runs))}–{f(max(runs))}"
                         if len(runs) > 1 else ""),
                     f"{_ratio(g('detector_eps'), g('worker_eps') or 0):.1f}", "≥ 50,000 ev/s",
                     met(g("detector_eps") >= 50_000)))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    out = ["| " + " | ".join(c.ljust(widths[i]) for i, c in enumerate(r)) + " |" for r in rows]
    out.insert(1, "|" + "|".join("-" * (w + 2) for w in widths) + "|")
    return out


def write(res: dict, out_dir: Path) -> None:
    (out_dir / "results.json").write_text(json.dumps(res, indent=2, sort_keys=True) + "\n")
    lines = ["# GiftGuard benchmark: latest results", "",
             f"`{res['command']}` ({'quick' if res.get('quick') else 'full'} run, "
             f"{res['events']:,} simulated events, {res['started']}, {res['machine']}, "
             f"load average {res['load_average_start']:.1f} at start, "
             f"{res['load_average_end']:.1f} at end; {res['seconds'] / 60:.0f} min).", "",
             *table(res), "",
             "Ratios compare each figure with its baseline measured in the same run on the same "
             "broker and data; the machine is shared, so absolute numbers move with its load. "
             "`bench/results.json` has every number.", *_speeds(res), *_latency_cpus(res)]
    (out_dir / "RESULTS.md").write_text("\n".join(lines))


def _speeds(res: dict) -> list[str]:
    """A sentence on how fast the machine ran Python before each measurement."""
    speeds = res.get("host_speed") or {}
    if not speeds:
        return [""]
    top = max(speeds.values())
    return ["", "How fast the machine ran a fixed piece of Python just before each measurement "
            "(`host_speed`), as a share of its fastest in this run: "
            + ", ".join(f"{name} {v / top:.2f}" for name, v in speeds.items()) + ".", ""]


def _latency_cpus(res: dict) -> list[str]:
    """A sentence on where the two CPUs went during each latency step."""
    steps = [s for s in res.get("latency", []) if s.get("cpus_busy")]
    if not steps:
        return []
    parts = []
    for s in steps:
        c = s["cpus_busy"]
        who = ", ".join(f"{k} {c[k]:.2f}" for k in ("broker", "workers", "bridge", "load", "tap")
                        if k in c)
        parts.append(f"{s['rate']:,.0f}/s × {s['workers']}: {c.get('machine', 0):.2f} ({who})")
    lines = ["CPUs busy during each latency step, the whole machine (broker, workers, bridge, "
             "load generator, alert tap): " + "; ".join(parts) + ".", ""]
    w = res.get("latency_warmup")
    if w:
        lines += [f"Before the latency steps, an unmeasured one warmed the broker, the bridge "
                  f"and the worker: {w['rate']:,.0f}/s for {w['sent'] / w['rate']:.0f} s, p50 / "
                  f"p99 {w['p50_ms']:.1f} / {w['p99_ms']:.1f} ms, broker "
                  f"{w['cpus_busy'].get('broker', float('nan')):.2f} CPUs.", ""]
    return lines


def main(argv: list[str] | None = None) -> int:
    signal.signal(signal.SIGTERM, lambda *a: sys.exit(143))  # stop what we started
    p = argparse.ArgumentParser(prog="python -m bench.run", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="a short version (a few minutes)")
    p.add_argument("--events", type=int, help="simulated events to replay")
    p.add_argument("--only", help=f"comma-separated subset of {','.join(ALL)}")
    p.add_argument("--out", type=Path, default=HERE,
                   help="where results.json and RESULTS.md go (default bench/)")
    args = p.parse_args(argv)
    res = run(args)
    print("\n".join(table(res)))
    args.out.mkdir(parents=True, exist_ok=True)
    write(res, args.out)
    log(f"wrote {args.out / 'results.json'} and {args.out / 'RESULTS.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
