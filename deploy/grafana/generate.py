"""Generate the GiftGuard Grafana dashboard as code (grafana-foundation-sdk, Grafana 11.6 types).

    .venv/bin/python deploy/grafana/generate.py          # writes dashboards/giftguard.json
    .venv/bin/python deploy/grafana/generate.py --check  # exit 1 if the committed JSON is stale

Every query uses only metrics made in ``sinks/metrics.py`` (tests/test_deploy_grafana.py checks
it), so the dashboard cannot drift from the code without a test failing. Rows follow the data:
webhooks in (bridge, RED), scoring (workers), detection (alerts, scores), actions (holds, Slack,
dead letters).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import bargauge, heatmap, stat, timeseries
from grafana_foundation_sdk.builders.common import ReduceDataOptions, VizLegendOptions
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DatasourceVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.common import (
    BarGaugeDisplayMode,
    LegendDisplayMode,
    LegendPlacement,
    VizOrientation,
)
from grafana_foundation_sdk.models.dashboard import (
    DataSourceRef,
    Threshold,
    ThresholdsMode,
)
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

OUT = Path(__file__).resolve().parent / "dashboards" / "giftguard.json"
UID = "giftguard"
DS = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "$__rate_interval"
#: The decision-latency target the GiftGuardDecisionLatencyHigh alert enforces (rules.yml).
LATENCY_TARGET_SECONDS = 0.05


def query(expr: str, legend: str = "", *, instant: bool = False,
          fmt: PromQueryFormat | None = None) -> Dataquery:
    """One PromQL target."""
    q = Dataquery().expr(expr).datasource(DS)
    if legend:
        q = q.legend_format(legend)
    if instant:
        q = q.instant()
    if fmt is not None:
        q = q.format(fmt)
    return q


def thresholds(*steps: tuple[float | None, str]) -> ThresholdsConfig:
    """Absolute thresholds: the first step's value is None (from minus infinity)."""
    return ThresholdsConfig().mode(ThresholdsMode.ABSOLUTE).steps(
        [Threshold(value=v, color=c) for v, c in steps])


def graph(title: str, description: str, unit: str, *targets: Dataquery,
          width: int = 8, stacked_legend: bool = False) -> timeseries.Panel:
    """A time series panel with a legend under it (as a table with last/max when asked)."""
    legend = VizLegendOptions().display_mode(
        LegendDisplayMode.TABLE if stacked_legend else LegendDisplayMode.LIST
    ).placement(LegendPlacement.BOTTOM).show_legend(True)
    if stacked_legend:
        legend = legend.calcs(["lastNotNull", "max"])
    panel = (timeseries.Panel().title(title).description(description).unit(unit)
             .datasource(DS).span(width).height(8).legend(legend).fill_opacity(10))
    for target in targets:
        panel = panel.with_target(target)
    return panel


