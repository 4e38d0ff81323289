"""GiftGuard processes for integration tests: a bridge and workers as real subprocesses.

Each is started with ``python -m streams.cli``, on loopback, with a bounded start-up wait, and
its output captured to a log file the test can show when something fails.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from streams.broker import free_port
from tests.fakes.slack_api import CHANNEL_NAME, TOKEN

ROOT = Path(__file__).resolve().parent.parent
SIGNATURE_KEY = "integration-signature-key"


@dataclass
class Service:
    """A running GiftGuard process and where it answers."""

    name: str
    port: int
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(repr=False, default_factory=dict)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        """What the process printed so far."""
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def get(self, path: str, timeout: float = 5.0) -> tuple[int, bytes]:
        """GET a path; (status, body); status 0 when nothing answers."""
        try:
            with urllib.request.urlopen(self.url + path, timeout=timeout) as resp:
                return resp.status, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()
        except OSError:
            return 0, b""

    def wait_healthy(self, timeout: float = 60.0) -> None:
        """Block until ``/healthz`` answers 200; raise with the process log otherwise."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.process.returncode}:\n{self.log()}")
            if self.get("/healthz", timeout=1.0)[0] == 200:
                return
            time.sleep(0.2)
        raise RuntimeError(f"{self.name} not healthy after {timeout:.0f}s:\n{self.log()[-3000:]}")

    def stop(self, timeout: float = 20.0) -> None:
        """SIGTERM, then SIGKILL if it does not exit in time."""
        self.dump_tasks()
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def dump_tasks(self) -> None:
        """With ``GIFTGUARD_TEST_DUMP_TASKS`` set: have a worker write every thread's and asyncio
        task's stack to its log (mode's SIGUSR1 handler), to see where it waits. (A bridge has no
        such handler: SIGUSR1 would end it.)"""
        if (os.environ.get("GIFTGUARD_TEST_DUMP_TASKS") and self.name.startswith("worker")
                and self.process.poll() is None):
            self.process.send_signal(signal.SIGUSR1)
            time.sleep(1.0)

    def kill(self) -> None:
        """SIGKILL at once, as a crash would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)


def base_env(bootstrap: str, **extra: str) -> dict[str, str]:
    """The environment of a GiftGuard process: the outer one minus GiftGuard/Square/Slack
    settings, plus the test's."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("GIFTGUARD_", "SQUARE_", "SLACK_", "KAFKA_"))}
    env.update(KAFKA_BOOTSTRAP_SERVERS=bootstrap, PYTHONUNBUFFERED="1",
               PYTHONPATH=str(ROOT), GIFTGUARD_PARTITIONS="4")
    if os.environ.get("GIFTGUARD_TEST_LOG_LEVEL"):  # e.g. INFO, to see Faust's recovery
        env["GIFTGUARD_LOG_LEVEL"] = os.environ["GIFTGUARD_TEST_LOG_LEVEL"]
    env.update(extra)
    return env


def fakes_env(*, square: Any = None, slack: Any = None) -> dict[str, str]:
    """The settings that point a worker at the local fakes (tests/fakes): Square's gift card
    API (a ``FakeSquare``) and Slack's Web API (a ``FakeSlackApi``, its test token and channel)."""
    env: dict[str, str] = {}
    if square is not None:
        env.update(SQUARE_ACCESS_TOKEN=square.access_token, SQUARE_BASE_URL=square.base_url)
    if slack is not None:
        env.update(SLACK_BOT_TOKEN=TOKEN, SLACK_CHANNEL=CHANNEL_NAME, SLACK_API_URL=slack.base_url)
    return env


def start(name: str, args: list[str], env: dict[str, str], log_dir: Path, port: int,
          module: str = "streams.cli") -> Service:
    """Start ``python -m MODULE ARGS`` (the ``giftguard`` command) in its own process group."""
    log_path = log_dir / f"{name}.log"
    process = subprocess.Popen(
        [sys.executable, "-m", module, *args], env=env, cwd=log_dir,
        stdout=open(log_path, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
    return Service(name, port, process, log_path, env)


def start_bridge(bootstrap: str, log_dir: Path, notification_url: str | None = None,
                 **extra: str) -> Service:
    """A bridge on a free port, with a known signature key."""
    port = free_port()
    url = notification_url or f"http://127.0.0.1:{port}/webhooks/square"
    env = base_env(bootstrap, SQUARE_WEBHOOK_SIGNATURE_KEY=SIGNATURE_KEY,
                   SQUARE_WEBHOOK_URL=url, **extra)
    return start("bridge", ["bridge", "--port", str(port)], env, log_dir, port)


def start_worker(bootstrap: str, log_dir: Path, name: str = "worker",
                 module: str = "streams.cli", **extra: str) -> Service:
    """A worker on a free web port with its own data directory (RocksDB store, the default);
    ``module`` runs it through a test wrapper (e.g. ``tests.fakes.lossy_worker``)."""
    port = free_port()
    env = base_env(bootstrap, GIFTGUARD_DATA_DIR=str(log_dir / f"{name}-data"), **extra)
    return start(name, ["worker", "--web-port", str(port)], env, log_dir, port, module)


def metric_sum(text: str, name: str, **labels: str) -> float:
    """Prometheus text: the sum of the samples of ``name`` whose labels include ``labels``."""
    total = 0.0
    for line in text.splitlines():
        m = re.match(rf"^{name}(\{{[^}}]*\}})? ([0-9.e+-]+)$", line)
        if m and all(f'{k}="{v}"' in (m.group(1) or "") for k, v in labels.items()):
            total += float(m.group(2))
    return total
