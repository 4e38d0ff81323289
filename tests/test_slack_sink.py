"""The Slack alert sink: the message analysts see, and delivery against a local fake of Slack's API.

The fake (tests/fakes/slack_api.py) rate-limits per channel like Slack; most tests shrink its window
to 0.1 s (10 messages/s) so they run fast, and one uses Slack's real 1 message/s.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import time
from collections.abc import AsyncIterator

import pytest
from prometheus_client import CollectorRegistry
from slack_sdk.web.async_client import AsyncWebClient

from detectors.alerts import Alert
from sinks.base import Backoff, PermanentFailure, RetryLater, SinkClosed
from sinks.metrics import worker_metrics
from sinks.slack import SlackAlertSink, SlackChat, alert_message, make_client
from sinks.slack.blocks import format_money, parse_button_value
from tests.fakes.slack_api import CHANNEL_ID, CHANNEL_NAME, TOKEN, FakeSlackApi

FAST = 0.1  # the fake's rate-limit window in fast tests: one message per 0.1 s per channel
SIXTEEN_DIGITS = re.compile(r"\d(?:[ -]?\d){15}")


def make_alert(alert_id: str = "alert-1", **changes: object) -> Alert:
    fields: dict[str, object] = {
        "alert_id": alert_id, "card_id": "gftc:6d55a72470d940c6ba09c0ab8ad08d20",
        "location_id": "L-DOWNTOWN", "event_id": f"square:{alert_id}",
        "occurred_at": "2025-03-01T12:00:00Z", "decided_at": "2025-03-01T12:00:01Z", "score": 91.4,
        "level": "high", "rules": ["drain_after_activation", "far_from_sale"],
        "reasons": ["redeemed $180 of $200 eleven minutes after activation",
                 "2,400 km from where it was sold"],
        "amount_at_risk_minor": 123456, "model_version": "hst-v3",
        "related_card_ids": ["gftc:b1", "gftc:b2", "gftc:b3"]}
    fields.update(changes)
    return Alert(**fields)  # type: ignore[arg-type]


def rendered(blocks: list[dict[str, object]], text: str) -> str:
    return json.dumps(blocks, ensure_ascii=False) + "\n" + text


class Outcomes:
    """The slack_messages counter from a fresh registry, read back by outcome."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.counter = worker_metrics(self.registry).slack_messages

    def __getitem__(self, outcome: str) -> float:
        value = self.registry.get_sample_value("giftguard_slack_messages_total",
                                               {"outcome": outcome})
        return value or 0.0


@pytest.fixture
async def fake_slack() -> AsyncIterator[FakeSlackApi]:
    async with FakeSlackApi(window=FAST) as fake:
        yield fake


@pytest.fixture
def outcomes() -> Outcomes:
    return Outcomes()


def sink_for(fake: FakeSlackApi, outcomes: Outcomes | None = None,
             **options: object) -> SlackAlertSink:
    options.setdefault("min_interval", FAST)
    options.setdefault("backoff", Backoff(initial=0.02, factor=2.0, cap=0.2, jitter=0.1))
    return SlackAlertSink(options.pop("token", TOKEN), options.pop("channel", CHANNEL_ID),  # type: ignore[arg-type]
                          base_url=fake.base_url,
                          messages=outcomes.counter if outcomes else None, **options)  # type: ignore[arg-type]


# -- the message ----------------------------------------------------------------------------------


def test_message_shows_reasons_amount_last_four_and_never_a_card_number() -> None:
    alert = make_alert(reasons=["card 7783 3200 0000 1234 drained online",
                                "2,400 km from where it was sold <far>"])
    message = alert_message(alert, gan_last4="7783320000001234", currency="USD",
                            location_name="Downtown")
    everything = rendered(message.blocks, message.text)

    assert not SIXTEEN_DIGITS.search(everything)
    assert "7783320000001234" not in everything and "•••• 1234" in everything
    assert "$1,234.56" in everything
    assert "2,400 km from where it was sold &lt;far&gt;" in everything  # mrkdwn escaped
    assert "card ••••1234 drained online" in everything
    header = message.blocks[0]
    assert header["type"] == "header"
    assert header["text"]["text"].endswith("HIGH risk gift card alert — score 91")
    why = message.blocks[1]["text"]["text"]
    assert why.startswith("*Why*\n• card") and why.count("\n• ") == 2
    fields = {f["text"].split("\n")[0]: f["text"].split("\n", 1)[1]
              for f in message.blocks[2]["fields"]}
    assert fields["*Amount at risk*"] == "$1,234.56"
    assert fields["*Card*"] == "•••• 1234 (`gftc:6d55a7…8d20`)"
    assert fields["*Location*"] == "Downtown (L-DOWNTOWN)"
    assert fields["*Related cards*"] == "3"
    assert fields["*Rules*"] == "`drain_after_activation`, `far_from_sale`"
    assert fields["*Model*"] == "hst-v3"
    context = message.blocks[-1]["elements"][0]["text"]
    assert "alert alert-1" in context and "event square:alert-1" in context
    assert message.text.startswith("HIGH gift card alert (score 91): $1,234.56 at risk on card "
                                   "•••• 1234 at Downtown")


