"""A real Prometheus scraping a real bridge and worker, with GiftGuard's rules loaded.

The bridge and the worker run as ``python -m streams.cli`` subprocesses against the session's
Kafka broker; Prometheus scrapes both every second. Signed Square webhooks go in, and
Prometheus' HTTP API must show every one of them accepted by the bridge, scored by the worker,
and an alert for the card drained minutes after activation in another city.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError
from prometheus_client.parser import text_string_to_metric_families

from streams import topics
from streams.broker import DevBroker, free_port
from streams.signatures import SQUARE_SIGNATURE_HEADER, square_signature
from tests.kafka_helpers import end_offsets
from tests.square_envelopes import envelope

PROMETHEUS = shutil.which("prometheus")
pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(PROMETHEUS is None, reason="prometheus is not installed "
                       "(`make prometheus` installs it: apt-get install prometheus)"),
]

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
KEY = "live-test-signature-key"
URL = "https://giftguard.example.com/webhooks/square"
GROUP = "giftguard"  # the Faust app id (streams/app.py) is the consumer group
LOCATIONS = [
    {"location_id": "SEA-1", "name": "Seattle Pike St", "lat": 47.61, "lon": -122.34,
     "timezone": "America/Los_Angeles"},
    {"location_id": "MIA-1", "name": "Miami Brickell", "lat": 25.76, "lon": -80.19,
     "timezone": "America/New_York"},
]


# -- processes ---------------------------------------------------------------------------------

@dataclass
class Process:
    """A subprocess whose output goes to a log file (read on failure)."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def start(self) -> Process:
        with self.log.open("wb") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out,
                                         stderr=subprocess.STDOUT, cwd=self.log.parent,
                                         start_new_session=True)
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)


def wait_for(what: str, check: Callable[[], Any], timeout: float,
             *processes: Process, interval: float = 0.25) -> Any:
    """Call ``check`` until it returns something truthy; fail with the processes' output."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        for p in processes:
            if not p.alive():
                pytest.fail(f"{p.name} exited while waiting for {what}:\n{p.output()}")
        try:
            last = check()
        except (OSError, urllib.error.URLError) as exc:
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(interval)
    logs = "\n".join(f"--- {p.name}:\n{p.output()}" for p in processes)
    pytest.fail(f"timed out after {timeout:.0f}s waiting for {what} (last: {last!r})\n{logs}")


def http_status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


# -- the stack ---------------------------------------------------------------------------------

@dataclass
class Stack:
    bootstrap: str
    env: dict[str, str]
    workdir: Path
    bridge_port: int
    worker_port: int
    prometheus_port: int
    processes: list[Process] = field(default_factory=list)
    sent: int = 0

    def spawn(self, name: str, *args: str) -> Process:
        p = Process(name, list(args), self.env, self.workdir / f"{name}.log").start()
        self.processes.append(p)
        return p

    def query(self, promql: str) -> float | None:
        """An instant query's single value (None when the result is empty)."""
        url = (f"http://127.0.0.1:{self.prometheus_port}/api/v1/query?"
               + urllib.parse.urlencode({"query": promql}))
        with urllib.request.urlopen(url, timeout=5) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result = body["data"]["result"]
        return float(result[0]["value"][1]) if result else None

    def api(self, path: str) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.prometheus_port}{path}",
                                    timeout=5) as response:
            return json.load(response)

    def post(self, body: dict[str, Any]) -> int:
        raw = json.dumps(body).encode()
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.bridge_port}/webhooks/square", data=raw, method="POST",
            headers={SQUARE_SIGNATURE_HEADER: square_signature(KEY, URL, raw),
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=15) as response:
            self.sent += 1
            return response.status


def prometheus_config(bridge_port: int, worker_port: int) -> dict[str, Any]:
    return {
        "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(RULES)],
        "scrape_configs": [
            {"job_name": "giftguard-bridge",
             "static_configs": [{"targets": [f"127.0.0.1:{bridge_port}"]}]},
            {"job_name": "giftguard-worker",
             "static_configs": [{"targets": [f"127.0.0.1:{worker_port}"]}]},
        ],
    }


