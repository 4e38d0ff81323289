"""``POST /slack/actions`` on the bridge: an analyst pressed a button on an alert in Slack.

- The request must carry Slack's signature (``X-Slack-Signature``, ``X-Slack-Request-Timestamp``,
  verified with slack_sdk's :class:`~slack_sdk.signature.SignatureVerifier` and
  ``SLACK_SIGNING_SECRET``, five-minute window): otherwise **401** and nothing is written.
  Without ``SLACK_SIGNING_SECRET`` the route answers **404**.
- A ``block_actions`` payload with GiftGuard's buttons becomes one decision record per button on
  ``giftcard.feedback``, keyed by card id, acknowledged by Kafka (``acks=all``) before the answer:
  ``{"decision", "alert_id", "card_id", "location_id", "event_id", "rules", "is_fraud" (verdicts
  only), "user_id", "user_name", "team_id", "channel", "message_ts", "action_ts", "decided_at",
  "source": "slack"}``. The worker that owns the card executes it and edits the message.
- Slack wants an answer within 3 s: the write waits at most :data:`WRITE_TIMEOUT`; when Kafka does
  not take it in time the answer is **503** (Slack shows the analyst that it failed; pressing again
  is safe, decisions are idempotent). Anything else — other payload types, other buttons — is
  answered 200 and ignored.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import urllib.parse
from collections.abc import Callable
from typing import Any

import orjson
from aiohttp import web
from slack_sdk.signature import Clock, SignatureVerifier

from detectors.events import format_time
from sinks.slack.blocks import DECISIONS, parse_button_value
from streams import topics

log = logging.getLogger("giftguard.bridge")

#: Slack's limit is 3 s for the whole answer; leave room for the network.
WRITE_TIMEOUT = 2.0
MAX_BODY_BYTES = 256 * 1024


def _signed_bytes(verifier: SignatureVerifier, body: bytes, headers: Any) -> bool:
    """Slack's v0 signature check (as slack_sdk makes it) over raw bytes."""
    ts = headers.get("X-Slack-Request-Timestamp") or ""
    sig = headers.get("X-Slack-Signature") or ""
    if not ts.isdigit() or abs(verifier.clock.now() - int(ts)) > 60 * 5:
        return False
    base = b"v0:" + ts.encode() + b":" + body
    mac = hmac.new(verifier.signing_secret.encode(), base, hashlib.sha256).hexdigest()
    return hmac.compare_digest(f"v0={mac}", sig)

VERDICTS = {"confirm_fraud": True, "false_positive": False}


def decisions_from(payload: dict[str, Any], now: float) -> list[dict[str, Any]]:
    """The decision records a ``block_actions`` payload asks for (GiftGuard buttons only)."""
    if payload.get("type") != "block_actions":
        return []
    user = payload.get("user") or {}
    container = payload.get("container") or {}
    channel = (payload.get("channel") or {}).get("id") or container.get("channel_id")
    message_ts = container.get("message_ts") or (payload.get("message") or {}).get("ts")
    out = []
    for action in payload.get("actions") or []:
        decision = DECISIONS.get(action.get("action_id", ""))
        if decision is None:
            continue
        value = parse_button_value(str(action.get("value") or ""))
        rec: dict[str, Any] = {
            "decision": decision, **value,
            "user_id": user.get("id"), "user_name": user.get("username") or user.get("name"),
            "team_id": (payload.get("team") or {}).get("id"), "channel": channel,
            "message_ts": message_ts, "action_ts": action.get("action_ts"),
            "decided_at": format_time(now), "source": "slack"}
        if decision in VERDICTS:
            rec["is_fraud"] = VERDICTS[decision]
        out.append({k: v for k, v in rec.items() if v is not None})
    return out


class SlackActions:
    """The handler; ``producer`` returns the bridge's Kafka producer (None while connecting)."""

    def __init__(self, signing_secret: str | None, producer: Callable[[], Any],
                 clock: Clock | None = None, on_answer: Callable[[int], None] | None = None,
                 ) -> None:
        self.verifier = (SignatureVerifier(signing_secret, clock=clock or Clock())
                         if signing_secret else None)
        self.producer = producer
        self.clock = clock or Clock()
        self.on_answer = on_answer

    async def handle(self, request: web.Request) -> web.Response:
        response = await self._handle(request)
        if self.on_answer is not None:
            self.on_answer(response.status)
        return response

    async def _handle(self, request: web.Request) -> web.Response:
        if self.verifier is None:
            return web.json_response({"error": "Slack actions are not configured"}, status=404)
        if (request.content_length or 0) > MAX_BODY_BYTES:
            return web.json_response({"error": "body too large"}, status=413)
        try:
            body = await request.read()
        except web.HTTPRequestEntityTooLarge:
            return web.json_response({"error": "body too large"}, status=413)
        try:
            valid = self.verifier.is_valid_request(body, dict(request.headers))
        except UnicodeDecodeError:
            # slack_sdk decodes the body before checking it: a body that is not UTF-8 is
            # checked on its bytes here, and refused as malformed if Slack's signature holds.
            if _signed_bytes(self.verifier, body, request.headers):
                return web.json_response({"error": "body is not UTF-8"}, status=400)
            valid = False
        except (ValueError, TypeError):
            valid = False  # slack_sdk raises on a non-numeric timestamp
        if not valid:
            return web.json_response({"error": "invalid Slack signature"}, status=401)
        try:
            form = urllib.parse.parse_qs(body.decode(), strict_parsing=False)
            payload = orjson.loads(form["payload"][0])
        except (KeyError, IndexError, UnicodeDecodeError, orjson.JSONDecodeError):
            return web.json_response({"error": "expected a form with a JSON payload"},
                                     status=400)
        if not isinstance(payload, dict):
            return web.json_response({"error": "payload is not an object"}, status=400)
        records = decisions_from(payload, self.clock.now())
        if not records:
            return web.Response(status=200)
        producer = self.producer()
        if producer is None:
            return web.json_response({"error": "Kafka is not reachable"}, status=503)
        try:
            async with asyncio.timeout(WRITE_TIMEOUT):
                for rec in records:
                    key = str(rec.get("card_id") or rec["alert_id"]).encode()
                    await producer.send_and_wait(topics.FEEDBACK, orjson.dumps(rec), key=key)
        except Exception as exc:
            log.warning("could not write a Slack decision to Kafka: %r", exc)
            return web.json_response({"error": "could not record the decision"}, status=503)
        for rec in records:
            log.info("decision %s on alert %s by %s", rec["decision"], rec.get("alert_id"),
                     rec.get("user_id"), extra={"card_id": rec.get("card_id")})
        return web.Response(status=200)