def test_card_id_that_is_a_card_number_is_masked() -> None:
    message = alert_message(make_alert(card_id="6060111122223333", related_card_ids=[]))
    everything = rendered(message.blocks, message.text)
    assert "6060111122223333" not in everything and "••••3333" in everything
    assert "last four unknown" in everything


@pytest.mark.parametrize(("minor", "currency", "text"), [
    (123456, "USD", "$1,234.56"), (5, "USD", "$0.05"), (0, "GBP", "£0.00"),
    (199900, "JPY", "¥199,900"), (1234567, "KWD", "1,234.567 KWD"), (-250, "EUR", "-€2.50"),
])
def test_money(minor: int, currency: str, text: str) -> None:
    assert format_money(minor, currency) == text


@pytest.mark.parametrize(("mode", "buttons"), [
    ("shadow", ["giftguard_confirm_fraud", "giftguard_false_positive"]),
    ("approve", ["giftguard_hold", "giftguard_release", "giftguard_confirm_fraud",
                 "giftguard_false_positive"]),
    ("auto", ["giftguard_hold", "giftguard_release", "giftguard_confirm_fraud",
              "giftguard_false_positive"]),
])
def test_buttons_depend_on_hold_mode_and_carry_the_alert_id(mode: str, buttons: list[str]) -> None:
    message = alert_message(make_alert("alert-77"), hold_mode=mode)  # type: ignore[arg-type]
    (actions,) = [b for b in message.blocks if b["type"] == "actions"]
    assert [e["action_id"] for e in actions["elements"]] == buttons
    assert {parse_button_value(e["value"])["alert_id"] for e in actions["elements"]} == {"alert-77"}


# -- the fake itself ------------------------------------------------------------------------------


async def test_fake_answers_like_slack(fake_slack: FakeSlackApi) -> None:
    client = AsyncWebClient(token=TOKEN, base_url=fake_slack.base_url, retry_handlers=[])
    posted = await client.chat_postMessage(channel=f"#{CHANNEL_NAME}", text="hi",
                                           blocks=[{"type": "divider"}])
    assert posted["ok"] and posted["channel"] == CHANNEL_ID and posted["message"]["text"] == "hi"
    await asyncio.sleep(FAST)
    # A form body, as older clients send it, with blocks as a JSON string.
    form = await client.api_call("chat.postMessage", data={
        "channel": CHANNEL_ID, "text": "form", "blocks": json.dumps([{"type": "divider"}])})
    assert form["ts"] != posted["ts"]
    assert fake_slack.calls[-1].blocks == [{"type": "divider"}]
    updated = await client.chat_update(channel=CHANNEL_ID, ts=posted["ts"], text="edited")
    assert updated["ts"] == posted["ts"]

    wrong = AsyncWebClient(token="xoxb-wrong", base_url=fake_slack.base_url, retry_handlers=[])
    with pytest.raises(Exception, match="invalid_auth"):
        await wrong.chat_postMessage(channel=CHANNEL_ID, text="x")
    with pytest.raises(Exception, match="channel_not_found"):
        await client.chat_postMessage(channel="C-NOPE", text="x")
    await asyncio.sleep(FAST)
    await client.chat_postMessage(channel=CHANNEL_ID, text="1")
    with pytest.raises(Exception, match="ratelimited"):
        await client.chat_postMessage(channel=CHANNEL_ID, text="2")
    assert fake_slack.statuses()[-1] == 429
    assert [c.text for c in fake_slack.posts()] == ["hi", "form", "1"]


# -- delivery -------------------------------------------------------------------------------------