@pytest.fixture(scope="module")
def stack(kafka: DevBroker, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    workdir = tmp_path_factory.mktemp("prometheus-live")
    (workdir / "locations.json").write_text(json.dumps(LOCATIONS))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GIFTGUARD_", "SQUARE_", "SLACK_", "KAFKA_"))}
    env.update({
        "PYTHONPATH": str(ROOT),
        "KAFKA_BOOTSTRAP_SERVERS": kafka.bootstrap,
        "SQUARE_WEBHOOK_SIGNATURE_KEY": KEY,
        "SQUARE_WEBHOOK_URL": URL,
        "GIFTGUARD_STORE": "memory://",
        "GIFTGUARD_DATA_DIR": str(workdir / "worker"),
        "GIFTGUARD_LOCATIONS": str(workdir / "locations.json"),
    })
    s = Stack(kafka.bootstrap, env, workdir, free_port(), free_port(), free_port())
    try:
        bridge = s.spawn("bridge", sys.executable, "-m", "streams.cli", "bridge",
                         "--port", str(s.bridge_port))
        config = workdir / "prometheus.yml"
        config.write_text(yaml.safe_dump(prometheus_config(s.bridge_port, s.worker_port)))
        prometheus = s.spawn(
            "prometheus", str(PROMETHEUS), f"--config.file={config}",
            f"--storage.tsdb.path={workdir / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{s.prometheus_port}")
        wait_for("the bridge's /healthz", lambda: http_status(
            f"http://127.0.0.1:{s.bridge_port}/healthz") == 200, 30, bridge)
        wait_for("Prometheus ready", lambda: http_status(
            f"http://127.0.0.1:{s.prometheus_port}/-/ready") == 200, 30, prometheus)
        yield s
    finally:
        for p in reversed(s.processes):
            p.stop()


# -- traffic -----------------------------------------------------------------------------------

def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def everyday_purchases(cards: int) -> list[dict[str, Any]]:
    """Cards bought and partly spent in the same Seattle store: no alert expected."""
    run, start = uuid.uuid4().hex[:8], datetime.now(UTC) - timedelta(minutes=30)
    out = []
    for i in range(cards):
        card = f"gftc:live-{run}-{i}"
        out.append(envelope("ACTIVATE", activity_id=f"act-{run}-{i}", card_id=card,
                            location_id="SEA-1", amount=5000, balance=5000,
                            created_at=iso(start + timedelta(minutes=i))))
        out.append(envelope("REDEEM", activity_id=f"red-{run}-{i}", card_id=card,
                            location_id="SEA-1", amount=1200, balance=3800, status="COMPLETED",
                            created_at=iso(start + timedelta(minutes=i + 3))))
    return out


def rapid_drain() -> list[dict[str, Any]]:
    """$200 activated in Seattle, $190 redeemed in Miami seven minutes later."""
    run, start = uuid.uuid4().hex[:8], datetime.now(UTC) - timedelta(minutes=10)
    card = f"gftc:drain-{run}"
    return [
        envelope("ACTIVATE", activity_id=f"act-{run}", card_id=card, location_id="SEA-1",
                 amount=20000, balance=20000, created_at=iso(start)),
        envelope("REDEEM", activity_id=f"red-{run}", card_id=card, location_id="MIA-1",
                 amount=19000, balance=1000, status="COMPLETED",
                 created_at=iso(start + timedelta(minutes=7))),
    ]


# -- the worker --------------------------------------------------------------------------------

def worker_counters(port: int) -> tuple[float, float]:
    """(events, alerts) as the worker's own /metrics says now."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as response:
        text = response.read().decode()
    totals = {"giftguard_events_total": 0.0, "giftguard_alerts_total": 0.0}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in totals:
                totals[sample.name] += sample.value
    return totals["giftguard_events_total"], totals["giftguard_alerts_total"]


async def caught_up(bootstrap: str) -> bool:
    """True when the worker's group has committed every record of giftcard.transactions."""
    ends = await end_offsets(bootstrap, topics.TRANSACTIONS)
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(GROUP)
    except KafkaError:  # e.g. the group coordinator is still being elected
        return False
    finally:
        await admin.close()
    return all(end == 0 or (tp in committed and committed[tp].offset >= end)
               for tp, end in ends.items())


def settled(stack: Stack, worker: Process) -> tuple[float, float]:
    """Wait until the worker has worked through what earlier tests left on the topic."""
    wait_for("the worker to commit the backlog of giftcard.transactions",
             lambda: asyncio.run(caught_up(stack.bootstrap)), 45, worker, interval=1.0)
    previous = None
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:  # and its counters stop moving
        now = worker_counters(stack.worker_port)
        if now == previous:
            return now
        previous = now
        time.sleep(1.0)
    pytest.fail(f"worker counters still moving: {previous}\n{worker.output()}")


# -- tests -------------------------------------------------------------------------------------

def test_prometheus_loads_the_rules_and_counts_the_bridge_requests(stack: Stack) -> None:
    webhooks = everyday_purchases(5)
    assert [stack.post(body) for body in webhooks] == [200] * len(webhooks)

    prometheus = stack.processes[1]
    wait_for("Prometheus to count every accepted webhook",
             lambda: stack.query('sum(giftguard_bridge_requests_total{status="200"})')
             == stack.sent, 30, prometheus)
    assert stack.query('up{job="giftguard-bridge"}') == 1
    assert stack.query("giftguard_bridge_request_duration_seconds_count") == stack.sent

    groups = stack.api("/api/v1/rules")["data"]["groups"]
    assert [g["name"] for g in groups] == ["giftguard"]
    rules = groups[0]["rules"]
    assert len(rules) >= 15
    bad = [(r["name"], r.get("lastError")) for r in rules if r["health"] == "err"]
    assert not bad, bad


def test_prometheus_sees_every_event_scored_and_the_drain_alerted(stack: Stack) -> None:
    worker = stack.spawn("worker", sys.executable, "-m", "streams.cli", "worker",
                         "--web-port", str(stack.worker_port))
    wait_for("the worker's /healthz", lambda: http_status(
        f"http://127.0.0.1:{stack.worker_port}/healthz") == 200, 60, worker, interval=0.5)
    events_before, alerts_before = settled(stack, worker)

    webhooks = everyday_purchases(4) + rapid_drain()
    assert [stack.post(body) for body in webhooks] == [200] * len(webhooks)

    wait_for("Prometheus to see every webhook accepted and every event scored",
             lambda: (stack.query('sum(giftguard_bridge_requests_total{status="200"})'),
                      stack.query("sum(giftguard_events_total)"))
             == (stack.sent, events_before + len(webhooks)), 45, worker, interval=0.5)
    alerts = wait_for("an alert for the drained card",
                      lambda: (stack.query("sum(giftguard_alerts_total)") or 0) > alerts_before
                      and stack.query("sum(giftguard_alerts_total)"), 20, worker)
    assert alerts > alerts_before
    assert stack.query('sum(giftguard_alert_rules_total{rule="rapid_drain"})')
    assert stack.query('up{job="giftguard-worker"}') == 1
    assert (stack.query("sum(giftguard_receipt_to_decision_seconds_count)") or 0) >= len(webhooks)
