"""A single-node Apache Kafka (KRaft) on 127.0.0.1, for development, tests and the demo.

The server jars come from Maven Central through ``deploy/kafka/pom.xml`` (``make jars``). The
broker formats its data directory once, starts in the foreground and reports its bootstrap
address when it accepts connections.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent
JARS_DIR = PROJECT_ROOT / "deploy" / "kafka" / "lib"
DEFAULT_DATA_DIR = PROJECT_ROOT / "var" / "kafka"

_LOG4J = """\
Configuration:
  Appenders:
    File:
      name: file
      fileName: "{log}"
      PatternLayout:
        pattern: "[%d] %p %m (%c)%n"
  Loggers:
    Root:
      level: WARN
      AppenderRef:
        - ref: file
"""


class BrokerError(RuntimeError):
    """The development broker could not be set up or did not start."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """True when something accepts TCP connections on ``host:port``."""
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex((host, port)) == 0


def classpath() -> str:
    """The broker's Java classpath; raise :class:`BrokerError` when the jars are not fetched."""
    jars = sorted(JARS_DIR.glob("*.jar"))
    if not any(j.name.startswith("kafka_2.13-") for j in jars):
        raise BrokerError(f"Kafka jars not found in {JARS_DIR}: run `make jars` first")
    return os.pathsep.join(str(j) for j in jars)


def server_properties(port: int, controller_port: int, data_dir: Path,
                      group_join_delay_ms: int = 0) -> str:
    """The broker's configuration: one node that is both broker and controller.

    ``group_join_delay_ms``: how long a new consumer group waits for more members before its
    first assignment (Kafka's ``group.initial.rebalance.delay.ms``, 3,000 by default).
    """
    return "\n".join([
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller_port}",
        f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}",
        f"advertised.listeners=PLAINTEXT://127.0.0.1:{port}",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=PLAINTEXT",
        "listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        f"log.dirs={data_dir / 'logs'}",
        "num.partitions=8",
        "offsets.topic.replication.factor=1",
        "offsets.topic.num.partitions=8",
        "transaction.state.log.replication.factor=1",
        "transaction.state.log.min.isr=1",
        "share.coordinator.state.topic.replication.factor=1",
        "share.coordinator.state.topic.min.isr=1",
        # 0 by default: a test's workers join a group at once instead of waiting 3 s for others.
        f"group.initial.rebalance.delay.ms={group_join_delay_ms}",
        "auto.create.topics.enable=true",
        "log.retention.hours=168",
        "",
    ])


@dataclass
class DevBroker:
    """A Kafka broker process on 127.0.0.1 with its data under ``data_dir``."""

    port: int = 9092
    data_dir: Path = DEFAULT_DATA_DIR
    heap: str = "512m"
    controller_port: int = 0
    #: ``group.initial.rebalance.delay.ms`` (:func:`server_properties`)
    group_join_delay_ms: int = 0
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    @property
    def bootstrap(self) -> str:
        """The bootstrap address clients connect to."""
        return f"127.0.0.1:{self.port}"

    def _java(self) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise BrokerError("java not found on PATH: the development broker needs Java 17+")
        log_config = self.data_dir / "log4j2.yaml"
        return [java, f"-Xmx{self.heap}", f"-Xms{self.heap}", "-XX:+UseG1GC",
                f"-Dlog4j2.configurationFile={log_config}", "-cp", classpath()]

    def prepare(self) -> Path:
        """Write the configuration and format the storage (once); return the properties path."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        props = self.data_dir / "server.properties"
        cport_file = self.data_dir / "controller.port"
        if not self.controller_port:
            # The controller port is part of the formatted quorum; keep it across restarts.
            if cport_file.exists():
                self.controller_port = int(cport_file.read_text())
            else:
                self.controller_port = free_port()
                cport_file.write_text(str(self.controller_port))
        props.write_text(server_properties(self.port, self.controller_port, self.data_dir,
                                           self.group_join_delay_ms))
        (self.data_dir / "log4j2.yaml").write_text(_LOG4J.format(log=self.data_dir / "broker.log"))
        if not (self.data_dir / "logs" / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            result = subprocess.run(
                [*self._java(), "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}",
                 "-c", str(props)], capture_output=True, text=True, timeout=120)
            if result.returncode != 0:
                raise BrokerError(f"formatting {self.data_dir} failed: "
                                  f"{(result.stderr or result.stdout).strip()[-500:]}")
        return props

    def start(self, timeout: float = 90.0) -> str:
        """Start the broker in the background; return the bootstrap address once it is ready."""
        if port_open(self.port):
            raise BrokerError(f"port {self.port} on 127.0.0.1 is already in use")
        props = self.prepare()
        self.process = subprocess.Popen(
            [*self._java(), "kafka.Kafka", str(props)],
            stdout=subprocess.DEVNULL, stderr=open(self.data_dir / "broker.err", "ab"),
            start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BrokerError(f"broker exited with {self.process.returncode}; see "
                                  f"{self.data_dir / 'broker.log'}")
            if port_open(self.port) and self._metadata_ready():
                return self.bootstrap
            time.sleep(0.2)
        self.stop()
        raise BrokerError(f"broker not ready on {self.bootstrap} after {timeout:.0f}s")

    def _metadata_ready(self) -> bool:
        """True once the broker answers a metadata request (it may accept TCP a bit earlier)."""
        import asyncio

        from aiokafka.admin import AIOKafkaAdminClient

        async def probe() -> bool:
            admin = AIOKafkaAdminClient(bootstrap_servers=self.bootstrap, request_timeout_ms=3000)
            try:
                await admin.start()
                await admin.list_topics()
                return True
            except Exception:
                return False
            finally:
                await admin.close()

        return asyncio.run(probe())

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after ``timeout``)."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def kill(self) -> None:
        """Kill the broker at once (SIGKILL), as a crash would."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


def run_foreground(port: int, data_dir: Path) -> int:
    """``giftguard broker``: run until Ctrl-C or SIGTERM, then stop the broker cleanly."""
    broker = DevBroker(port=port, data_dir=data_dir)
    try:
        address = broker.start()
    except BrokerError as exc:
        print(f"giftguard broker: {exc}", file=sys.stderr)
        return 1
    print(f"Kafka broker ready: bootstrap {address} (data in {data_dir})", flush=True)
    stopping = False

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    while not stopping and broker.process is not None and broker.process.poll() is None:
        time.sleep(0.2)
    exited = broker.process is not None and broker.process.poll() is not None
    broker.stop()
    print("Kafka broker stopped", flush=True)
    return 1 if exited and not stopping else 0
