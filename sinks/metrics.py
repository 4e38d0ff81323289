"""Prometheus metrics: every metric is made here, by a factory, from a registry passed in.

Names start with ``giftguard_``, carry their unit (``_seconds``, ``_total``) and have no
high-cardinality labels (no card ids). Tests pass a fresh ``CollectorRegistry``.
"""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

# Decision latency is mostly a few milliseconds; the top buckets catch backlog (seconds to
# minutes behind), so one histogram serves the p99 target and the "we are behind" alert.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0, 300.0)
# Bridge requests answer in well under a second unless Kafka is slow; 10 s is Square's limit.
REQUEST_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
                   5.0, 10.0)
# Risk scores are 0-100; finer steps where the elevated/high thresholds usually sit.
SCORE_BUCKETS = (5, 10, 20, 30, 40, 50, 60, 70, 75, 80, 85, 90, 95, 100)


@dataclass(frozen=True)
class BridgeMetrics:
    """What the webhook bridge exports."""

    requests: Counter
    request_seconds: Histogram
    duplicates: Counter
    deadletters: Counter


def bridge_metrics(registry: CollectorRegistry) -> BridgeMetrics:
    """Create the bridge's metrics in ``registry``."""
    return BridgeMetrics(
        requests=Counter("giftguard_bridge_requests_total",
                         "Webhook requests answered, by provider and HTTP status.",
                         ["provider", "status"], registry=registry),
        request_seconds=Histogram("giftguard_bridge_request_duration_seconds",
                                  "Time to answer a webhook request, Kafka acknowledgement included.",
                                  ["provider"], buckets=REQUEST_BUCKETS, registry=registry),
        duplicates=Counter("giftguard_bridge_duplicates_total",
                           "Webhooks answered 200 without a write because their event id was seen.",
                           ["provider"], registry=registry),
        deadletters=Counter("giftguard_deadletter_total",
                            "Records written to giftcard.deadletter, by reason and source.",
                            ["reason", "source"], registry=registry),
    )


@dataclass(frozen=True)
class WorkerMetrics:
    """What a Faust worker exports."""

    events: Counter
    event_to_decision_seconds: Histogram
    receipt_to_decision_seconds: Histogram
    alerts: Counter
    alert_rules: Counter
    scores: Histogram
    holds: Counter
    holds_failed: Gauge
    pos_retries: Counter
    slack_messages: Counter
    deadletters: Counter
    produce_resends: Counter
    consumer_lag: Gauge
    table_keys: Gauge


def worker_metrics(registry: CollectorRegistry) -> WorkerMetrics:
    """Create a worker's metrics in ``registry``."""
    return WorkerMetrics(
        events=Counter("giftguard_events_total",
                       "Canonical events processed, by type and source.",
                       ["type", "source"], registry=registry),
        event_to_decision_seconds=Histogram(
            "giftguard_event_to_decision_seconds",
            "From an event's occurred_at to the worker's decision on it.",
            buckets=LATENCY_BUCKETS, registry=registry),
        receipt_to_decision_seconds=Histogram(
            "giftguard_receipt_to_decision_seconds",
            "From the bridge receiving an event (received_at) to the worker's decision on it.",
            buckets=LATENCY_BUCKETS, registry=registry),
        alerts=Counter("giftguard_alerts_total", "Alerts raised, by level.",
                       ["level"], registry=registry),
        alert_rules=Counter("giftguard_alert_rules_total",
                            "Rules that fired in raised alerts, by rule and alert level "
                            "(an alert with two rules counts once for each).",
                            ["rule", "level"], registry=registry),
        scores=Histogram("giftguard_event_score", "Risk score (0-100) of every scored event.",
                         buckets=SCORE_BUCKETS, registry=registry),
        holds=Counter("giftguard_holds_total", "Hold actions, by POS, action and outcome.",
                      ["pos", "action", "outcome"], registry=registry),
        holds_failed=Gauge("giftguard_holds_failed",
                           "Hold operations that failed and are not done yet (waiting for a "
                           "retry or for a person), on the cards this worker owns, by POS and "
                           "action.", ["pos", "action"], registry=registry),
        pos_retries=Counter("giftguard_pos_retries_total",
                            "POS requests sent again inside a hold call's retries, by POS and "
                            "reason (429, 5xx, network); counted even when the call then succeeds.",
                            ["pos", "reason"], registry=registry),
        slack_messages=Counter("giftguard_slack_messages_total",
                               "Slack messages, by outcome (sent, failed, retried, printed).",
                               ["outcome"], registry=registry),
        deadletters=Counter("giftguard_deadletter_total",
                            "Records written to giftcard.deadletter, by reason and source.",
                            ["reason", "source"], registry=registry),
        produce_resends=Counter("giftguard_produce_resends_total",
                                "Records (alerts, re-keyed events, table changelogs) sent to "
                                "Kafka again after a transient error (no leader, a timeout).",
                                registry=registry),
        consumer_lag=Gauge("giftguard_consumer_lag_messages",
                           "Records not yet processed, per topic partition this worker owns.",
                           ["topic", "partition"], registry=registry),
        table_keys=Gauge("giftguard_table_keys", "Keys held in a state table (cards, entities).",
                         ["table"], registry=registry),
    )