async def test_burst_is_delivered_once_each_at_the_channel_rate(
        fake_slack: FakeSlackApi, outcomes: Outcomes) -> None:
    sink = sink_for(fake_slack, outcomes)
    alerts = [make_alert(f"alert-{i}") for i in range(20)]
    started = time.monotonic()
    for alert in [*alerts, *alerts[:5]]:  # the first five twice: replays must not post again
        await sink.send(alert, gan_last4="1234")
    assert time.monotonic() - started < 0.2, "send() must queue, not wait for Slack"
    await sink.flush(timeout=15)

    posts = fake_slack.posts(CHANNEL_ID)
    assert sorted(c.body["blocks"][-1]["elements"][0]["text"].split()[1] for c in posts) == sorted(
        a.alert_id for a in alerts)
    assert fake_slack.max_posts_in_window(CHANNEL_ID) <= 1
    assert 429 not in fake_slack.statuses()
    assert outcomes["sent"] == 20 and outcomes["failed"] == 0
    assert sink.posted("alert-3") is not None
    assert sink.posted("alert-3").ts in {c.ts for c in posts}  # type: ignore[union-attr]
    await sink.close()


async def test_slack_sdk_retries_after_429(fake_slack: FakeSlackApi, outcomes: Outcomes) -> None:
    # Another process posts to the same channel, so this sink's pacing alone cannot avoid 429s;
    # slack_sdk's rate-limit handler sleeps Retry-After (0 here, plus its own jitter below 1 s).
    fake_slack.retry_after = 0
    sink = sink_for(fake_slack, outcomes, min_interval=0.0)
    for i in range(3):
        await sink.send(make_alert(f"alert-{i}"))
    await sink.flush(timeout=15)

    statuses = fake_slack.statuses()
    assert 429 in statuses and statuses[-1] == 200
    assert statuses.count(429) > outcomes["retried"]  # at least one retried inside slack_sdk
    assert len(fake_slack.posts()) == 3 and len({c.ts for c in fake_slack.posts()}) == 3
    assert fake_slack.max_posts_in_window(CHANNEL_ID) <= 1
    assert outcomes["sent"] == 3
    await sink.close()


async def test_sink_honours_429_itself_when_slack_sdk_gives_up(
        fake_slack: FakeSlackApi, outcomes: Outcomes) -> None:
    fake_slack.retry_after = 0
    sink = sink_for(fake_slack, outcomes, min_interval=0.0, retry_handlers=[])
    for i in range(6):
        await sink.send(make_alert(f"alert-{i}"))
    await sink.flush(timeout=10)

    assert fake_slack.statuses().count(429) >= 1
    assert outcomes["retried"] == fake_slack.statuses().count(429)
    assert len(fake_slack.posts()) == 6 and outcomes["sent"] == 6
    assert fake_slack.max_posts_in_window(CHANNEL_ID) <= 1
    await sink.close()


async def test_real_slack_rate_one_message_per_second(outcomes: Outcomes) -> None:
    async with FakeSlackApi(window=1.0) as fake:
        sink = sink_for(fake, outcomes, min_interval=1.0)
        for i in range(3):
            await sink.send(make_alert(f"alert-{i}"))
        await sink.flush(timeout=10)
        await sink.close()
    times = [c.at for c in fake.posts()]
    assert len(times) == 3
    assert all(b - a >= 0.99 for a, b in itertools.pairwise(times))
    assert 429 not in fake.statuses() and outcomes["sent"] == 3


@pytest.mark.parametrize("status", [500, 503])
async def test_outage_then_recovery_delivers_everything(
        fake_slack: FakeSlackApi, outcomes: Outcomes, status: int) -> None:
    fake_slack.outage(seconds=0.6, status=status)
    sink = sink_for(fake_slack, outcomes)
    for i in range(4):
        await sink.send(make_alert(f"alert-{i}"))
    with pytest.raises(TimeoutError):
        await sink.flush(timeout=0.2)  # still down: nothing lost, nothing sent yet
    assert sink.queued == 4 and fake_slack.posts() == []
    await sink.flush(timeout=10)

    assert [c.text for c in fake_slack.posts()] == [
        alert_message(make_alert(f"alert-{i}")).text for i in range(4)]  # in order
    assert status in fake_slack.statuses()
    assert outcomes["retried"] >= 1 and outcomes["sent"] == 4 and outcomes["failed"] == 0
    await sink.close()


