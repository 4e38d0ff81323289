"""Acting on alerts, end to end on the real broker: a bridge and a worker in approve mode, a local
Square (gift card activities, idempotent) and a local Slack (Web API, one post per second per
channel), both on their own event loop.

- A signed Hold press → exactly one ADJUST_DECREMENT of the whole balance; pressed again → none
  more; ``GET /holds/{card}`` says held; a redemption on the held card is itself an alert; the
  Slack message is edited with who decided and the outcome; Release → exactly one
  ADJUST_INCREMENT of the same amount, pressed twice; every step is on ``giftcard.holds`` and
  ``giftcard.audit``, and ``giftguard audit CARD`` prints the history.
- A forged press (wrong secret, or stale timestamp) → 401 and nothing on ``giftcard.feedback``.
- A burst of 50 alerts for one bulk batch → one thread, no 429 storm, none lost.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Iterator

import orjson
import pytest

from sinks.slack.blocks import ACTION_HOLD, ACTION_RELEASE
from streams import topics
from tests.fakes.slack_api import FakeSlackApi
from tests.fakes.square_api import FakeSquare
from tests.holds_helpers import (
    SIGNING_SECRET,
    LoopThread,
    alert,
    block_actions,
    press,
    produce,
    wait_for,
)
from tests.kafka_helpers import end_offsets, read_since
from tests.services import ROOT, Service, base_env, fakes_env, start_bridge, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]


class Stack:
    def __init__(self, bootstrap: str, loop: LoopThread, square: FakeSquare, slack: FakeSlackApi,
                 bridge: Service, worker: Service) -> None:
        self.bootstrap, self.loop, self.square, self.slack = bootstrap, loop, square, slack
        self.bridge, self.worker = bridge, worker

    def read(self, topic: str, since: dict, timeout: float = 2.0) -> list:
        return self.loop.run(read_since(self.bootstrap, topic, since, timeout=timeout))

    def ends(self, topic: str) -> dict:
        return self.loop.run(end_offsets(self.bootstrap, topic))

    def produce(self, topic: str, records: list) -> None:
        self.loop.run(produce(self.bootstrap, topic, records))

    def posts_with(self, text: str) -> list:
        return [c for c in self.slack.posts() if text in orjson.dumps(c.body).decode()]


@pytest.fixture(scope="module")
def stack(kafka, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    tmp = tmp_path_factory.mktemp("holds")
    loop = LoopThread()
    square = FakeSquare()
    slack = FakeSlackApi(limit=1, window=1.0)
    loop.run(square.__aenter__())
    loop.run(slack.start())
    bridge = start_bridge(kafka.bootstrap, tmp, SLACK_SIGNING_SECRET=SIGNING_SECRET)
    worker = start_worker(kafka.bootstrap, tmp, GIFTGUARD_HOLD_MODE="approve",
                          GIFTGUARD_LOG_LEVEL="INFO", **fakes_env(square=square, slack=slack))
    try:
        bridge.wait_healthy()
        worker.wait_healthy(timeout=90)
        yield Stack(kafka.bootstrap, loop, square, slack, bridge, worker)
    finally:
        worker.stop()
        bridge.stop()
        loop.run(slack.stop())
        loop.run(square.__aexit__(None, None, None))
        loop.stop()


def _button(post, action_id: str) -> str:
    for block in post.blocks:
        for element in block.get("elements", []):
            if element.get("action_id") == action_id:
                return element["value"]
    raise AssertionError(f"no {action_id} button in {post.blocks}")


def test_approve_hold_then_release_acts_exactly_once(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    card = f"gftc:hold-{run}"
    stack.square.add_card(card, 20000)
    feedback_before = stack.ends(topics.FEEDBACK)
    holds_before = stack.ends(topics.HOLDS)
    audit_before = stack.ends(topics.AUDIT)
    alerts_before = stack.ends(topics.ALERTS)
    a = alert(run, card)
    stack.produce(topics.ALERTS, [(card, a)])

    (post,) = wait_for(lambda: stack.posts_with(a["alert_id"]), 30, "the alert in Slack")
    assert "4321" in post.text and card not in post.text
    hold_value = _button(post, ACTION_HOLD)
    url = f"{stack.bridge.url}/slack/actions"

    # Forged: wrong secret, and a replay outside Slack's five-minute window.
    assert press(url, block_actions(ACTION_HOLD, hold_value), secret="not-the-secret")[0] == 401
    assert press(url, block_actions(ACTION_HOLD, hold_value),
                 timestamp=int(time.time()) - 600)[0] == 401

    status, seconds = press(url, block_actions(ACTION_HOLD, hold_value))
    assert status == 200 and seconds < 3.0
    wait_for(lambda: stack.square.activities_for(card, "ADJUST_DECREMENT"), 30, "the hold")
    assert press(url, block_actions(ACTION_HOLD, hold_value, user="U0SECOND"))[0] == 200
    held = wait_for(lambda: (lambda r: r if r[0] == 200 and orjson.loads(r[1])["held"] else None)(
        stack.worker.get(f"/holds/{card}")), 10, "GET /holds to say held")
    view = orjson.loads(held[1])
    assert view["amount_minor"] == 20000 and view["alert_id"] == a["alert_id"]

    # A redemption on the held card is itself an alert.
    redeem = {"event_id": f"square:{run}-redeem", "type": "redeem", "card_id": card,
              "location_id": "L-HOLDS", "amount_minor": 500, "currency": "USD",
              "occurred_at": "2026-11-20T16:00:00.000Z", "status": "completed"}
    stack.produce(topics.TRANSACTIONS, [(card, redeem)])
    wait_for(lambda: [r for r in stack.read(topics.ALERTS, alerts_before)
                      if "held_card_used" in orjson.loads(r.value)["rules"]], 30,
             "an alert for the redemption on the held card")

    # The message is edited: who decided, and the outcome.
    def edited() -> list:
        return [c for c in stack.slack.calls if c.method == "chat.update" and "frozen" in
                orjson.dumps(c.body).decode() and "U0ANALYST" in orjson.dumps(c.body).decode()]
    wait_for(edited, 15, "the message edited with the decision")

    release_value = _button(post, ACTION_RELEASE)
    for user in ("U0ANALYST", "U0SECOND"):
        assert press(url, block_actions(ACTION_RELEASE, release_value, user=user))[0] == 200
    wait_for(lambda: stack.square.activities_for(card, "ADJUST_INCREMENT"), 30, "the release")
    time.sleep(2.0)  # room for a second activity, if anything were to make one
    (dec,) = stack.square.activities_for(card, "ADJUST_DECREMENT")
    (inc,) = stack.square.activities_for(card, "ADJUST_INCREMENT")
    assert dec["adjust_decrement_activity_details"] == {
        "amount_money": {"amount": 20000, "currency": "USD"}, "reason": "SUSPICIOUS_ACTIVITY"}
    assert inc["adjust_increment_activity_details"]["amount_money"]["amount"] == 20000
    assert stack.square.cards[card].balance == 20000
    assert orjson.loads(stack.worker.get(f"/holds/{card}")[1])["held"] is False

    # Decisions on giftcard.feedback: the four signed presses, none of the forged ones.
    decisions = [orjson.loads(r.value) for r in stack.read(topics.FEEDBACK, feedback_before)
                 if r.key == card.encode()]
    assert [d["decision"] for d in decisions] == ["hold", "hold", "release", "release"]
    assert decisions[0]["user_id"] == "U0ANALYST" and decisions[0]["alert_id"] == a["alert_id"]

    holds = [orjson.loads(r.value) for r in stack.read(topics.HOLDS, holds_before)
             if r.key == card.encode()]
    assert [(h["action"], h["outcome"]) for h in holds] == [
        ("hold", "requested"), ("hold", "done"), ("release", "requested"), ("release", "done")]
    assert holds[1]["pos_activity_id"] == dec["id"]

    audit = [orjson.loads(r.value) for r in stack.read(topics.AUDIT, audit_before)
             if r.key == card.encode()]
    kinds = [(r["kind"], r["action"], r.get("outcome")) for r in audit]
    assert ("alert", "ask", "requested") in kinds
    assert ("decision", "hold", "requested") in kinds and ("pos", "hold", "done") in kinds
    assert ("pos", "release", "done") in kinds
    pos_hold = next(r for r in audit if r["kind"] == "pos" and r.get("outcome") == "done")
    assert pos_hold["who"] == "U0ANALYST" and pos_hold["why"]["score"] == 85.0
    assert pos_hold["model_version"] == "test-model" and pos_hold["pos"]["pos_activity_id"]

    out = subprocess.run([sys.executable, "-m", "streams.cli", "audit", card],
                         env=base_env(stack.bootstrap), cwd=ROOT, capture_output=True,
                         text=True, timeout=30)
    assert out.returncode == 0, out.stderr
    assert "U0ANALYST" in out.stdout and "done" in out.stdout and dec["id"] in out.stdout


def test_burst_of_50_alerts_for_one_batch_is_one_thread(stack: Stack) -> None:
    run = uuid.uuid4().hex[:8]
    cards = [f"gftc:batch-{run}-{i}" for i in range(50)]
    alerts = [alert(run, card, i, level="elevated", score=60.0, rules=["bulk_purchase"],
                    related_card_ids=cards[:i])  # as bulk_purchase: the batch so far
              for i, card in enumerate(cards)]
    rate_limited_before = stack.slack.statuses().count(429)
    stack.produce(topics.ALERTS, [(a["card_id"], a) for a in alerts])

    def delivered() -> list | None:
        posts = stack.posts_with(run)
        seen = orjson.dumps([p.body for p in posts]).decode()
        return posts if all(a["alert_id"] in seen for a in alerts) else None

    posts = wait_for(delivered, 60, "all 50 alerts in Slack")
    parents = [p for p in posts if not p.body.get("thread_ts")]
    assert len(parents) == 1, [p.text for p in posts]
    assert all(p.body["thread_ts"] == parents[0].ts for p in posts if p is not parents[0])
    assert len(posts) <= 8  # coalesced: not 50 messages
    for a in alerts:  # each exactly once ("-alert-1" must not match "-alert-10")
        pattern = re.compile(re.escape(a["alert_id"]) + r"(?!\d)")
        assert sum(bool(pattern.search(orjson.dumps(p.body).decode())) for p in posts) == 1
    assert stack.slack.statuses().count(429) - rate_limited_before <= 2
    assert stack.slack.max_posts_in_window("C0GIFTGUARD") <= 1


def test_no_raw_customer_or_payment_reference_leaves_the_raw_topic(stack: Stack) -> None:
    from streams.signatures import SQUARE_SIGNATURE_HEADER, square_signature
    from tests.services import SIGNATURE_KEY
    from tests.square_envelopes import envelope

    run = uuid.uuid4().hex[:8]
    instrument, customer = f"ccof:RAWPI{run}", f"RAWCUST{run}"
    gan = "7783320009876543"
    cards = [f"gftc:priv-{run}-{i}" for i in range(8)]
    bodies = [envelope("ACTIVATE", activity_id=f"act-{run}-{i}", card_id=card,
                       location_id="L-PRIV", amount=50000, balance=50000, gan=gan,
                       created_at=f"2026-11-20T18:{2 * i:02d}:00Z",
                       details={"buyer_payment_instrument_ids": [instrument],
                                "customer_id": customer})
              for i, card in enumerate(cards)]
    raw_before, tx_before = stack.ends(topics.WEBHOOKS_RAW), stack.ends(topics.TRANSACTIONS)
    alerts_before = stack.ends(topics.ALERTS)
    url = stack.bridge.env["SQUARE_WEBHOOK_URL"]
    for env in bodies:
        body = orjson.dumps(env)
        request = urllib.request.Request(
            f"{stack.bridge.url}/webhooks/square", data=body, method="POST",
            headers={SQUARE_SIGNATURE_HEADER: square_signature(SIGNATURE_KEY, url, body),
                     "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200

    alerts = wait_for(lambda: [r for r in stack.read(topics.ALERTS, alerts_before)
                               if run.encode() in r.key], 30, "a bulk purchase alert")
    ids = [orjson.loads(r.value)["alert_id"] for r in alerts]
    wait_for(lambda: all(stack.posts_with(i) for i in ids), 30, "the alerts in Slack")
    raw = b"".join(r.value for r in stack.read(topics.WEBHOOKS_RAW, raw_before)
                   if run.encode() in r.value)
    assert instrument.encode() in raw and customer.encode() in raw  # the raw topic is verbatim
    downstream = b"".join(
        [r.value for r in stack.read(topics.TRANSACTIONS, tx_before) if run.encode() in r.key]
        + [r.value for r in alerts]
        + [orjson.dumps(p.body) for i in ids for p in stack.posts_with(i)])
    for secret in (instrument, customer, f"RAWPI{run}", gan, gan[:12]):
        assert secret.encode() not in downstream, secret
    assert b"6543" in downstream  # the last four digits only
