"""Downstream outages: Slack and Square down for a while; alerts and holds wait and complete, once.

**Fault.** While the webhooks arrive, both downstream APIs fail (the fakes' outage switches,
tests/fakes/outage.py), from the first webhook until 2 s after the first hold failed past the
Square client's own retries (4 requests over at most about 5 s): about 7 s, at most 22 s.

- Square's gift card API (tests/fakes/square_api.py): connections refused for 4 s (the process is
  down), then every request answered 500 until the first hold has failed, then 429 with
  ``Retry-After: 1`` for the last 2 s. The first hold must be recorded ``failed``, counted, noted
  in Slack and retried by the worker's ``hold-retries`` timer; the holds decided after it ride out
  the 429s inside the client's retries, which the worker counts too.
- Slack's Web API (tests/fakes/slack_api.py): connections refused for 3 s, then 503 (for at most
  3 s), then 429 ``ratelimited`` with ``Retry-After: 1`` until 2 s after the first hold failed.

**Load.** 52 signed Square webhooks through a real bridge to a real worker (hold mode ``auto``),
in two waves 3 s apart, both inside the outages: 6 cards drained 95% on the other side of the
country 7 minutes after activation (one high alert each, score ≥ 90: an automatic hold each) and
20 ordinary cards spent in the store that sold them (no alert). So: 52 events, 6 alerts, 6 holds.

**Counted.** Square: activities per idempotency key (exactly 1), ADJUST_DECREMENTs per card
(exactly 1, of the whole balance), requests answered 500/429 (refused connections never reach the
fake; its listener records when it stopped and started listening). ``giftcard.holds``: ``done``
records per card (exactly 1) and ``failed`` ones. Slack: accepted ``chat.postMessage`` calls
showing each alert (exactly 1), the message of each held card showing the hold, failed-hold notes
(one per card whose hold failed), requests answered 503/429. The worker's ``/metrics`` (deltas):
``giftguard_events_total`` = 52, ``giftguard_alerts_total`` = 6,
``giftguard_holds_total{action="hold"}`` ``done`` = 6 and ``failed`` = the failed records,
``giftguard_holds_failed`` (failed and not done yet) at least 1 while the hold waits, 0 after,
``giftguard_pos_retries_total`` ≥ 3 (the failed hold's 3 retries; by reason ``network``, ``5xx``,
``429``), ``giftguard_slack_messages_total`` ``retried`` ≥ 1, ``sent`` = alerts + notes,
``failed`` = 0. The test prints these figures and both fakes' request timelines (``-s``).
"""

from __future__ import annotations

import time
import uuid
from collections import Counter
from pathlib import Path

import aiohttp
import orjson
import pytest

from streams import topics
from streams.signatures import SQUARE_SIGNATURE_HEADER, square_signature
from tests.fakes.outage import REFUSE
from tests.fakes.slack_api import FakeSlackApi
from tests.fakes.square_api import FakeSquare
from tests.holds_helpers import LoopThread, wait_for
from tests.kafka_helpers import end_offsets, read_since
from tests.services import (
    SIGNATURE_KEY,
    Service,
    fakes_env,
    metric_sum,
    start_bridge,
    start_worker,
)
from tests.square_envelopes import envelope

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

LOCATIONS = [
    {"location_id": "NYC-5TH", "name": "New York 5th Ave", "lat": 40.7536, "lon": -73.9832,
     "timezone": "America/New_York"},
    {"location_id": "LA-DTLA", "name": "Los Angeles Downtown", "lat": 34.0407, "lon": -118.2468,
     "timezone": "America/Los_Angeles"},
]
DRAINED = 6          # cards drained: one high alert and one automatic hold each
ORDINARY = 20        # cards spent where they were sold: no alert
BALANCE_LEFT = 1000  # what a drained card still holds at Square: the hold freezes it
WAVE_GAP = 3.0       # seconds between the two waves of webhooks
MAX_OUTAGE = 20.0    # seconds: the longest the outages may last before the last 2 s of 429s


def _t(minute: float) -> str:
    total = int(minute * 60)
    return f"2026-11-20T{15 + total // 3600:02d}:{total // 60 % 60:02d}:{total % 60:02d}Z"


