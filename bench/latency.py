"""Latency (signed POST to the bridge → alert on ``giftcard.alerts``) at fixed offered rates,
backlog with two workers, and the bridge's own capacity.

Latency samples are the events that raise an alert: their POST time (``bench.load``) joined
with the time ``bench.tap`` consumed the alert. Every event's bridge-receipt → decision time is
also read from the workers' ``giftguard_receipt_to_decision_seconds`` histogram.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import orjson

from bench.common import (
    CpuClock,
    Proc,
    cpu_seconds,
    env_for,
    free_port,
    log,
    machine_cpu_seconds,
    metric_sum,
    scrape,
    start,
    start_worker,
)

KEY = "bench-signature-key"


def start_bridge(bootstrap: str, workdir: Path, name: str = "bridge") -> Proc:
    port = free_port()
    env = env_for(bootstrap, SQUARE_WEBHOOK_SIGNATURE_KEY=KEY,
                  SQUARE_WEBHOOK_URL=f"http://127.0.0.1:{port}/webhooks/square",
                  GIFTGUARD_LOG_LEVEL="WARNING")
    return start(name, ["-m", "streams.cli", "bridge", "--port", str(port)], env, workdir, port)


def _load(bridge: Proc, workdir: Path, events: Path, skip: int, count: int, *, tag: str,
          rate: float | None = None, concurrency: int = 32) -> Proc:
    url = f"http://127.0.0.1:{bridge.port}/webhooks/square"
    argv = ["-m", "bench.load", "--url", url, "--key", KEY, "--notification-url", url,
            "--events", str(events), "--skip", str(skip), "--count", str(count),
            "--concurrency", str(concurrency), "--out", str(workdir / f"load-{tag}.json")]
    if rate:
        argv += ["--rate", str(rate), "--times", str(workdir / f"posted-{tag}.tsv")]
    return start(f"load-{tag}", argv, env_for("unused:1"), workdir)


def _wait(proc: Proc, timeout: float) -> None:
    try:
        proc.process.wait(timeout)
    except Exception:
        proc.stop()
        raise
    if proc.process.returncode != 0:
        raise RuntimeError(f"{proc.name} failed:\n{proc.log()[-2000:]}")


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q / 100 * (len(s) - 1))))]


def histogram_quantile(before: dict, after: dict, name: str, q: float) -> float:
    """Upper bound of the bucket holding quantile ``q`` of what was observed between two
    scrapes (summed over processes; linear within the bucket, as Prometheus does)."""
    def buckets(metrics: list[dict]) -> dict[float, float]:
        out: dict[float, float] = {}
        for m in metrics:
            for labels, v in m.get(f"{name}_bucket", []):
                le = labels.split('le="')[1].split('"')[0]
                key = float("inf") if le == "+Inf" else float(le)
                out[key] = out.get(key, 0.0) + v
        return out
    b0, b1 = buckets(before), buckets(after)
    bounds = sorted(b1)
    counts = [b1[le] - b0.get(le, 0.0) for le in bounds]
    total = counts[-1] if counts else 0
    if total <= 0:
        return float("nan")
    rank = q / 100 * total
    prev_le, prev_c = 0.0, 0.0
    for le, c in zip(bounds, counts, strict=True):
        if c >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (rank - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return bounds[-1]


@dataclass
class Step:
    rate: float
    workers: int
    sent: int = 0
    ok: int = 0
    achieved: float = 0.0
    samples: int = 0
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    p99_ms: float = float("nan")
    decision_p50_ms: float = float("nan")
    decision_p99_ms: float = float("nan")
    backlog: list[tuple[float, float]] = field(default_factory=list)  # (seconds, events behind)
    backlog_end: float = 0.0
    backlog_growth: float = 0.0  # events/s the backlog grew over the second half
    drained_s: float = 0.0       # after the last POST, until every event was decided
    #: CPUs each process kept busy while the load ran (``load`` is the client's own process
    #: time; ``machine`` everything on the machine): where a 2-CPU host's time goes.
    cpus_busy: dict[str, float] = field(default_factory=dict)

    def as_dict(self) -> dict[str, object]:
        d = dict(self.__dict__)
        d["backlog"] = [[round(t, 2), b] for t, b in self.backlog]
        return d


def run_steps(bootstrap: str, workdir: Path, events: Path, locations: Path,
              steps: list[tuple[float, int]], seconds: float, skip: int = 0,
              broker_pid: int | None = None) -> list[Step]:
    """One bridge; for each ``(rate, workers)`` POST ``rate × seconds`` events at ``rate``."""
    bridge = start_bridge(bootstrap, workdir)
    workers: list[Proc] = []
    tap_out, ready = workdir / "alerts.tsv", workdir / "tap.ready"
    tap = start("tap", ["-m", "bench.tap", "--bootstrap", bootstrap, "--out", str(tap_out),
                        "--ready", str(ready)], env_for(bootstrap), workdir)
    results = []
    try:
        bridge.wait_healthy()
        deadline = time.monotonic() + 60
        while not ready.exists():
            if time.monotonic() > deadline or not tap.alive():
                raise RuntimeError(f"alert tap did not start:\n{tap.log()}")
            time.sleep(0.1)
        for rate, n_workers in steps:
            while len(workers) < n_workers:
                workers.append(start_worker(bootstrap, workdir, name=f"worker{len(workers) + 1}",
                                            GIFTGUARD_LOCATIONS=str(locations)))
            for w in workers:  # (each has its partitions and tables: the rebalance is over)
                w.wait_healthy()
            time.sleep(3)  # let a rebalance settle before the clock starts
            step = Step(rate, n_workers)
            count = int(rate * seconds)
            tag = f"{int(rate)}x{n_workers}"
            m0 = [scrape(w) for w in workers]
            done0 = sum(metric_sum(m, "giftguard_events_total") for m in m0)
            acc0 = metric_sum(scrape(bridge), "giftguard_bridge_requests_total")
            clock = CpuClock(_cpu_counters(bridge, tap, workers, broker_pid))
            t0 = time.monotonic()
            load = _load(bridge, workdir, events, skip, count, tag=tag, rate=rate)
            skip += count
            while load.alive():
                time.sleep(0.5)
                done = sum(metric_sum(scrape(w), "giftguard_events_total") for w in workers)
                accepted = metric_sum(scrape(bridge), "giftguard_bridge_requests_total") - acc0
                step.backlog.append((time.monotonic() - t0, max(0.0, accepted - (done - done0))))
            _wait(load, 30)
            t_end = time.monotonic()
            step.cpus_busy = {k: round(v, 3) for k, v in clock.busy().items()}
            info = orjson.loads((workdir / f"load-{tag}.json").read_bytes())
            step.cpus_busy["load"] = round(info["cpu_seconds"] / (t_end - t0), 3)
            step.sent, step.ok = info["sent"], info["ok"]
            step.achieved = info["sent"] / info["seconds"]
            while time.monotonic() - t_end < 120:  # drain: every accepted event decided
                done = sum(metric_sum(scrape(w), "giftguard_events_total") for w in workers)
                if done - done0 >= step.ok:
                    break
                time.sleep(0.2)
            step.drained_s = time.monotonic() - t_end
            time.sleep(1.5)  # the last alerts reach the tap
            m1 = [scrape(w) for w in workers]
            name = "giftguard_receipt_to_decision_seconds"
            step.decision_p50_ms = 1000 * histogram_quantile(m0, m1, name, 50)
            step.decision_p99_ms = 1000 * histogram_quantile(m0, m1, name, 99)
            half = [b for t, b in step.backlog if t >= seconds / 2]
            if len(half) >= 2:
                step.backlog_growth = (half[-1] - half[0]) / (seconds / 2)
            step.backlog_end = step.backlog[-1][1] if step.backlog else 0.0
            posted = dict(line.split("\t") for line in
                          (workdir / f"posted-{tag}.tsv").read_text().splitlines())
            latencies = []
            for line in tap_out.read_text().splitlines():
                eid, t = line.split("\t")[:2]
                if eid in posted:
                    latencies.append(1000 * (float(t) - float(posted.pop(eid))))
            step.samples = len(latencies)
            step.p50_ms = percentile(latencies, 50)
            step.p95_ms = percentile(latencies, 95)
            step.p99_ms = percentile(latencies, 99)
            log(f"latency {rate:.0f}/s x{n_workers}: sent {step.sent} ok {step.ok} "
                f"({step.achieved:,.0f}/s) alerts {step.samples} p50 {step.p50_ms:.1f} "
                f"p95 {step.p95_ms:.1f} p99 {step.p99_ms:.1f} ms; decision p99 "
                f"{step.decision_p99_ms:.1f} ms; backlog end {step.backlog_end:.0f} "
                f"growth {step.backlog_growth:+.1f}/s drained {step.drained_s:.1f}s; CPUs "
                + " ".join(f"{k} {v:.2f}" for k, v in step.cpus_busy.items()))
            results.append(step)
        return results
    finally:
        for p in [tap, *workers, bridge]:
            p.stop()


def _cpu_counters(bridge: Proc, tap: Proc, workers: list[Proc], broker_pid: int | None
                  ) -> dict[str, Callable[[], float]]:
    """The CPU-time counters of a latency step's processes, and of the whole machine."""
    counters: dict[str, Callable[[], float]] = {
        "bridge": lambda: cpu_seconds(bridge.pid), "tap": lambda: cpu_seconds(tap.pid),
        "workers": lambda: sum(cpu_seconds(w.pid) for w in workers),
        "machine": machine_cpu_seconds}
    if broker_pid is not None:
        counters["broker"] = lambda: cpu_seconds(broker_pid)
    return counters


