"""What every measurement shares: the broker, topic resets, pre-loading, processes, polling.

Throughput is measured the same way everywhere: a counter (records consumed, or the worker's
``giftguard_events_total``) is sampled every ``POLL`` seconds; the rate is the records counted
between the first sample that saw progress and the first sample that saw the whole topic, over
the time between those samples. Start-up and group join are left out of every figure alike.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from aiokafka import AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.protocol.admin import DeleteGroupsRequest

from streams.admin import ensure_topics
from streams.broker import BrokerError, DevBroker, free_port

ROOT = Path(__file__).resolve().parent.parent
VAR = ROOT / "var" / "bench"
PARTITIONS = 8
GROUP = "giftguard"  # the Faust app id, which is the worker's consumer group
POLL = 0.25


def log(message: str) -> None:
    """Progress on stderr (the table goes to stdout)."""
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def load_average() -> float:
    """The 1-minute load average (the machine is shared: every figure notes it)."""
    return os.getloadavg()[0]


def host_speed(rounds: int = 9, n: int = 200_000, pause: float = 0.1) -> float:
    """Loops/s of a fixed piece of pure Python (dict updates, small strings and integers), the
    median of ``rounds`` over about a second and a half: how fast this shared machine runs
    Python code at the moment. The load average misses the neighbours that share its CPUs;
    this sees them, as slower code (idle, it ran 2.2 to 5.1 million loops/s from one
    half-second to the next)."""
    rates = []
    for _ in range(rounds):
        t = time.perf_counter()
        d: dict[str, int] = {}
        for i in range(n):
            k = f"k{i % 997}"
            d[k] = d.get(k, 0) + i * 3 // 7
        rates.append(n / (time.perf_counter() - t))
        time.sleep(pause)
    return sorted(rates)[rounds // 2]


def machine_cpu_seconds() -> float:
    """CPU time every process on the machine has used so far (busy, not idle or I/O wait)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


#: The names (``comm``, cut to 15 characters) of the HotSpot JIT compiler threads.
JIT_THREADS = ("C1 CompilerThre", "C2 CompilerThre")


def jit_cpu_seconds(pid: int) -> float:
    """CPU time a JVM's JIT compiler threads have used so far (0 when it is gone).

    A fresh broker compiles its produce and fetch paths through the benchmark's first two passes
    of its data, taking CPU from whatever shares the machine with it (bench/README.md)."""
    total = 0.0
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            if (task / "comm").read_text().strip() in JIT_THREADS:
                total += _stat_cpu_seconds(task / "stat")
        except OSError:  # (a thread that ended meanwhile)
            continue
    return total


def rss_bytes(pid: int) -> int:
    """Resident memory of a process (VmRSS from /proc)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used so far."""
    return _stat_cpu_seconds(Path(f"/proc/{pid}/stat"))


class CpuClock:
    """CPU-time counters (name → a reader of CPU seconds so far) read when this is made;
    :meth:`busy` gives the CPUs each kept busy since."""

    def __init__(self, counters: dict[str, Callable[[], float]]) -> None:
        self.counters = counters
        self.started = time.monotonic()
        self.before = {name: read() for name, read in counters.items()}

    def busy(self) -> dict[str, float]:
        elapsed = max(1e-9, time.monotonic() - self.started)
        return {name: (read() - self.before[name]) / elapsed
                for name, read in self.counters.items()}


def _stat_cpu_seconds(stat: Path) -> float:
    """User + system CPU time in a ``/proc`` ``stat`` file (a process's or a thread's)."""
    fields = stat.read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# -- the broker -------------------------------------------------------------------------------

#: Kafka's default ``group.initial.rebalance.delay.ms``, which a production broker has and the
#: tests' broker does not (0): workers started together get their partitions in one assignment.
#: With 0, the first worker to join took every partition and scored a few seconds of the
#: pre-loaded backlog alone before the second worker's join moved half of them (measured: one
#: worker 25,871 events ahead, then 1 s with neither scoring), inside the two-worker figure.
GROUP_JOIN_DELAY_MS = 3000


