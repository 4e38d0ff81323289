"""``POST /slack/actions``: signature, payload, the record on giftcard.feedback; threads."""

from __future__ import annotations

import json
import time
from typing import Any

import orjson
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer

from sinks.slack import SlackAlertSink
from sinks.slack.blocks import ACTION_CONFIRM_FRAUD, ACTION_HOLD, button_value
from streams import topics
from streams.slack_actions import SlackActions, decisions_from
from tests.fakes.slack_api import CHANNEL_ID, TOKEN, FakeSlackApi
from tests.holds_helpers import SIGNING_SECRET, block_actions
from tests.test_holds import make_alert


class Producer:
    def __init__(self) -> None:
        self.sent: list[tuple[str, bytes, bytes]] = []

    async def send_and_wait(self, topic: str, value: bytes, key: bytes) -> None:
        self.sent.append((topic, key, value))


def signed(payload: dict[str, Any] | bytes, secret: str = SIGNING_SECRET,
           ts: int | None = None) -> tuple[bytes, dict[str, str]]:
    import hashlib
    import hmac
    import urllib.parse

    body = (payload if isinstance(payload, bytes)
            else urllib.parse.urlencode({"payload": json.dumps(payload)}).encode())
    stamp = str(int(time.time()) if ts is None else ts)
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{stamp}:".encode() + body,
                           hashlib.sha256).hexdigest()
    return body, {"X-Slack-Request-Timestamp": stamp, "X-Slack-Signature": sig,
                  "Content-Type": "application/x-www-form-urlencoded"}


async def client_for(handler: SlackActions) -> TestClient:
    app = web.Application()
    app.router.add_post("/slack/actions", handler.handle)
    client = TestClient(TestServer(app))
    await client.start_server()
    return client


async def test_signed_press_is_written_keyed_by_card_forged_is_not() -> None:
    producer = Producer()
    client = await client_for(SlackActions(SIGNING_SECRET, lambda: producer))
    try:
        value = button_value(make_alert())
        body, headers = signed(block_actions(ACTION_HOLD, value), secret="wrong")
        assert (await client.post("/slack/actions", data=body, headers=headers)).status == 401
        body, headers = signed(block_actions(ACTION_HOLD, value), ts=int(time.time()) - 400)
        assert (await client.post("/slack/actions", data=body, headers=headers)).status == 401
        assert (await client.post("/slack/actions", data=b"payload=%7B%7D")).status == 401
        assert producer.sent == []

        body, headers = signed(block_actions(ACTION_CONFIRM_FRAUD, value))
        assert (await client.post("/slack/actions", data=body, headers=headers)).status == 200
        ((topic, key, raw),) = producer.sent
        rec = orjson.loads(raw)
        assert topic == topics.FEEDBACK and key == b"gftc:1"
        assert rec["decision"] == "confirm_fraud" and rec["is_fraud"] is True
        assert rec["alert_id"] == "a1" and rec["user_id"] == "U0ANALYST"
        assert rec["rules"] == ["rapid_drain"] and rec["location_id"] == "L1"
    finally:
        await client.close()


async def test_a_signed_body_that_is_not_utf8_is_malformed_not_forged() -> None:
    producer = Producer()
    client = await client_for(SlackActions(SIGNING_SECRET, lambda: producer))
    try:
        body, headers = signed(b"payload=\x80\xff")
        answer = await client.post("/slack/actions", data=body, headers=headers)
        assert answer.status == 400 and "UTF-8" in (await answer.json())["error"]
        body, headers = signed(b"payload=\x80\xff", secret="wrong")
        assert (await client.post("/slack/actions", data=body, headers=headers)).status == 401
        assert producer.sent == []
    finally:
        await client.close()


async def test_without_a_signing_secret_the_route_is_not_there() -> None:
    client = await client_for(SlackActions(None, lambda: None))
    try:
        body, headers = signed(block_actions(ACTION_HOLD, "a1"))
        assert (await client.post("/slack/actions", data=body, headers=headers)).status == 404
    finally:
        await client.close()


def test_other_buttons_and_payload_types_are_ignored() -> None:
    assert decisions_from({"type": "view_submission"}, 0.0) == []
    assert decisions_from(block_actions("someone_elses_button", "x"), 0.0) == []


async def test_incident_thread_survives_a_restart_of_the_sink() -> None:
    async with FakeSlackApi(window=0.05) as fake:
        records: list[dict] = []

        async def on_posted(record: dict) -> None:
            records.append(record)

        sink = SlackAlertSink(TOKEN, CHANNEL_ID, base_url=fake.base_url, min_interval=0.05,
                              incidents=True, on_posted=on_posted)
        batch = [f"gftc:b{i}" for i in range(5)]
        for i, card in enumerate(batch):
            await sink.send(make_alert(f"b{i}", card_id=card).__class__(
                **{**make_alert(f"b{i}", card_id=card).to_dict(), "related_card_ids": batch[:i]}))
        await sink.flush(timeout=5)
        await sink.close()
        assert len(fake.posts()) == 2  # the first alert, then one reply with the other four
        parent = fake.posts()[0]

        again = SlackAlertSink(TOKEN, CHANNEL_ID, base_url=fake.base_url, min_interval=0.05,
                               incidents=True)
        assert again.restore(records) == 2
        await again.send(make_alert("b0", card_id="gftc:b0"))        # replayed: not reposted
        late = make_alert("b9", card_id="gftc:b9")
        late.related_card_ids = ["gftc:b3"]
        await again.send(late)                                          # same batch: same thread
        await again.decide("b1", "Hold by <@U1>: $90.00 frozen")       # edits the reply
        await again.flush(timeout=5)
        await again.close()
        posts = fake.posts()
        assert len(posts) == 3 and posts[-1].body["thread_ts"] == parent.ts
        updates = [c for c in fake.calls if c.method == "chat.update"]
        assert updates and updates[-1].ts == posts[1].ts and "frozen" in json.dumps(updates[-1].body)