async def test_wrong_token_is_a_clear_failure_not_a_crash(
        fake_slack: FakeSlackApi, outcomes: Outcomes) -> None:
    sink = sink_for(fake_slack, outcomes, token="xoxb-wrong")
    await sink.send(make_alert("alert-1"))
    await sink.send(make_alert("alert-2"))
    await sink.flush(timeout=5)
    assert outcomes["failed"] == 2 and outcomes["sent"] == 0
    assert isinstance(sink.last_error, PermanentFailure)
    assert "invalid_auth" in str(sink.last_error) and "alert_id=alert-2" in str(sink.last_error)
    assert fake_slack.posts() == []

    chat = SlackChat(make_client("xoxb-wrong", base_url=fake_slack.base_url))
    with pytest.raises(PermanentFailure) as caught:
        await chat.post(CHANNEL_ID, alert_message(make_alert()), alert_id="alert-1")
    assert caught.value.response == {"status": 200, "error": "invalid_auth"}
    assert caught.value.__cause__ is not None  # converted at the boundary, cause kept
    await sink.close()


async def test_unknown_channel_fails_and_the_sender_goes_on(
        fake_slack: FakeSlackApi, outcomes: Outcomes) -> None:
    sink = sink_for(fake_slack, outcomes, channel="#nope")
    await sink.send(make_alert())
    await sink.flush(timeout=5)
    assert "channel_not_found" in str(sink.last_error) and outcomes["failed"] == 1
    sink.channel = CHANNEL_ID
    await sink.send(make_alert("alert-2"))
    await sink.flush(timeout=5)
    assert outcomes["sent"] == 1
    await sink.close()


async def test_same_alert_changed_is_updated_not_posted_again(
        fake_slack: FakeSlackApi, outcomes: Outcomes) -> None:
    sink = sink_for(fake_slack, outcomes, hold_mode="approve")
    await sink.send(make_alert())
    await sink.flush(timeout=5)
    await sink.send(make_alert())  # unchanged: nothing to do
    await sink.send(make_alert(action="hold"))  # changed: edit the posted message
    await sink.flush(timeout=5)

    assert len(fake_slack.posts()) == 1
    updates = [c for c in fake_slack.calls if c.method == "chat.update"]
    assert len(updates) == 1 and updates[0].ts == fake_slack.posts()[0].ts
    assert "*Action*\nhold" in json.dumps(updates[0].blocks).replace("\\n", "\n")
    await sink.close()


async def test_dedupe_memory_is_bounded(fake_slack: FakeSlackApi) -> None:
    sink = sink_for(fake_slack, remember=2)
    for i in range(3):
        await sink.send(make_alert(f"alert-{i}"))
    await sink.flush(timeout=5)
    assert sink.posted("alert-0") is None and sink.posted("alert-2") is not None
    await sink.close()


async def test_full_queue_and_closed_sink_raise_typed_errors(
        fake_slack: FakeSlackApi, outcomes: Outcomes) -> None:
    fake_slack.outage(seconds=30)
    sink = sink_for(fake_slack, outcomes, max_queue=2)
    await sink.send(make_alert("a1"))
    await sink.send(make_alert("a2"))
    with pytest.raises(RetryLater) as caught:
        await sink.send(make_alert("a3"))
    assert caught.value.retry_after > 0
    assert sink.queued == 2
    await sink.close(timeout=0.1)  # Slack still down: give up, do not hang
    assert sink.queued == 0 and outcomes["failed"] == 2
    with pytest.raises(SinkClosed):
        await sink.send(make_alert("a4"))


async def test_unreachable_slack_is_retry_later() -> None:
    async with FakeSlackApi() as fake:
        base_url = fake.base_url  # the port is free again once the fake stops
    chat = SlackChat(make_client(TOKEN, base_url=base_url, retry_handlers=[]))
    with pytest.raises(RetryLater) as caught:
        await chat.post(CHANNEL_ID, alert_message(make_alert()), alert_id="alert-1")
    assert "cannot reach slack" in str(caught.value) and caught.value.__cause__ is not None


async def test_a_failing_lookup_costs_a_detail_not_the_alert(fake_slack: FakeSlackApi) -> None:
    def broken(alert: Alert) -> str | None:
        raise AttributeError("no gan_last4 here")

    sink = sink_for(fake_slack, gan_last4=broken, location_name={"L-DOWNTOWN": "Downtown"}.get)
    await sink.send(make_alert())
    await sink.flush(timeout=5)
    (post,) = fake_slack.posts()
    assert "last four unknown" in post.text + json.dumps(post.blocks)
    assert "Downtown (L-DOWNTOWN)" in json.dumps(post.blocks)
    await sink.close()