def stories(run: str, drained: range, ordinary: range) -> tuple[list[str], list[dict]]:
    """Webhooks for the drained cards and the ordinary ones numbered so; the drained card ids."""
    cards, bodies = [], []
    for i in drained:
        card = f"gftc:out-{run}-{i}"
        cards.append(card)
        bodies += [
            envelope("ACTIVATE", activity_id=f"act-{run}-{i}a", card_id=card,
                     location_id="NYC-5TH", amount=20000, balance=20000, created_at=_t(3 * i),
                     details={"buyer_payment_instrument_ids": [f"ccof:{run}-{i}"]}),
            envelope("REDEEM", activity_id=f"act-{run}-{i}r", card_id=card, location_id="LA-DTLA",
                     amount=19000, balance=BALANCE_LEFT, created_at=_t(3 * i + 7),
                     status="COMPLETED"),
        ]
    for i in ordinary:
        card = f"gftc:ok-{run}-{i}"
        bodies += [
            envelope("ACTIVATE", activity_id=f"act-{run}-k{i}a", card_id=card,
                     location_id="NYC-5TH", amount=5000, balance=5000, created_at=_t(2 * i),
                     details={"buyer_payment_instrument_ids": [f"ccof:{run}-k{i}"]}),
            envelope("REDEEM", activity_id=f"act-{run}-k{i}r", card_id=card,
                     location_id="NYC-5TH", amount=1500, balance=3500, created_at=_t(2 * i + 50),
                     status="COMPLETED"),
        ]
    return cards, bodies


async def post_all(bridge: Service, bodies: list[dict]) -> list[int]:
    """POST signed webhooks to the bridge, one after the other; their HTTP statuses."""
    url = bridge.env["SQUARE_WEBHOOK_URL"]
    statuses = []
    async with aiohttp.ClientSession() as session:
        for env in bodies:
            body = orjson.dumps(env)
            headers = {SQUARE_SIGNATURE_HEADER: square_signature(SIGNATURE_KEY, url, body),
                       "Content-Type": "application/json"}
            async with session.post(f"{bridge.url}/webhooks/square", data=body,
                                    headers=headers) as resp:
                statuses.append(resp.status)
    return statuses


