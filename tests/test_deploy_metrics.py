"""What the code exports, and which metric names a PromQL expression reads.

The Prometheus rules and the Grafana dashboard are checked against these (test_deploy_prometheus,
test_deploy_grafana), so neither can refer to a metric that sinks/metrics.py does not make.
"""

from __future__ import annotations

import re

from prometheus_client import CollectorRegistry

from sinks.metrics import bridge_metrics, worker_metrics

#: The series each metric type exposes, by suffix (OpenMetrics, as prometheus_client writes it).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
}

_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or",
             "unless", "offset", "bool", "inf", "nan", "atan2"}


def metric_families() -> dict[str, str]:
    """Every metric family the bridge and a worker create: name -> type."""
    families: dict[str, str] = {}
    for factory in (bridge_metrics, worker_metrics):
        registry = CollectorRegistry()
        factory(registry)
        for family in registry.collect():
            families[family.name] = family.type
    return families


def exported_metric_names() -> set[str]:
    """Every series name the code can export, suffixes included (``_bucket``, ``_total``, ...)."""
    return {name + suffix for name, kind in metric_families().items()
            for suffix in SUFFIXES[kind]}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names an expression selects (functions, keywords and labels left out)."""
    s = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)   # string literals
    s = re.sub(r"\{[^}]*\}", " ", s)                                     # label matchers
    s = re.sub(r"\[[^\]]*\]", " ", s)                                    # range selectors
    s = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", s)
    s = re.sub(r"\$\w+", " ", s)                                         # Grafana variables
    names = set()
    for match in re.finditer(r"[A-Za-z_:][A-Za-z0-9_:]*", s):
        before = s[match.start() - 1] if match.start() else " "
        if before.isdigit() or before == ".":  # 1e3, 10m, 0.5
            continue
        if s[match.end():].lstrip().startswith("("):  # a function call
            continue
        if match.group().lower() in _KEYWORDS:
            continue
        names.add(match.group())
    return names


def test_exported_names_include_every_suffix() -> None:
    names = exported_metric_names()
    assert {"giftguard_bridge_requests_total", "giftguard_receipt_to_decision_seconds_bucket",
            "giftguard_receipt_to_decision_seconds_count", "giftguard_event_score_sum",
            "giftguard_consumer_lag_messages", "giftguard_table_keys",
            "giftguard_holds_total", "giftguard_deadletter_total"} <= names
    assert "giftguard_holds" not in names and "giftguard_receipt_to_decision_seconds" not in names


def test_exported_names_agree_with_what_prometheus_client_writes() -> None:
    # Unlabelled metrics write their samples at once: their names must be in the set.
    for factory in (bridge_metrics, worker_metrics):
        registry = CollectorRegistry()
        factory(registry)
        written = {s.name for family in registry.collect() for s in family.samples}
        assert written <= exported_metric_names()


def test_promql_metric_names() -> None:
    assert promql_metric_names(
        'histogram_quantile(0.99, sum by (le, instance) (rate('
        'giftguard_receipt_to_decision_seconds_bucket{job="giftguard-worker"}[$__rate_interval])))'
    ) == {"giftguard_receipt_to_decision_seconds_bucket"}
    assert promql_metric_names(
        '(sum(rate(giftguard_events_total[30m])) or vector(0)) == 0 '
        'and up{job=~"giftguard-.*"} offset 10m > 1e3'
    ) == {"giftguard_events_total", "up"}
    assert promql_metric_names(
        "giftguard:consumer_lag_messages:sum > 1000 and "
        "deriv(giftguard:consumer_lag_messages:sum[10m]) > 0"
    ) == {"giftguard:consumer_lag_messages:sum"}
