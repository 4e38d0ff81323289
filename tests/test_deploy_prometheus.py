"""Prometheus rules and scrape config: promtool checks, promtool unit tests, metric names."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.test_deploy_metrics import exported_metric_names, promql_metric_names

PROMETHEUS = Path(__file__).resolve().parents[1] / "deploy" / "prometheus"
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None,
    reason="promtool is not installed (`make prometheus` installs it: apt-get install prometheus)")

#: Series Prometheus itself writes for every target.
PROMETHEUS_SERIES = {"up", "scrape_duration_seconds", "scrape_samples_scraped"}


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    result = subprocess.run([PROMTOOL, *args], capture_output=True, text=True, timeout=60,
                            cwd=PROMETHEUS)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


@needs_promtool
def test_promtool_check_rules() -> None:
    promtool("check", "rules", "rules.yml")


@needs_promtool
def test_promtool_check_config() -> None:
    out = promtool("check", "config", "prometheus.yml")
    assert "1 rule files found" in out.stdout + out.stderr


@needs_promtool
def test_promtool_unit_tests_show_every_alert_firing() -> None:
    out = promtool("test", "rules", "rules_test.yml")
    assert "SUCCESS" in out.stdout + out.stderr


def rules() -> list[dict[str, object]]:
    doc = yaml.safe_load((PROMETHEUS / "rules.yml").read_text())
    return [rule for group in doc["groups"] for rule in group["rules"]]


def test_every_alert_has_a_unit_test_that_makes_it_fire() -> None:
    alerts = {r["alert"] for r in rules() if "alert" in r}
    tests = yaml.safe_load((PROMETHEUS / "rules_test.yml").read_text())["tests"]
    fired = {case["alertname"] for test in tests for case in test.get("alert_rule_test", [])
             if case.get("exp_alerts")}
    assert alerts == fired


def test_the_alerts_the_product_needs_exist_with_severity_and_runbook() -> None:
    alerts = {r["alert"]: r for r in rules() if "alert" in r}
    assert {"GiftGuardConsumerLagGrowing", "GiftGuardDecisionLatencyHigh", "GiftGuardHoldFailed",
            "GiftGuardDeadLetters", "GiftGuardBridge5xx", "GiftGuardNoEvents",
            "GiftGuardSlackFailing"} <= set(alerts)
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in {"critical", "warning"}, name
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), name
    assert "0.05" in alerts["GiftGuardDecisionLatencyHigh"]["expr"]


def test_rules_read_only_metrics_the_code_exports() -> None:
    recorded = {r["record"] for r in rules() if "record" in r}
    known = exported_metric_names() | recorded | PROMETHEUS_SERIES
    for rule in rules():
        names = promql_metric_names(str(rule["expr"]))
        assert names, rule
        assert names <= known, (rule.get("alert") or rule.get("record"), names - known)
    # Recording rules are built from exported metrics only.
    for rule in rules():
        if "record" in rule:
            assert promql_metric_names(str(rule["expr"])) <= exported_metric_names()


def test_the_scrape_config_loads_the_rules_and_scrapes_bridge_and_workers() -> None:
    config = yaml.safe_load((PROMETHEUS / "prometheus.yml").read_text())
    assert config["rule_files"] == ["rules.yml"]
    jobs = {job["job_name"]: [t for sc in job["static_configs"] for t in sc["targets"]]
            for job in config["scrape_configs"]}
    assert jobs == {"giftguard-bridge": ["bridge:8080"],
                    "giftguard-worker": ["worker-1:6066", "worker-2:6067"]}
    assert all(job.get("metrics_path", "/metrics") == "/metrics"
               for job in config["scrape_configs"])


def test_every_runbook_link_has_a_section_in_the_operating_guide() -> None:
    guide = (PROMETHEUS.parent / "README.md").read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
               for line in guide.splitlines() if line.startswith("#")}
    for rule in rules():
        if "alert" in rule:
            url = rule["annotations"]["runbook_url"]
            assert url.startswith("deploy/README.md#"), url
            assert url.split("#", 1)[1] in anchors, url
