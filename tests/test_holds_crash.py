"""Holds survive crashes and outages: still exactly one Square activity, nothing dropped.

1. The worker is killed (SIGKILL, via the ``before_pos_call`` failpoint) after it pinned the hold
   and before it called Square; it is restarted with an empty local store (a new data directory,
   so the registry comes back from its changelog). Square then applies the restarted worker's
   call but answers 500 (the ambiguous case). Result: exactly one ADJUST_DECREMENT.
2. Square answers 503 to everything for a while: the hold is recorded ``failed`` on
   ``giftcard.holds``, counted, and retried by the worker until it is ``done`` — once.
"""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path

import orjson
import pytest

from streams import topics
from tests.fakes.square_api import FakeSquare
from tests.holds_helpers import LoopThread, produce, wait_for
from tests.kafka_helpers import end_offsets, read_since
from tests.services import fakes_env, start_worker

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


def _decision(run: str, card: str, n: int) -> dict:
    return {"decision": "hold", "alert_id": f"{run}-alert-{n}", "card_id": card,
            "location_id": "L-CRASH", "user_id": "U0ANALYST", "source": "slack",
            "decided_at": "2026-11-20T15:00:00.000Z"}


def test_killed_before_the_call_and_square_failing_still_one_activity(
        kafka, tmp_path: Path) -> None:
    loop = LoopThread()
    square = FakeSquare()
    loop.run(square.__aenter__())
    run = uuid.uuid4().hex[:8]
    env = dict(GIFTGUARD_HOLD_MODE="approve", GIFTGUARD_LOG_LEVEL="INFO",
               **fakes_env(square=square))
    worker = start_worker(kafka.bootstrap, tmp_path, name="crashing",
                          GIFTGUARD_FAILPOINT="before_pos_call", **env)
    try:
        worker.wait_healthy(timeout=90)
        holds_before = loop.run(end_offsets(kafka.bootstrap, topics.HOLDS))
        card = f"gftc:crash-{run}"
        square.add_card(card, 15000)
        loop.run(produce(kafka.bootstrap, topics.FEEDBACK, [(card, _decision(run, card, 0))]))
        wait_for(lambda: worker.process.poll() is not None, 90, "the failpoint to kill the worker")
        assert worker.process.returncode == -9
        assert square.activities_for(card) == []  # pinned, not called

        square.fail_next(1, status=500, after_commit=True)  # applied, but the answer is lost
        worker = start_worker(kafka.bootstrap, tmp_path, name="restarted", **env)
        worker.wait_healthy(timeout=90)
        wait_for(lambda: square.activities_for(card, "ADJUST_DECREMENT"), 120,
                 "the hold after the restart")
        time.sleep(1.0)
        (activity,) = square.activities_for(card)
        assert activity["adjust_decrement_activity_details"]["amount_money"]["amount"] == 15000
        posts = [r for r in square.posts() if r.body and r.body["gift_card_activity"][
            "gift_card_id"] == card]
        assert len(posts) >= 2 and len({r.body["idempotency_key"] for r in posts}) == 1

        # Square down for a while: failed, recorded, retried, done — once.
        card2 = f"gftc:outage-{run}"
        square.add_card(card2, 8000)
        square.fail_next(6, status=503)
        loop.run(produce(kafka.bootstrap, topics.FEEDBACK, [(card2, _decision(run, card2, 1))]))
        wait_for(lambda: square.activities_for(card2, "ADJUST_DECREMENT"), 60,
                 "the hold after the outage")

        def outcomes(c: str) -> list[str]:
            records = loop.run(read_since(kafka.bootstrap, topics.HOLDS, holds_before, timeout=2))
            return [orjson.loads(r.value)["outcome"] for r in records if r.key == c.encode()]

        seen = wait_for(lambda: (lambda o: o if "done" in o else None)(outcomes(card2)), 40,
                        "the done record")
        assert seen[0] == "failed" and seen[-1] == "done", seen
        assert len(square.activities_for(card2)) == 1
        assert outcomes(card).count("done") == 1
        metrics = worker.get("/metrics")[1].decode()
        failed = sum(float(m) for m in re.findall(
            r'^giftguard_holds_total\{[^}]*outcome="failed"[^}]*\} ([0-9.e+]+)$', metrics, re.M))
        assert failed >= 1
    finally:
        worker.stop()
        loop.run(square.__aexit__(None, None, None))
        loop.stop()
