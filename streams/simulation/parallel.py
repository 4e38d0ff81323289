"""Write a run with several processes: each generates and serializes some shards, the parent
merges their lines by ``(time, shard)``, so the files are byte-identical to a one-process run."""

from __future__ import annotations

import heapq
import multiprocessing as mp
import queue
from collections.abc import Iterator
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import orjson

from streams.simulation.engine import Simulation
from streams.simulation.model import SimConfig
from streams.simulation.output import RunWriter, Tally
from streams.simulation.world import build_locations

_LINE = orjson.OPT_APPEND_NEWLINE
_BATCH = 2000
# (ts_ms, shard, envelope line, label line, pattern, trap, is_fraud, type, incident, card)
Row = tuple[int, int, bytes, bytes, Any, Any, bool, str, Any, str]


def _produce(cfg: SimConfig, shards: list[int], out: Any) -> None:
    """Child process: generate ``shards`` merged by time, send serialized rows in batches."""
    batch: list[Row] = []
    for (ts, shard), ev in Simulation(cfg, shards).tagged():
        kind = ev.envelope["data"]["object"]["gift_card_activity"]["type"]
        batch.append((ts, shard, orjson.dumps(ev.envelope, option=_LINE),
                      orjson.dumps(ev.label(), option=_LINE), ev.pattern, ev.trap, ev.is_fraud,
                      kind, ev.incident_id, ev.card_id))
        if len(batch) >= _BATCH:
            out.put(batch)
            batch = []
    out.put(batch)
    out.put(None)


def _rows(q: Any, proc: BaseProcess) -> Iterator[Row]:
    while True:
        try:
            batch = q.get(timeout=1.0)
        except queue.Empty:
            if not proc.is_alive():
                raise RuntimeError(f"simulation worker {proc.name} died "
                                   f"(exit code {proc.exitcode})") from None
            continue
        if batch is None:
            return
        yield from batch


def write_parallel(cfg: SimConfig, out_dir: str | Path, jobs: int) -> Tally:
    """Write ``cfg``'s run to ``out_dir`` using ``jobs`` generator processes."""
    jobs = max(1, min(jobs, cfg.shards))
    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    queues = [ctx.Queue(maxsize=16) for _ in range(jobs)]
    procs = [ctx.Process(target=_produce, name=f"simulate-{j}", daemon=True,
                         args=(cfg, list(range(j, cfg.shards, jobs)), queues[j]))
             for j in range(jobs)]
    for proc in procs:
        proc.start()
    tally = Tally()
    try:
        with RunWriter(out_dir, build_locations()) as writer:
            events, labels = writer.raw_files()
            add = tally.add_fields
            for row in heapq.merge(*(_rows(q, p) for q, p in zip(queues, procs, strict=True))):
                events.write(row[2])
                labels.write(row[3])
                add(row[4], row[5], row[6], row[7], row[8], row[9], row[0])
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
    return tally
