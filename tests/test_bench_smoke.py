"""A tiny run of the benchmark's pieces (``make bench`` runs them at full size): the data, the
ceiling, the Faust floor, one worker, a short latency step, and the results table."""

from __future__ import annotations

import asyncio
import math
from pathlib import Path

import pytest

from bench import ceiling, latency, run, throughput
from bench.common import host_speed, jit_cpu_seconds, preload, reset
from bench.data import Dataset, activations, dataset
from streams import topics
from streams.broker import DevBroker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


@pytest.fixture(scope="module")
def small() -> Dataset:
    return dataset(3_000)


def test_throughput_and_latency(kafka: DevBroker, bootstrap: str, small: Dataset,
                                tmp_path: Path) -> None:
    records = list(small.records())
    assert records and all(key.startswith(b"gftc:") for key, _ in records[:10])

    asyncio.run(reset(bootstrap))
    n = asyncio.run(preload(bootstrap, topics.TRANSACTIONS, records))
    assert n == len(records)
    top = ceiling.run(bootstrap, n)
    assert top.records > 0 and top.eps > 0
    floor = throughput.floor(bootstrap, tmp_path / "floor", n, timeout=60)
    assert floor.eps > 0
    asyncio.run(reset(bootstrap))  # the floor committed the group's offsets at the end
    asyncio.run(preload(bootstrap, topics.TRANSACTIONS, records))
    batched = throughput.floor(bootstrap, tmp_path / "floor_batched", n, timeout=60, batched=True)
    assert batched.eps > 0  # (measure() raises unless every record was read)
    asyncio.run(reset(bootstrap))
    asyncio.run(preload(bootstrap, topics.TRANSACTIONS, records))
    assert kafka.process is not None
    jit_before = jit_cpu_seconds(kafka.process.pid)
    w = throughput.workers(bootstrap, tmp_path / "worker", n, 1, small.locations, timeout=90,
                           broker_pid=kafka.process.pid)
    assert w.cards.eps > 0 and w.all_hops.eps > 0 and w.rss_bytes[0] > 0
    # the broker's JIT threads are found by name (a fresh JVM compiles all along this test)
    assert jit_cpu_seconds(kafka.process.pid) > jit_before
    assert w.broker_jit_cpus_busy is not None and w.broker_cpus_busy is not None
    assert 0 <= w.broker_jit_cpus_busy <= w.broker_cpus_busy

    asyncio.run(reset(bootstrap))
    [step] = latency.run_steps(bootstrap, tmp_path / "latency", small.envelopes,
                               small.locations, [(200, 1)], seconds=3)
    assert step.ok == step.sent == 600
    assert step.backlog_end == 0 or step.drained_s < 30
    assert not math.isnan(step.decision_p99_ms)

    res = {"events": n, "ceiling_eps": top.eps, "faust_floor_eps": floor.eps,
           "faust_floor_batched_eps": batched.eps, "worker_eps": w.all_hops.eps,
           "two_workers_eps": 1.6 * w.all_hops.eps,
           "throughput_pairs": [{"ratio": 1.6}, {"ratio": 1.75}, {"ratio": 1.5}],
           "latency": [step.as_dict()],
           "detector_eps": 52_000.0, "detector_runs_eps": [52_000.0, 48_000.0, 61_000.0]}
    lines = run.table(res)
    assert lines[0].startswith("| measurement") and any("Faust floor" in r for r in lines)
    assert any("fetch-at-a-time delivery" in r for r in lines)
    [two] = [r for r in lines if "2 processes" in r]
    assert "median of 3 pairs, 1.50–1.75" in two and "| 1.60 " in two
    # a ratio just under its target is not printed as the target
    res.update(two_workers_eps=1.6995 * w.all_hops.eps)
    [two] = [r for r in run.table(res) if "2 processes" in r]
    assert "| 1.699 " in two and two.rstrip(" |").endswith("**no**")
    [det] = [r for r in lines if r.startswith("| detector alone")]
    assert "52,000 ev/s" in det and "median of 3 runs, 48,000–61,000" in det and "| yes" in det


def test_host_speed_is_reported_against_the_fastest_of_the_run() -> None:
    assert host_speed(rounds=3, n=10_000, pause=0) > 10_000  # loops/s, however busy the machine
    [_, sentence, _] = run._speeds({"host_speed": {"ceiling": 4e6, "floor": 2e6, "worker": 3e6}})
    assert sentence.endswith("ceiling 1.00, floor 0.50, worker 0.75.")
    assert run._speeds({}) == [""]


def test_activations_are_distinct_cards() -> None:
    keys = [k for k, _ in activations(50, ["L1", "L2"])]
    assert len(set(keys)) == 50