class Broker:
    """A development Kafka on a free port with a throw-away data directory."""

    def __init__(self, heap: str = "1g") -> None:
        VAR.mkdir(parents=True, exist_ok=True)
        self._fresh(heap)

    def _fresh(self, heap: str) -> None:
        """A new data directory (so a new cluster id) and a broker on a new free port."""
        self.data_dir = Path(tempfile.mkdtemp(prefix="kafka-", dir=VAR))
        self.broker = DevBroker(port=free_port(), data_dir=self.data_dir, heap=heap,
                                group_join_delay_ms=GROUP_JOIN_DELAY_MS)

    def __enter__(self) -> Broker:
        for _ in range(3):
            try:
                self.broker.start(timeout=120)
                return self
            except BrokerError as exc:
                # e.g. a random cluster id starting with "-", which kafka-storage's argument
                # parser takes for an option: a fresh directory gets a fresh id
                log(f"broker did not start ({str(exc)[-120:]}); retrying")
                shutil.rmtree(self.data_dir, ignore_errors=True)
                self._fresh(self.broker.heap)
        raise BrokerError("the benchmark's broker did not start three times")

    def __exit__(self, *exc: object) -> None:
        self.broker.stop()
        shutil.rmtree(self.data_dir, ignore_errors=True)

    @property
    def bootstrap(self) -> str:
        return self.broker.bootstrap

    @property
    def pid(self) -> int | None:
        return self.broker.process.pid if self.broker.process else None


async def reset(bootstrap: str, partitions: int = PARTITIONS) -> None:
    """Delete every topic and the worker's consumer group, then create the GiftGuard topics.

    Each scenario starts from empty topics, no committed offsets and no changelogs, so one
    scenario's records or state never leak into the next.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=30_000)
    await admin.start()
    try:
        for _ in range(3):  # the group can only go once its last member left
            try:
                node = await admin.find_coordinator(GROUP)
                await admin._send_request_to_node(node, DeleteGroupsRequest([GROUP]))
                break
            except Exception:  # no such group is fine
                await asyncio.sleep(1)
        names = [t for t in await admin.list_topics() if not t.startswith("__")]
        if names:
            await admin.delete_topics(names)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            left = [t for t in await admin.list_topics() if t in names]
            if not left:
                break
            await asyncio.sleep(0.3)
    finally:
        await admin.close()
    await asyncio.sleep(1.0)  # let the broker forget the deleted partitions
    await ensure_topics([bootstrap], partitions)


async def preload(bootstrap: str, topic: str, records: Iterable[tuple[bytes, bytes]],
                  partitions: int = PARTITIONS) -> int:
    """Write ``(key, value)`` records in large batches, partitioned as a default producer
    would (murmur2 of the key), so the bridge and the pre-loaded data agree on partitions."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=20,
                                max_batch_size=1 << 20, max_request_size=8 << 20,
                                compression_type=None)
    await producer.start()
    partitioner = DefaultPartitioner()
    parts = list(range(partitions))
    batches = {p: producer.create_batch() for p in parts}
    pending: list[asyncio.Future] = []
    n = 0
    try:
        for key, value in records:
            p = partitioner(key, parts, parts)
            batch = batches[p]
            if batch.append(key=key, value=value, timestamp=None) is None:
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=p))
                batch = batches[p] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)
            n += 1
            if len(pending) > 64:
                await asyncio.gather(*pending)
                pending.clear()
        for p, batch in batches.items():
            if batch.record_count():
                batch.close()
                pending.append(await producer.send_batch(batch, topic, partition=p))
        await asyncio.gather(*pending)
    finally:
        await producer.stop()
    return n


# -- processes --------------------------------------------------------------------------------

@dataclass
class Proc:
    """A process the benchmark started, with its log."""

    name: str
    process: subprocess.Popen[bytes]
    log_path: Path
    port: int = 0
    extra: dict[str, object] = field(default_factory=dict)

    @property
    def pid(self) -> int:
        return self.process.pid

    def alive(self) -> bool:
        return self.process.poll() is None

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}",
                                        timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, b""
        except OSError:
            return 0, b""

    def wait_healthy(self, timeout: float = 90.0, path: str = "/healthz") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"{self.name} exited:\n{self.log()[-3000:]}")
            if self.get(path, timeout=1.0)[0] == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy after {timeout:.0f}s:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 30.0) -> None:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(10)


