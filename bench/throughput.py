"""Faust floor and GiftGuard worker throughput over the pre-loaded ``giftcard.transactions``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from bench.common import (
    GROUP,
    CpuClock,
    Proc,
    Rate,
    cpu_seconds,
    env_for,
    free_port,
    jit_cpu_seconds,
    log,
    machine_cpu_seconds,
    measure,
    metric_sum,
    partitions,
    scrape,
    start,
    start_worker,
)
from streams import topics


def floor(bootstrap: str, workdir: Path, expected: int, timeout: float = 600,
          batched: bool = False) -> Rate:
    """Events/s of a Faust agent that only deserialises each event (``batched``: of the
    worker's fetch-at-a-time delivery doing only that)."""
    port = free_port()
    args = ["-m", "bench.floor", "--web-port", str(port)] + (["--batched"] if batched else [])
    launched = time.monotonic()
    proc = start("floor", args, env_for(bootstrap), workdir, port)
    try:
        proc.wait_healthy()
        return measure(lambda: metric_sum(scrape(proc), "bench_events_total"), expected,
                       timeout=timeout, alive=proc.alive, pids=[proc.pid], launched=launched)
    finally:
        proc.stop()


@dataclass
class WorkerRun:
    """One (or several) workers over the whole topic."""

    cards: Rate          # card scope: giftguard_events_total from first progress to all events
    all_hops: Rate       # the same start, until the entity and alert hops were drained too
    alerts: float
    rss_bytes: list[int]
    #: CPUs the broker kept busy meanwhile (when its pid was given), from its CPU time
    broker_cpus_busy: float | None = None
    #: CPUs busy on the whole machine meanwhile (every process, the benchmark's own included)
    machine_cpus_busy: float | None = None
    #: Of the broker's, the CPUs its JIT compiler threads kept busy
    broker_jit_cpus_busy: float | None = None
    #: Events each worker scored, and how far apart the workers' first progress was (seconds;
    #: a worker that started alone and was joined later shows here)
    events_per_worker: list[float] | None = None
    start_spread_s: float | None = None


async def _group_drained(bootstrap: str, names: tuple[str, ...], timeout: float) -> float:
    """Wait until the group's committed offsets reach the end of ``names``; when it did."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await admin.start()
    await consumer.start()
    try:
        tps = [TopicPartition(name, p) for name in names
               for p in await partitions(consumer, name)]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ends = await consumer.end_offsets(tps)
            done = await admin.list_consumer_group_offsets(GROUP)
            if all((done.get(tp).offset if done.get(tp) else 0) >= ends[tp] for tp in tps):
                return time.monotonic()
            await asyncio.sleep(0.25)
        raise TimeoutError(f"{names} not drained after {timeout:.0f}s")
    finally:
        await consumer.stop()
        await admin.close()


def workers(bootstrap: str, workdir: Path, expected: int, count: int = 1,
            locations: Path | None = None, timeout: float = 900, broker_pid: int | None = None,
            **env: str) -> WorkerRun:
    """``count`` real workers (every detector, RocksDB tables, alert output) over the topic."""
    extra = dict(env)
    if locations is not None:
        extra["GIFTGUARD_LOCATIONS"] = str(locations)
    launched = time.monotonic()
    procs: list[Proc] = [start_worker(bootstrap, workdir, name=f"worker{i + 1}", **extra)
                         for i in range(count)]
    try:
        for p in procs:
            p.wait_healthy()

        first_progress: list[float | None] = [None] * count
        per_worker = [0.0] * count

        def events() -> float:
            now = time.monotonic()
            for i, p in enumerate(procs):
                per_worker[i] = metric_sum(scrape(p), "giftguard_events_total")
                if per_worker[i] > 0 and first_progress[i] is None:
                    first_progress[i] = now
            return sum(per_worker)

        # CPU counters read around the card phase: CPUs each kept busy meanwhile
        counters: dict[str, Callable[[], float]] = {"machine": machine_cpu_seconds}
        if broker_pid:
            counters.update(broker=lambda: cpu_seconds(broker_pid),
                            jit=lambda: jit_cpu_seconds(broker_pid))
        clock = CpuClock(counters)
        started = clock.started
        # (a small run may be over before the first sample: then timed from the launch)
        cards = measure(events, expected, timeout=timeout, launched=launched,
                        alive=lambda: all(p.alive() for p in procs), pids=[p.pid for p in procs])
        t_cards = time.monotonic()
        busy = clock.busy()
        # measure() started its clock at the first progress, cards.seconds before t_cards
        t_first = t_cards - cards.seconds
        t_drained = asyncio.run(_group_drained(
            bootstrap, (topics.TRANSACTIONS, topics.ENTITY_EVENTS, topics.ALERTS),
            timeout=max(60.0, timeout - (t_cards - started))))
        all_hops = Rate(cards.records, t_drained - t_first)
        alerts = sum(metric_sum(scrape(p), "giftguard_alerts_total") for p in procs)
        rss = [_rss(p) for p in procs]
        starts = [t for t in first_progress if t is not None]
        spread = max(starts) - min(starts) if len(starts) == count else None
        log(f"{count} worker(s): {cards.eps:,.0f} ev/s card scope, {all_hops.eps:,.0f} ev/s "
            f"all hops drained (+{t_drained - t_cards:.1f} s), {alerts:,.0f} alerts"
            + (f"; events per worker {', '.join(f'{n:,.0f}' for n in per_worker)}, first "
               f"progress {spread:.1f} s apart" if count > 1 and spread is not None else ""))
        return WorkerRun(cards, all_hops, alerts, rss, busy.get("broker"), busy["machine"],
                         busy.get("jit"), list(per_worker), spread)
    finally:
        for p in procs:
            p.stop()


def _rss(p: Proc) -> int:
    from bench.common import rss_bytes

    return rss_bytes(p.pid)