def http_floor_app() -> None:
    """``python -m bench.latency http-floor PORT``: answers every POST 200 (aiohttp, no
    signature check, no Kafka): the baseline for the bridge's requests/s."""
    from aiohttp import web

    async def ok(request: web.Request) -> web.Response:
        await request.read()
        return web.json_response({"status": "accepted"})

    async def healthz(request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    app = web.Application()
    app.router.add_post("/webhooks/square", ok)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=int(sys.argv[2]), print=None, access_log=None)


@dataclass
class BridgeRun:
    rps: float
    ok: int
    sent: int
    cpu_per_request_ms: float
    statuses: dict[str, int]


def bridge_capacity(bootstrap: str, workdir: Path, events: Path, count: int, skip: int,
                    concurrency: int = 32, floor: bool = False, clients: int = 2) -> BridgeRun:
    """Closed-loop signed POSTs from ``clients`` processes, ``concurrency`` at a time each,
    every one acknowledged by Kafka (or, with ``floor``, by a bare aiohttp app)."""
    if floor:
        port = free_port()
        server = start("http-floor", ["-m", "bench.latency", "http-floor", str(port)],
                       env_for(bootstrap), workdir, port)
    else:
        server = start_bridge(bootstrap, workdir, name="bridge-capacity")
    tag = "http-floor" if floor else "bridge"
    try:
        server.wait_healthy()
        cpu0 = cpu_seconds(server.pid)
        share = count // clients
        loads = [_load(server, workdir, events, skip + i * share, share, tag=f"{tag}{i}",
                       concurrency=concurrency) for i in range(clients)]
        for load in loads:
            _wait(load, 600)
        cpu = cpu_seconds(server.pid) - cpu0
        infos = [orjson.loads((workdir / f"load-{tag}{i}.json").read_bytes())
                 for i in range(clients)]
        ok = sum(i["ok"] for i in infos)
        statuses: dict[str, int] = {}
        for i in infos:
            for k, v in i["statuses"].items():
                statuses[k] = statuses.get(k, 0) + v
        run = BridgeRun(ok / max(i["seconds"] for i in infos), ok,
                        sum(i["sent"] for i in infos), 1000 * cpu / max(1, ok), statuses)
        log(f"{tag}: {run.rps:,.0f} req/s ({run.ok}/{run.sent} ok), "
            f"{run.cpu_per_request_ms:.3f} ms server CPU per request")
        return run
    finally:
        server.stop()


if __name__ == "__main__" and len(sys.argv) > 1 and sys.argv[1] == "http-floor":
    http_floor_app()