def env_for(bootstrap: str, **extra: str) -> dict[str, str]:
    """A GiftGuard process environment: the outer one minus GiftGuard/Kafka/Slack settings."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GIFTGUARD_", "SQUARE_", "SLACK_", "KAFKA_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=bootstrap, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT),
               GIFTGUARD_PARTITIONS=str(PARTITIONS),
               # (BENCH_LOG_LEVEL=INFO shows the workers' rebalances and recovery)
               GIFTGUARD_LOG_LEVEL=os.environ.get("BENCH_LOG_LEVEL", "WARNING"))
    env.update(extra)
    return env


def start(name: str, argv: list[str], env: dict[str, str], workdir: Path, port: int = 0) -> Proc:
    """Start ``python ARGV`` in its own process group, output to ``workdir/NAME.log``."""
    workdir.mkdir(parents=True, exist_ok=True)
    log_path = workdir / f"{name}.log"
    process = subprocess.Popen([sys.executable, *argv], env=env, cwd=workdir,
                               stdout=open(log_path, "wb"), stderr=subprocess.STDOUT,
                               start_new_session=True)
    return Proc(name, process, log_path, port)


def start_worker(bootstrap: str, workdir: Path, name: str = "worker", **extra: str) -> Proc:
    """``giftguard worker`` on a free web port with its own data directory."""
    port = free_port()
    env = env_for(bootstrap, GIFTGUARD_DATA_DIR=str(workdir / f"{name}-data"), **extra)
    return start(name, ["-m", "streams.cli", "worker", "--web-port", str(port)], env, workdir,
                 port)


# -- measuring ----------------------------------------------------------------------------------

_SAMPLE = re.compile(rb"^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})? ([0-9.eE+-]+|NaN|[+-]Inf)$",
                     re.M)


def scrape(proc: Proc, timeout: float = 5.0) -> dict[str, list[tuple[str, float]]]:
    """A process's ``/metrics`` page: metric name to ``[(labels, value)]``."""
    status, body = proc.get("/metrics", timeout=timeout)
    if status != 200:
        return {}
    out: dict[str, list[tuple[str, float]]] = {}
    for m in _SAMPLE.finditer(body):
        out.setdefault(m.group(1).decode(), []).append(
            ((m.group(2) or b"").decode(), float(m.group(3))))
    return out


def metric_sum(metrics: dict[str, list[tuple[str, float]]], name: str) -> float:
    return sum(v for _, v in metrics.get(name, []))


@dataclass
class Rate:
    """Records counted over a measured interval."""

    records: float
    seconds: float
    cpu_seconds: float = 0.0

    @property
    def eps(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def median_index(values: Sequence[float]) -> int:
    """Where the median of ``values`` is (the lower of the middle two for an even count).

    >>> median_index([1.49, 1.71, 1.62])
    2
    """
    order = sorted(range(len(values)), key=lambda i: values[i])
    return order[(len(order) - 1) // 2]


def measure(count: Callable[[], float], target: float, *, timeout: float,
            alive: Callable[[], bool] = lambda: True,
            pids: Iterable[int] = (), launched: float | None = None) -> Rate:
    """Sample ``count()`` until it reaches ``target``; the rate between first progress and the
    end (see the module docstring). CPU seconds of ``pids`` over the same interval too.
    ``launched``: when the counted processes were started (count 0, no CPU yet), the reference
    if the first sample already sees the whole run."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    first: tuple[float, float, float] | None = None
    # the last sample that saw no progress
    before: tuple[float, float, float] | None = (
        None if launched is None else (launched, 0.0, 0.0))
    last = 0.0
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("a measured process exited")
        now = time.monotonic()
        n = count()
        if first is None:
            sample = (now, n, sum(cpu_seconds(p) for p in pids))
            if n <= 0:
                before = sample
            elif n >= target and before is not None:
                # All of it between two samples (a small run): time it from the sample before,
                # a lower bound of the rate instead of 0 records in 0 s.
                first = before
            else:
                first = sample
        last = n
        if first is not None and n >= target:
            cpu = sum(cpu_seconds(p) for p in pids) - first[2]
            return Rate(n - first[1], now - first[0], cpu)
        time.sleep(POLL)
    raise TimeoutError(f"reached {last:,.0f} of {target:,.0f} records in {timeout:.0f}s")


async def partitions(consumer: object, topic: str) -> list[int]:
    """The partitions of ``topic`` as a started aiokafka consumer sees them (waits for
    metadata)."""
    for _ in range(100):
        parts = consumer.partitions_for_topic(topic)  # type: ignore[attr-defined]
        if parts:
            return sorted(parts)
        await consumer._client.force_metadata_update()  # type: ignore[attr-defined]
        await asyncio.sleep(0.1)
    raise RuntimeError(f"no metadata for {topic}")