def single(title: str, description: str, unit: str, target: Dataquery,
           steps: ThresholdsConfig) -> stat.Panel:
    """A single-number panel for the top row."""
    return (stat.Panel().title(title).description(description).unit(unit).datasource(DS)
            .span(4).height(4).with_target(target).thresholds(steps)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"])))


def build() -> Dashboard:
    """The whole dashboard."""
    ok = (None, "green")
    board = (
        Dashboard("GiftGuard")
        .uid(UID)
        .description("Gift card fraud detection: webhooks in, scoring, alerts, holds, Slack.")
        .tags(["giftguard", "generated"])
        .refresh("30s")
        .time("now-3h", "now")
        .timezone("browser")
        .editable()
        .with_variable(DatasourceVariable("datasource").label("Prometheus").type("prometheus"))
    )

    # -- overview ------------------------------------------------------------------------------
    board = (
        board.with_row(Row("Overview"))
        .with_panel(single(
            "Webhooks / s", "Webhook requests answered 200 by the bridge.", "reqps",
            query(f'sum(rate(giftguard_bridge_requests_total{{status="200"}}[{RATE}]))'),
            thresholds(ok)))
        .with_panel(single(
            "Events scored / s", "Canonical events processed by all workers.", "ops",
            query(f"sum(rate(giftguard_events_total[{RATE}]))"), thresholds(ok)))
        .with_panel(single(
            "Decision p99", "Bridge receipt to worker decision, 99th percentile (target 50 ms).",
            "s",
            query("histogram_quantile(0.99, sum by (le) "
                  f"(rate(giftguard_receipt_to_decision_seconds_bucket[{RATE}])))"),
            thresholds(ok, (LATENCY_TARGET_SECONDS, "red"))))
        .with_panel(single(
            "Consumer lag", "Records not yet processed, all topics and partitions.", "short",
            query("sum(giftguard_consumer_lag_messages)"),
            thresholds(ok, (1000, "orange"), (10000, "red"))))
        .with_panel(single(
            "Alerts (1h)", "Alerts raised in the last hour, both levels.", "short",
            query("sum(increase(giftguard_alerts_total[1h]))"),
            thresholds(ok, (1, "orange"))))
        .with_panel(single(
            "Failed holds, not done", "Hold actions that failed and are not done yet "
            "(retrying, or waiting for a person): cards still spendable.", "short",
            query("sum(giftguard_holds_failed)"),
            thresholds(ok, (1, "red"))))
    )

    # -- bridge: RED -----------------------------------------------------------------------------
    board = (
        board.with_row(Row("Bridge: webhooks in"))
        .with_panel(graph(
            "Requests by status", "Webhook requests answered, per provider and HTTP status.",
            "reqps",
            query(f"sum by (provider, status) (rate(giftguard_bridge_requests_total[{RATE}]))",
                  "{{provider}} {{status}}"),
            query(f"sum by (provider) (rate(giftguard_bridge_duplicates_total[{RATE}]))",
                  "{{provider}} duplicates")))
        .with_panel(graph(
            "Errors", "Share of requests answered 5xx (Kafka did not take the write; Square "
            "retries) and 4xx (bad signature, malformed body).", "percentunit",
            query(f'sum(rate(giftguard_bridge_requests_total{{status=~"5.."}}[{RATE}])) '
                  f"/ sum(rate(giftguard_bridge_requests_total[{RATE}]))", "5xx"),
            query(f'sum(rate(giftguard_bridge_requests_total{{status=~"4.."}}[{RATE}])) '
                  f"/ sum(rate(giftguard_bridge_requests_total[{RATE}]))", "4xx")))
        .with_panel(graph(
            "Request duration", "Time to answer a webhook, Kafka acknowledgement included "
            "(Square's limit is 10 s).", "s",
            query("histogram_quantile(0.50, sum by (le) "
                  f"(rate(giftguard_bridge_request_duration_seconds_bucket[{RATE}])))", "p50"),
            query("histogram_quantile(0.99, sum by (le) "
                  f"(rate(giftguard_bridge_request_duration_seconds_bucket[{RATE}])))", "p99")))
    )

    # -- workers ---------------------------------------------------------------------------------
    board = (
        board.with_row(Row("Workers: scoring"))
        .with_panel(graph(
            "Events by type", "Canonical events processed, per type (all workers).", "ops",
            query(f"sum by (type) (rate(giftguard_events_total[{RATE}]))", "{{type}}")))
        .with_panel(graph(
            "Consumer lag", "Records not yet processed, per topic. Growing lag means the "
            "workers are behind: add workers, up to the partition count.", "short",
            query("sum by (topic) (giftguard_consumer_lag_messages)", "{{topic}}"),
            stacked_legend=True))
        .with_panel(graph(
            "Decision latency", "Bridge receipt to decision (target: p99 under 50 ms), and "
            "the event's own time to decision (includes POS delivery delay).", "s",
            query("histogram_quantile(0.50, sum by (le) "
                  f"(rate(giftguard_receipt_to_decision_seconds_bucket[{RATE}])))",
                  "receipt p50"),
            query("histogram_quantile(0.99, sum by (le) "
                  f"(rate(giftguard_receipt_to_decision_seconds_bucket[{RATE}])))",
                  "receipt p99"),
            query("histogram_quantile(0.99, sum by (le) "
                  f"(rate(giftguard_event_to_decision_seconds_bucket[{RATE}])))",
                  "occurred p99")))
        .with_panel(graph(
            "Latency by worker", "Receipt-to-decision p99 per worker: one slow worker shows "
            "a hot partition or a slow disk.", "s",
            query("histogram_quantile(0.99, sum by (instance, le) "
                  f"(rate(giftguard_receipt_to_decision_seconds_bucket[{RATE}])))",
                  "{{instance}}"), width=12))
        .with_panel(graph(
            "Table sizes", "Keys in each state table (cards, entities), per worker.", "short",
            query("sum by (table, instance) (giftguard_table_keys)", "{{table}} {{instance}}"),
            width=12))
    )

    # -- detection -------------------------------------------------------------------------------
    board = (
        board.with_row(Row("Detection: alerts and scores"))
        .with_panel(graph(
            "Alerts by level", "Alerts raised per second, elevated and high.", "ops",
            query(f"sum by (level) (rate(giftguard_alerts_total[{RATE}]))", "{{level}}")))
        .with_panel(
            bargauge.Panel().title("Alerts by rule and level")
            .description("Rules that fired in alerts over the dashboard's time range "
                         "(an alert with two rules counts for both).")
            .datasource(DS).span(8).height(8).unit("short")
            .orientation(VizOrientation.HORIZONTAL)
            .display_mode(BarGaugeDisplayMode.GRADIENT)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]))
            .with_target(query(
                "sort_desc(sum by (rule, level) "
                "(increase(giftguard_alert_rules_total[$__range])))",
                "{{rule}} ({{level}})", instant=True)))
        .with_panel(
            heatmap.Panel().title("Score distribution")
            .description("Risk score (0-100) of every scored event; the elevated and high "
                         "thresholds sit in the top rows.")
            .datasource(DS).span(8).height(8).calculate(False)
            .with_target(query(
                f"sum by (le) (increase(giftguard_event_score_bucket[{RATE}]))", "{{le}}",
                fmt=PromQueryFormat.HEATMAP)))
    )

    # -- actions ---------------------------------------------------------------------------------
    board = (
        board.with_row(Row("Actions: holds, Slack, dead letters"))
        .with_panel(graph(
            "Holds by outcome", "Hold actions per POS, action and outcome (shadow mode records "
            "the hold it would have made), and POS requests sent again inside a call's retries "
            "by reason (429, 5xx, network): a POS outage the retries ride out shows only there.",
            "ops",
            query(f"sum by (pos, action, outcome) (rate(giftguard_holds_total[{RATE}]))",
                  "{{pos}} {{action}} {{outcome}}"),
            query(f"sum by (pos, reason) (rate(giftguard_pos_retries_total[{RATE}]))",
                  "{{pos}} retried: {{reason}}")))
        .with_panel(graph(
            "Slack messages", "Slack messages by outcome: sent, failed (after retries), "
            "retried, printed (no token: console).", "ops",
            query(f"sum by (outcome) (rate(giftguard_slack_messages_total[{RATE}]))",
                  "{{outcome}}")))
        .with_panel(graph(
            "Dead letters", "Records written to giftcard.deadletter, by reason and source; "
            "and the worker's records sent to Kafka again after a transient error (no leader, "
            "a timeout) before anything is dead-lettered.",
            "ops",
            query(f"sum by (reason, source) (rate(giftguard_deadletter_total[{RATE}]))",
                  "{{source}}: {{reason}}"),
            query(f"sum(rate(giftguard_produce_resends_total[{RATE}]))",
                  "worker: records sent again")))
    )
    return board


def render() -> str:
    """The dashboard JSON, as committed (sorted keys, two-space indent, final newline)."""
    model = build().build()
    for number, panel in enumerate(model.panels or [], start=1):
        panel.id_val = number  # stable, unique ids (the builders leave them all at 0)
    return JSONEncoder(sort_keys=True, indent=2).encode(model) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if the committed JSON differs from the generated one")
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args(argv)
    text = render()
    if args.check:
        current = args.out.read_text() if args.out.exists() else ""
        if current != text:
            print(f"{args.out} is stale: run {Path(__file__).name}", file=sys.stderr)
            return 1
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text)
    print(f"wrote {args.out} ({len(json.loads(text)['panels'])} panels and rows)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