def test_slack_and_square_down_alerts_and_holds_complete_once(kafka, tmp_path: Path) -> None:
    loop = LoopThread()
    square = FakeSquare()
    slack = FakeSlackApi(limit=1, window=1.0)  # Slack's own pace: one post per second
    loop.run(square.__aenter__())
    loop.run(slack.start())
    locations = tmp_path / "locations.json"
    locations.write_bytes(orjson.dumps(LOCATIONS))
    bridge = start_bridge(kafka.bootstrap, tmp_path)
    worker = start_worker(kafka.bootstrap, tmp_path, GIFTGUARD_HOLD_MODE="auto",
                          GIFTGUARD_LOCATIONS=str(locations),
                          GIFTGUARD_LOG_LEVEL="INFO", **fakes_env(square=square, slack=slack))
    try:
        bridge.wait_healthy()
        worker.wait_healthy(timeout=90)
        run = uuid.uuid4().hex[:8]
        cards1, wave1 = stories(run, range(DRAINED // 2), range(ORDINARY // 2))
        cards2, wave2 = stories(run, range(DRAINED // 2, DRAINED),
                                range(ORDINARY // 2, ORDINARY))
        drained = cards1 + cards2
        for card in drained:
            square.add_card(card, BALANCE_LEFT)
        # Warm up: the worker scores events (its tables recovered) before the clock starts.
        _, warm = stories(f"warm-{run}", range(0), range(1))
        assert loop.run(post_all(bridge, warm)) == [200] * len(warm)
        wait_for(lambda: metric_sum(worker.get("/metrics")[1].decode(),
                                    "giftguard_events_total") >= len(warm), 30,
                 "the worker to score the warm-up events")
        baseline = worker.get("/metrics")[1].decode()
        alerts_before = loop.run(end_offsets(kafka.bootstrap, topics.ALERTS))
        holds_before = loop.run(end_offsets(kafka.bootstrap, topics.HOLDS))

        # -- the outages, and the webhooks inside them -------------------------------------------
        started = time.monotonic()
        square.outage(seconds=4, status=REFUSE)
        square.outage(seconds=MAX_OUTAGE, status=500, after=4)   # ended below
        slack.outage(seconds=3, status=REFUSE)
        slack.outage(seconds=3, status=503, after=3)
        slack.outage(seconds=MAX_OUTAGE, status=429, retry_after=1, after=6)   # ended below
        statuses = loop.run(post_all(bridge, wave1))
        time.sleep(max(0.0, started + WAVE_GAP - time.monotonic()))
        statuses += loop.run(post_all(bridge, wave2))
        assert statuses == [200] * (len(wave1) + len(wave2))
        n_events = len(statuses)
        failed_before = metric_sum(baseline, "giftguard_holds_total", outcome="failed")
        wait_for(lambda: metric_sum(worker.get("/metrics")[1].decode(), "giftguard_holds_total",
                                    outcome="failed") > failed_before,
                 started + MAX_OUTAGE - time.monotonic(), "the first hold to fail", interval=0.1)
        first_failure = time.monotonic() - started
        # The failed hold shows as open (the retry timer's scan of the registry) while it waits.
        wait_for(lambda: metric_sum(worker.get("/metrics")[1].decode(),
                                    "giftguard_holds_failed") >= 1, 12,
                 "giftguard_holds_failed to show the failed hold", interval=0.2)
        square.end_outage()
        square.outage(seconds=2, status=429, retry_after="1")
        slack.end_outage()
        slack.outage(seconds=2, status=429, retry_after=1)

        # -- wait until everything completed once both are back ----------------------------------
        def alerts() -> list[dict]:
            records = loop.run(read_since(kafka.bootstrap, topics.ALERTS, alerts_before,
                                          timeout=1))
            return [a for a in (orjson.loads(r.value) for r in records) if run in a["card_id"]]

        def holds() -> list[dict]:
            records = loop.run(read_since(kafka.bootstrap, topics.HOLDS, holds_before, timeout=1))
            return [h for h in (orjson.loads(r.value) for r in records) if run in h["card_id"]]

        def shown(alert_id: str) -> str:
            """What Slack shows now for ``alert_id``: its last post or edit ("" if none)."""
            calls = [c for c in slack.calls if alert_id in orjson.dumps(c.blocks).decode()]
            return orjson.dumps(calls[-1].blocks).decode() if calls else ""

        found = wait_for(lambda: (lambda a: a if {x["card_id"] for x in a} >= set(drained)
                                  else None)(alerts()), 30, "an alert for every drained card")
        ids = {a["alert_id"] for a in found}
        wait_for(lambda: all(square.activities_for(c) for c in drained), 45,
                 "a hold at Square on every drained card")
        wait_for(lambda: {h["card_id"] for h in holds() if h["outcome"] == "done"} >= set(drained),
                 20, "a done record on giftcard.holds for every drained card")
        wait_for(lambda: all("frozen" in shown(i) for i in ids), 40,
                 "every alert in Slack, showing its hold")
        wait_for(lambda: time.monotonic() - slack.calls[-1].at > 2.5, 30,
                 "Slack to go quiet (no call for 2.5 s: nothing left queued)")
        completed = time.monotonic() - started

        def everything_scored() -> str | None:
            text = worker.get("/metrics")[1].decode()
            scored = (metric_sum(text, "giftguard_events_total")
                      - metric_sum(baseline, "giftguard_events_total"))
            return text if scored >= n_events else None

        metrics = wait_for(everything_scored, 20, "the worker to count every event")
        # ... and as not open any more once the retry did it (the next scan, within 5 s).
        wait_for(lambda: metric_sum(worker.get("/metrics")[1].decode(),
                                    "giftguard_holds_failed") == 0, 12,
                 "giftguard_holds_failed back to 0 after the retry", interval=0.2)
        alerts_now, holds_now = alerts(), holds()

        def delta(name: str, **labels: str) -> float:
            return metric_sum(metrics, name, **labels) - metric_sum(baseline, name, **labels)

        # -- the outages happened, and were over ------------------------------------------------
        square_answers = Counter(r.status for r in square.requests if r.at >= started)
        slack_answers = Counter(status for t, (_, status, _) in
                                zip(slack.request_times, slack.requests, strict=True)
                                if t >= started)
        assert not square.outages.pending and not slack.outages.pending
        assert square.listener is not None and slack.listener is not None
        assert [what for _, what in square.listener.changes] == ["closed", "opened"]
        assert [what for _, what in slack.listener.changes] == ["closed", "opened"]
        assert square_answers[500] + square_answers[429] >= 1, square_answers
        assert slack_answers[503] + slack_answers[429] >= 1, slack_answers

        # -- alerts: one for every drained card, none for the ordinary ones ---------------------
        assert {a["card_id"] for a in alerts_now} == set(drained), alerts_now
        assert {a["alert_id"] for a in alerts_now} == ids and len(ids) == DRAINED
        assert all(a["level"] == "high" and a["action"] == "hold" for a in alerts_now)

        # -- Square: one activity per idempotency key, one hold per card, the whole balance ------
        mine = [a for a in square.activities if run in a["gift_card_id"]]
        per_key = square.activities_per_key()
        assert len(mine) == DRAINED and all(per_key[a["_idempotency_key"]] == 1 for a in mine)
        for card in drained:
            (activity,) = square.activities_for(card)
            assert activity["type"] == "ADJUST_DECREMENT"
            assert activity["adjust_decrement_activity_details"]["amount_money"] == {
                "amount": BALANCE_LEFT, "currency": "USD"}
            assert square.cards[card].balance == 0

        # -- giftcard.holds: exactly one done per card, the failures recorded before it ---------
        outcomes = {card: [h["outcome"] for h in holds_now if h["card_id"] == card]
                    for card in drained}
        assert all(o.count("done") == 1 and o[-1] == "done" for o in outcomes.values()), outcomes
        failed_cards = {card for card, o in outcomes.items() if "failed" in o}
        n_failed = sum(o.count("failed") for o in outcomes.values())
        assert failed_cards, f"no hold failed: the Square outage ended too soon {outcomes}"
        assert {h["idempotency_key"] for h in holds_now if h["outcome"] == "done"} == {
            a["_idempotency_key"] for a in mine}

        # -- Slack: each alert in exactly one post, showing its hold; one note per failed hold --
        assert slack.posts_per_alert(ids) == dict.fromkeys(ids, 1)
        card_of_thread = {p.ts: a["card_id"] for a in alerts_now for p in slack.posts()
                          if a["alert_id"] in orjson.dumps(p.blocks).decode()}
        notes = [p for p in slack.posts() if p.body.get("thread_ts") in card_of_thread
                 and "Hold of card" in p.text and "failed" in p.text]
        assert sorted(card_of_thread[p.body["thread_ts"]] for p in notes) == sorted(failed_cards)
        updates = [c for c in slack.calls if c.method == "chat.update"
                   and any(i in orjson.dumps(c.blocks).decode() for i in ids)]

        # -- the worker's metrics saw it all -----------------------------------------------------
        assert delta("giftguard_events_total") == n_events
        assert delta("giftguard_alerts_total") == DRAINED
        assert delta("giftguard_holds_total", action="hold", outcome="done") == DRAINED
        assert delta("giftguard_holds_total", action="hold", outcome="failed") == n_failed
        retries = {reason: delta("giftguard_pos_retries_total", pos="square", reason=reason)
                   for reason in ("network", "5xx", "429")}
        assert sum(retries.values()) >= 3, retries  # at least the failed hold's three
        assert delta("giftguard_slack_messages_total", outcome="retried") >= 1
        assert delta("giftguard_slack_messages_total", outcome="failed") == 0
        assert delta("giftguard_slack_messages_total", outcome="sent") == DRAINED + len(notes)

        print(f"\noutages: {n_events} events in; {len(alerts_now)} alert records, {len(ids)} "
              f"alerts; {len(mine)} Square activities for {DRAINED} holds, {n_failed} failed "
              f"record(s) on {len(failed_cards)} card(s) before done; Square answered "
              f"{dict(square_answers)} besides refused connections; Slack: {DRAINED} alert posts "
              f"+ {len(notes)} note(s), {len(updates)} edit(s), answered {dict(slack_answers)} "
              f"besides refused connections; metrics: pos retries {retries}, holds failed "
              f"{delta('giftguard_holds_total', outcome='failed'):g} done "
              f"{delta('giftguard_holds_total', outcome='done'):g}, slack retried "
              f"{delta('giftguard_slack_messages_total', outcome='retried'):g} sent "
              f"{delta('giftguard_slack_messages_total', outcome='sent'):g}; first hold "
              f"failed at {first_failure:.1f}s, both back at {first_failure + 2:.1f}s, all done "
              f"{completed:.1f}s after the outages began")
        print("Square (s, method, status; refused attempts are not seen):",
              [(round(r.at - started, 1), r.method, r.status) for r in square.requests
               if r.at >= started])
        print("Slack (s, method, status):",
              [(round(t - started, 1), m, status) for t, (m, status, _) in
               zip(slack.request_times, slack.requests, strict=True) if t >= started])
    except BaseException:
        print(worker.log()[-6000:])
        raise
    finally:
        worker.stop()
        bridge.stop()
        loop.run(slack.stop())
        loop.run(square.__aexit__(None, None, None))
        loop.stop()
