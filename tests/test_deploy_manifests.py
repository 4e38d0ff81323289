"""docker-compose, Kubernetes and the Dockerfile, checked by structure (no Docker engine needed).

Ports agree with the command line's defaults and the Prometheus scrape config, every image is
pinned, every environment variable is a real setting, every file a manifest mounts exists.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from streams.cli import build_parser
from streams.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = DEPLOY / "compose" / "docker-compose.yml"
K8S = DEPLOY / "k8s"

SETTINGS = {name.upper() for name in Settings.model_fields}
BRIDGE_PORT = build_parser().parse_args(["bridge"]).port
WORKER_PORT = build_parser().parse_args(["worker"]).web_port
KAFKA_PORT = build_parser().parse_args(["broker"]).port
PINNED = re.compile(r"^[\w.\-/]+(:[\w][\w.\-]*)?(@sha256:[0-9a-f]{64})?$")


def assert_pinned(image: str) -> None:
    assert PINNED.match(image), image
    tag = image.split("@")[0].rsplit("/", 1)[-1].partition(":")[2]
    assert "@sha256:" in image or (tag and tag != "latest"), f"{image} is not pinned"


def option(args: list[str], name: str) -> int:
    return int(args[args.index(name) + 1])


def test_the_code_defaults_are_the_documented_ports() -> None:
    assert (BRIDGE_PORT, WORKER_PORT, KAFKA_PORT) == (8080, 6066, 9092)


# -- docker compose ------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text())


def giftguard_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items()
            if s["image"].startswith("giftguard:")}


def published(service: dict[str, Any]) -> set[int]:
    return {int(str(p).rsplit(":", 1)[-1]) for p in service.get("ports", [])}


def test_compose_has_the_whole_stack_with_pinned_images(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"kafka", "bridge", "worker-1", "worker-2", "prometheus", "grafana"}
    for service in services.values():
        assert_pinned(service["image"])
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["prometheus"]["image"].startswith("prom/prometheus:")
    assert services["grafana"]["image"].startswith("grafana/grafana:")
    build = services["bridge"]["build"]
    assert (COMPOSE_FILE.parent / build["context"] / build["dockerfile"]).resolve() == \
        DEPLOY / "Dockerfile"


def test_compose_kafka_is_kraft_on_the_default_port(compose: dict[str, Any]) -> None:
    env = compose["services"]["kafka"]["environment"]
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert f"PLAINTEXT://:{KAFKA_PORT}" in env["KAFKA_LISTENERS"]
    assert f"PLAINTEXT://kafka:{KAFKA_PORT}" in env["KAFKA_ADVERTISED_LISTENERS"]
    assert str(env["KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS"]) == "0"
    for service in giftguard_services(compose).values():
        assert service["environment"]["KAFKA_BOOTSTRAP_SERVERS"] == f"kafka:{KAFKA_PORT}"
        assert service["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_compose_ports_agree_with_the_code_and_the_scrape_config(compose: dict[str, Any]) -> None:
    services = compose["services"]
    bridge = services["bridge"]
    assert bridge["command"][0] == "bridge"
    assert option(bridge["command"], "--port") == BRIDGE_PORT
    assert published(bridge) == {BRIDGE_PORT}
    assert f":{BRIDGE_PORT}/healthz" in " ".join(bridge["healthcheck"]["test"])

    worker_ports = {}
    for name in ("worker-1", "worker-2"):
        worker = services[name]
        assert worker["command"][0] == "worker"
        port = option(worker["command"], "--web-port")
        assert published(worker) == {port}
        assert f":{port}/healthz" in " ".join(worker["healthcheck"]["test"])
        worker_ports[name] = port
    assert worker_ports["worker-1"] == WORKER_PORT
    assert len(set(worker_ports.values())) == 2, "workers on one host need distinct web ports"

    scrape = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {t for job in scrape["scrape_configs"] for sc in job["static_configs"]
               for t in sc["targets"]}
    assert targets == {f"bridge:{BRIDGE_PORT}"} | {f"{n}:{p}" for n, p in worker_ports.items()}


def test_compose_env_names_are_settings(compose: dict[str, Any]) -> None:
    for name, service in giftguard_services(compose).items():
        unknown = set(service["environment"]) - SETTINGS
        assert not unknown, f"{name}: {unknown} are not settings in streams/settings.py"


def test_compose_mounts_exist_where_prometheus_and_grafana_look(compose: dict[str, Any]) -> None:
    mounts: dict[str, str] = {}
    for service in ("prometheus", "grafana"):
        for volume in compose["services"][service]["volumes"]:
            source, target = volume.split(":")[:2]
            if source.startswith("."):
                assert (COMPOSE_FILE.parent / source).exists(), source
                mounts[target] = source
    prometheus = compose["services"]["prometheus"]
    config = next(a.split("=", 1)[1] for a in prometheus["command"]
                  if a.startswith("--config.file="))
    assert config in mounts
    rules = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())["rule_files"]
    for rule_file in rules:
        assert str(Path(config).parent / rule_file) in mounts
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/giftguard.yml").read_text())["providers"][0]
    assert provider["options"]["path"] in mounts
    assert "/etc/grafana/provisioning/datasources" in mounts
    assert "/etc/grafana/provisioning/dashboards" in mounts


# -- Dockerfile ----------------------------------------------------------------------------------

def test_dockerfile_is_pinned_installs_the_package_and_runs_giftguard() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    (base,) = re.findall(r"^FROM\s+(\S+)", text, flags=re.MULTILINE)
    assert_pinned(base)
    assert base.startswith("python:3.11")
    assert re.search(r"^RUN pip install \.", text, flags=re.MULTILINE)
    assert 'ENTRYPOINT ["giftguard"]' in text
    for source in re.findall(r"^COPY\s+(.+?)\s+\S+$", text, flags=re.MULTILINE):
        for path in source.split():
            if path != "README.md":  # written by the lead with the top-level docs
                assert (ROOT / path).exists(), path
    assert {str(BRIDGE_PORT), str(WORKER_PORT)} <= set(re.findall(r"EXPOSE (.+)", text)[0].split())
    assert "USER " in text


# -- Kubernetes ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def k8s() -> dict[tuple[str, str], dict[str, Any]]:
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc["apiVersion"] and doc["metadata"]["name"], path
            objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def test_k8s_objects(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    assert set(k8s) == {("Namespace", "giftguard"), ("ConfigMap", "giftguard-settings"),
                        ("Secret", "giftguard-secrets"), ("Deployment", "giftguard-bridge"),
                        ("Service", "giftguard-bridge"), ("StatefulSet", "giftguard-worker"),
                        ("Service", "giftguard-worker")}
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for resource in kustomization["resources"]:
        assert (K8S / resource).is_file(), resource
    assert "secret.template.yaml" not in kustomization["resources"]


def containers(workload: dict[str, Any]) -> list[dict[str, Any]]:
    return workload["spec"]["template"]["spec"]["containers"]


def test_k8s_images_pinned_and_env_names_are_settings(
        k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    config = k8s[("ConfigMap", "giftguard-settings")]["data"]
    secret = k8s[("Secret", "giftguard-secrets")]["stringData"]
    assert not set(config) - SETTINGS, set(config) - SETTINGS
    assert not set(secret) - SETTINGS, set(secret) - SETTINGS
    assert all(value.startswith("<") for value in secret.values()), "template holds no secrets"
    for kind, name in (("Deployment", "giftguard-bridge"), ("StatefulSet", "giftguard-worker")):
        for container in containers(k8s[(kind, name)]):
            assert_pinned(container["image"])
            assert not {e["name"] for e in container.get("env", [])} - SETTINGS
            refs = {next(iter(ref.values()))["name"] for ref in container["envFrom"]}
            assert refs == {"giftguard-settings", "giftguard-secrets"}


def test_k8s_configmap_values_are_valid_settings(
        k8s: dict[tuple[str, str], dict[str, Any]], clean_env: Path) -> None:
    config = k8s[("ConfigMap", "giftguard-settings")]["data"]
    settings = load_settings(**{k.lower(): v for k, v in config.items()})
    assert settings.giftguard_partitions == int(config["GIFTGUARD_PARTITIONS"])


def probes_on(container: dict[str, Any], port: int) -> None:
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert (get["path"], get["port"]) == ("/healthz", port), probe


def scrape_annotations(workload: dict[str, Any], port: int) -> None:
    annotations = workload["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {"prometheus.io/scrape": "true", "prometheus.io/port": str(port),
                           "prometheus.io/path": "/metrics"}


def service_matches(service: dict[str, Any], workload: dict[str, Any], port: int) -> None:
    labels = workload["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert workload["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert [p["targetPort"] for p in service["spec"]["ports"]] == [port]


def test_k8s_bridge(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    bridge = k8s[("Deployment", "giftguard-bridge")]
    (container,) = containers(bridge)
    assert container["args"][0] == "bridge"
    assert option(container["args"], "--port") == BRIDGE_PORT
    assert container["args"][container["args"].index("--host") + 1] == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"]] == [BRIDGE_PORT]
    probes_on(container, BRIDGE_PORT)
    scrape_annotations(bridge, BRIDGE_PORT)
    service_matches(k8s[("Service", "giftguard-bridge")], bridge, BRIDGE_PORT)


def test_k8s_workers(k8s: dict[tuple[str, str], dict[str, Any]]) -> None:
    workers = k8s[("StatefulSet", "giftguard-worker")]
    config = k8s[("ConfigMap", "giftguard-settings")]["data"]
    assert 1 <= workers["spec"]["replicas"] <= int(config["GIFTGUARD_PARTITIONS"])
    (container,) = containers(workers)
    assert container["args"][0] == "worker"
    assert option(container["args"], "--web-port") == WORKER_PORT
    assert container["args"][container["args"].index("--host") + 1] == "0.0.0.0"
    assert [p["containerPort"] for p in container["ports"]] == [WORKER_PORT]
    probes_on(container, WORKER_PORT)
    scrape_annotations(workers, WORKER_PORT)
    # RocksDB tables live on a persistent volume at GIFTGUARD_DATA_DIR.
    (claim,) = workers["spec"]["volumeClaimTemplates"]
    (mount,) = container["volumeMounts"]
    assert mount["name"] == claim["metadata"]["name"]
    assert mount["mountPath"] == config["GIFTGUARD_DATA_DIR"]
    assert config["GIFTGUARD_STORE"] == "rocksdb://"
    headless = k8s[("Service", workers["spec"]["serviceName"])]
    assert headless["spec"]["clusterIP"] == "None"
    service_matches(headless, workers, WORKER_PORT)
