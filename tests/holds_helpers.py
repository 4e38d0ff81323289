"""Shared pieces of the hold and Slack-action tests: fakes on their own event loop, signed Slack
button presses, and records written straight to the topics a worker reads."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any, TypeVar

import orjson
from aiokafka import AIOKafkaProducer

T = TypeVar("T")

SIGNING_SECRET = "slack-signing-secret-for-tests"


class LoopThread:
    """An event loop in a thread, so local fake servers answer while a test blocks."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Any, timeout: float = 30.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def wait_for(check: Callable[[], T], timeout: float = 30.0, what: str = "condition",
             interval: float = 0.2) -> T:
    """Poll ``check`` until it returns something truthy; AssertionError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


def alert(run: str, card_id: str, n: int = 0, **changes: Any) -> dict[str, Any]:
    """An alert as the score agents write it to ``giftcard.alerts``."""
    data = {"alert_id": f"{run}-alert-{n}", "card_id": card_id, "related_card_ids": [],
            "location_id": "L-HOLDS", "event_id": f"square:{run}-ev-{n}",
            "occurred_at": "2026-11-20T15:00:00.000Z", "decided_at": "2026-11-20T15:00:01.000Z",
            "score": 85.0, "level": "high", "rules": ["rapid_drain"],
            "reasons": ["redeemed $190 of $200 7 minutes after activation"],
            "amount_at_risk_minor": 19000, "action": "alert", "model_version": "test-model",
            "gan_last4": "4321"}
    data.update(changes)
    return data


async def produce(bootstrap: str, topic: str, records: list[tuple[str, dict[str, Any]]]) -> None:
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for key, value in records:
            await producer.send_and_wait(topic, orjson.dumps(value), key=key.encode())
    finally:
        await producer.stop()


def block_actions(action_id: str, value: str, user: str = "U0ANALYST") -> dict[str, Any]:
    """A ``block_actions`` payload as Slack sends it when a button is pressed."""
    return {"type": "block_actions", "user": {"id": user, "username": "ana", "team_id": "T1"},
            "team": {"id": "T1"}, "channel": {"id": "C0GIFTGUARD"},
            "container": {"type": "message", "message_ts": "1.000001", "channel_id": "C0GIFTGUARD"},
            "actions": [{"type": "button", "action_id": action_id, "value": value,
                         "block_id": "giftguard_actions", "action_ts": f"{time.time():.6f}"}]}


def press(url: str, payload: dict[str, Any], secret: str = SIGNING_SECRET,
          timestamp: int | None = None) -> tuple[int, float]:
    """POST a signed interactivity request; (HTTP status, seconds to answer)."""
    body = urllib.parse.urlencode({"payload": orjson.dumps(payload).decode()}).encode()
    ts = str(int(time.time()) if timestamp is None else timestamp)
    signature = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body,
                                 hashlib.sha256).hexdigest()
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/x-www-form-urlencoded",
        "X-Slack-Request-Timestamp": ts, "X-Slack-Signature": signature})
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=10) as resp:
            return resp.status, time.monotonic() - started
    except urllib.error.HTTPError as exc:
        return exc.code, time.monotonic() - started
