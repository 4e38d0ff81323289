"""``giftguard demo``: the whole product on this machine, with a live view of the alerts.

Starts a Kafka broker, a bridge and a worker; generates a few minutes of realistic Square traffic
with labelled fraud and POSTs it, signed, to the bridge; prints every alert as the worker raises
it; at the end, says which fraud incidents were caught. Ctrl-C stops everything it started.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from pathlib import Path

import orjson
from aiokafka import AIOKafkaConsumer

from detectors.alerts import Alert
from streams import topics
from streams.broker import PROJECT_ROOT, DevBroker, free_port, port_open

DEMO_DIR = PROJECT_ROOT / "var" / "demo"
SIGNATURE_KEY = "giftguard-demo-signature-key"

BOLD, RED, YELLOW, DIM, RESET = "\033[1m", "\033[31m", "\033[33m", "\033[2m", "\033[0m"


def _color(text: str, code: str) -> str:
    return f"{code}{text}{RESET}" if sys.stdout.isatty() else text


def _port(preferred: int) -> int:
    return preferred if not port_open(preferred) else free_port()


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{url} exited; see {log}:\n{log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(url + "/healthz", timeout=1) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"{url} not healthy after {timeout:.0f}s; see {log}")


def format_alert(alert: Alert, locations: dict[str, str]) -> str:
    """One line for a person: level, score, card, place, rules, and the first reason."""
    level = _color(f"{alert.level.upper():8}", RED if alert.level == "high" else YELLOW)
    card = f"••••{alert.gan_last4}" if alert.gan_last4 else alert.card_id[-8:]
    place = locations.get(alert.location_id, alert.location_id)
    related = f" +{len(alert.related_card_ids)} cards" if alert.related_card_ids else ""
    money = f"${alert.amount_at_risk_minor / 100:,.2f}"
    reason = alert.reasons[0] if alert.reasons else ""
    return (f"{level} {alert.score:5.1f}  {card}{related}  {money:>10} at risk  {place}\n"
            f"         {_color(','.join(alert.rules), BOLD)}: {reason}")


async def _watch(bootstrap: str, poster: subprocess.Popen[bytes], locations: dict[str, str],
                 ) -> list[Alert]:
    """Print alerts as they arrive, until the traffic is sent and the stream is quiet."""
    consumer = AIOKafkaConsumer(topics.ALERTS, bootstrap_servers=bootstrap,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    alerts: list[Alert] = []
    quiet_since = None
    try:
        while True:
            batch = await consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for record in records:
                    alert = Alert.from_json(record.value)
                    alerts.append(alert)
                    print(format_alert(alert, locations), flush=True)
            if poster.poll() is None or batch:
                quiet_since = None
            elif quiet_since is None:
                quiet_since = time.monotonic()
            elif time.monotonic() - quiet_since > 8:
                return alerts
    finally:
        await consumer.stop()


def _summary(alerts: list[Alert], sim_dir: Path) -> None:
    """Which labelled incidents in the traffic were caught, and by which rules."""
    incidents: dict[str, tuple[str, set[str]]] = {}
    for line in (sim_dir / "labels.jsonl").read_bytes().splitlines():
        label = orjson.loads(line)
        if label.get("is_fraud") and label.get("incident_id"):
            pattern, cards = incidents.setdefault(label["incident_id"], (label["pattern"], set()))
            cards.add(label["card_id"])
    flagged = {c for a in alerts for c in (a.card_id, *a.related_card_ids)}
    by_pattern: dict[str, list[bool]] = {}
    for pattern, cards in incidents.values():
        by_pattern.setdefault(pattern, []).append(bool(cards & flagged))
    print(_color("\nWhat the demo traffic held, and what GiftGuard caught:", BOLD))
    for pattern, caught in sorted(by_pattern.items()):
        print(f"  {pattern:22} {sum(caught):3} of {len(caught):3} incidents alerted")
    rules = Counter(rule for a in alerts for rule in a.rules)
    print("  alerts by rule: " + ", ".join(f"{r} {n}" for r, n in rules.most_common()))


def run(minutes: float = 3.0, rate: float = 40.0) -> int:
    """Run the demo in the foreground; Ctrl-C stops it early."""
    shutil.rmtree(DEMO_DIR, ignore_errors=True)
    DEMO_DIR.mkdir(parents=True)
    events = max(500, int(minutes * 60 * rate))
    traffic = ["--events", str(events), "--days", "14", "--fraud-rate", "0.03",
               "--seed", str(int(time.time()) % 10_000)]
    broker = DevBroker(port=_port(9092), data_dir=DEMO_DIR / "kafka")
    children: list[subprocess.Popen[bytes]] = []
    python = [sys.executable, "-m", "streams.cli"]
    try:
        print(f"Starting Apache Kafka (KRaft) on 127.0.0.1:{broker.port} ...", flush=True)
        bootstrap = broker.start()
        sim_dir = DEMO_DIR / "sim"
        subprocess.run([*python, "simulate", *traffic, "--out", str(sim_dir), "--quiet"],
                       check=True, cwd=PROJECT_ROOT)
        bridge_port, worker_port = _port(8080), _port(6066)
        url = f"http://127.0.0.1:{bridge_port}/webhooks/square"
        env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
               "SQUARE_WEBHOOK_SIGNATURE_KEY": SIGNATURE_KEY, "SQUARE_WEBHOOK_URL": url,
               "GIFTGUARD_LOCATIONS": str(sim_dir / "locations.json"),
               "GIFTGUARD_DATA_DIR": str(DEMO_DIR / "worker"), "PYTHONUNBUFFERED": "1"}
        for name, args, port in (("bridge", ["bridge", "--port", str(bridge_port)], bridge_port),
                                 ("worker", ["worker", "--web-port", str(worker_port)],
                                  worker_port)):
            log = DEMO_DIR / f"{name}.log"
            proc = subprocess.Popen([*python, *args], env=env, cwd=PROJECT_ROOT,
                                    stdout=open(log, "wb"), stderr=subprocess.STDOUT)
            children.append(proc)
            print(f"Starting the {name} on 127.0.0.1:{port} (log {log.relative_to(PROJECT_ROOT)})",
                  flush=True)
            _wait_healthy(f"http://127.0.0.1:{port}", proc, log, timeout=120)
        print(f"Sending {events:,} signed Square webhooks at {rate:g}/s to {url}\n"
              f"{_color('Alerts appear below as the worker raises them:', BOLD)}", flush=True)
        poster = subprocess.Popen(
            [*python, "simulate", *traffic, "--post", url, "--rate", str(rate), "--quiet"],
            env=env, cwd=PROJECT_ROOT)
        children.append(poster)
        locations = {loc["location_id"]: loc["name"]
                     for loc in orjson.loads((sim_dir / "locations.json").read_bytes())}
        alerts = asyncio.run(_watch(bootstrap, poster, locations))
        _summary(alerts, sim_dir)
        print(f"\nMetrics: http://127.0.0.1:{worker_port}/metrics and "
              f"http://127.0.0.1:{bridge_port}/metrics (while running)")
        return 0
    except KeyboardInterrupt:
        print("\nStopping ...")
        return 130
    finally:
        for proc in reversed(children):
            if proc.poll() is None:
                proc.terminate()
        for proc in children:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        broker.stop()
        print("Stopped the worker, the bridge and the broker.", flush=True)
