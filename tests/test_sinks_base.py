"""The sink interface, its errors and backoff, and the memory and console sinks."""

from __future__ import annotations

import io
import random

import pytest
from prometheus_client import CollectorRegistry

from detectors.alerts import Alert
from sinks.base import AlertSink, Backoff, PermanentFailure, RetryLater, SinkClosed, SinkError
from sinks.console import ConsoleSink
from sinks.memory import MemorySink
from sinks.metrics import worker_metrics
from sinks.slack import SlackAlertSink, alert_sink
from streams.settings import load_settings


def make_alert(**changes: object) -> Alert:
    fields: dict[str, object] = {
        "alert_id": "alert-1", "card_id": "gftc:6d55a72470d940c6ba09c0ab8ad08d20",
        "location_id": "L-DOWNTOWN",
        "event_id": "square:act-1", "occurred_at": "2025-03-01T12:00:00Z",
        "decided_at": "2025-03-01T12:00:01Z", "score": 91.4, "level": "high",
        "rules": ["drain_after_activation", "far_from_sale"],
        "reasons": ["redeemed $180 of $200 eleven minutes after activation",
                 "2,400 km from where it was sold"],
        "amount_at_risk_minor": 18000, "model_version": "hst-v3"}
    fields.update(changes)
    return Alert(**fields)  # type: ignore[arg-type]


def test_one_error_hierarchy_with_context() -> None:
    later = RetryLater("slow", sink="slack", alert_id="a", retry_after=3, response={"status": 429})
    permanent = PermanentFailure("bad token", sink="slack", response={"error": "invalid_auth"})
    assert isinstance(later, SinkError) and isinstance(permanent, SinkError)
    assert isinstance(SinkClosed("closed", sink="memory"), PermanentFailure)
    assert later.retry_after == 3.0 and later.response == {"status": 429}
    assert str(permanent) == "bad token (sink=slack)"
    assert "retry_after=3s" in str(later) and "alert_id=a" in str(later)


def test_backoff_grows_caps_jitters_and_honours_retry_after() -> None:
    backoff = Backoff(initial=1.0, factor=2.0, cap=8.0, jitter=0.5)
    rng = random.Random(7)
    delays = [backoff.delay(n, rng=rng) for n in range(1, 7)]
    for n, delay in enumerate(delays, start=1):
        base = min(8.0, 2.0 ** (n - 1))
        assert base <= delay <= base * 1.5
    assert backoff.delay(1, retry_after=60, rng=rng) == 60.0  # Retry-After wins over the cap
    assert Backoff(jitter=0).delay(1, retry_after=0) == 0.5


@pytest.mark.parametrize("sink", [MemorySink(), ConsoleSink(stream=io.StringIO()),
                                  SlackAlertSink("xoxb-x", "C1")], ids=type)
def test_every_sink_is_an_alert_sink(sink: object) -> None:
    assert isinstance(sink, AlertSink)


async def test_memory_sink_records_and_can_fail() -> None:
    sink = MemorySink()
    await sink.send(make_alert(alert_id="a1"))
    await sink.send(make_alert(alert_id="a2"))
    assert [a.alert_id for a in sink.sent] == ["a1", "a2"]
    await sink.close()
    with pytest.raises(SinkClosed):
        await sink.send(make_alert())

    failing = MemorySink(fail_with=RetryLater("down", sink="memory", retry_after=1))
    with pytest.raises(RetryLater):
        await failing.send(make_alert())
    assert failing.sent == []


async def test_console_sink_prints_one_compact_line(capsys: pytest.CaptureFixture[str]) -> None:
    registry = CollectorRegistry()
    metrics = worker_metrics(registry)
    sink = ConsoleSink(messages=metrics.slack_messages)
    await sink.send(make_alert(related_card_ids=["gftc:a", "gftc:b"],
                               reasons=["card 7783320000001234 drained", "second reason"]))
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 1
    line = lines[0]
    assert line.startswith("ALERT high 91 $180.00 card gftc:6d55a7…8d20 +2 related at L-DOWNTOWN")
    assert "[drain_after_activation,far_from_sale]" in line and "(+1 more)" in line
    assert "7783320000001234" not in line and "••••1234" in line
    assert registry.get_sample_value("giftguard_slack_messages_total",
                                     {"outcome": "printed"}) == 1


def test_alert_sink_prints_without_a_slack_token(clean_env: object) -> None:
    assert isinstance(alert_sink(load_settings()), ConsoleSink)
    sink = alert_sink(load_settings(slack_bot_token="xoxb-1", slack_channel="C1",
                                    giftguard_hold_mode="approve"))
    assert isinstance(sink, SlackAlertSink)
    assert sink.hold_mode == "approve" and "xoxb-1" not in repr(sink)
