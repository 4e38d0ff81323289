"""Reliability 5: hostile HTTP against the bridge's two endpoints (property-based, hypothesis).

Fault: random and mutated bodies and headers: garbage, truncated and bit-flipped JSON, wrong
types in every field of a real Square envelope, bodies signed and then altered, forged and
missing signatures, oversize bodies, an old webhook replayed; and the same for the Slack
interactive endpoint (``/slack/actions``, Slack's v0 request signing).
Load: a few hundred generated requests per property, in-process (aiohttp's test server around
the real ``Bridge``) against the session broker.
Counted and asserted: no answer is a 5xx (Kafka is up), nothing is written to any topic
without a valid signature (end offsets of every topic the bridge writes do not move), authentic
malformed bodies get 400 (and a dead-letter record), oversize bodies 413, and a replayed webhook
is written once.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import time
from collections import Counter

import orjson
import pytest
from aiohttp.test_utils import TestClient, TestServer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streams import topics
from streams.bridge import MAX_BODY_BYTES, Bridge
from streams.settings import load_settings
from streams.signatures import SQUARE_SIGNATURE_HEADER, square_signature
from tests.kafka_helpers import end_offsets
from tests.square_envelopes import envelope

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

KEY = "hostile-signature-key"
URL = "https://giftguard.example.com/webhooks/square"
SLACK_SECRET = "hostile-slack-secret"
WRITTEN = (topics.WEBHOOKS_RAW, topics.TRANSACTIONS, topics.DEADLETTER, topics.FEEDBACK)
FAST = settings(max_examples=250, deadline=None, derandomize=True,
                suppress_health_check=list(HealthCheck))

headers_st = st.dictionaries(
    st.sampled_from([SQUARE_SIGNATURE_HEADER, "Content-Type", "Content-Encoding",
                     "X-Slack-Signature", "X-Slack-Request-Timestamp", "X-Forwarded-For",
                     "Transfer-Encoding-X", "X-Junk"]),
    st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=60),
    max_size=4)
json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1) | st.floats(allow_nan=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                 max_size=3),
    max_leaves=8)


def _paths(obj, prefix=()):
    """Every (path) to a value inside a JSON object, for mutation."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield (*prefix, k)
            yield from _paths(v, (*prefix, k))


def _mutate(env: dict, path: tuple, value) -> dict:
    env = orjson.loads(orjson.dumps(env))
    target = env
    for k in path[:-1]:
        target = target[k]
    if value == "__delete__":
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return env


BASE = envelope("REDEEM", activity_id="gcact_hostile", card_id="gftc:hostile", status="PENDING",
                amount=1234, balance=100)
PATHS = sorted(_paths(BASE))


class Harness:
    """The bridge in-process on its own event loop, driven from hypothesis' sync examples."""

    def __init__(self, bootstrap: str) -> None:
        self.loop = asyncio.new_event_loop()
        self.bootstrap = bootstrap
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.client: TestClient = self.run(self._start())

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    async def _start(self) -> TestClient:
        s = load_settings(kafka_bootstrap_servers=self.bootstrap,
                          square_webhook_signature_key=KEY, square_webhook_url=URL,
                          slack_signing_secret=SLACK_SECRET)
        client = TestClient(TestServer(Bridge(s).web_app()))
        await client.start_server()
        for _ in range(400):
            if (await client.get("/healthz")).status == 200:
                return client
            await asyncio.sleep(0.05)
        raise AssertionError("bridge not connected to Kafka")

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> int:
        async def go() -> int:
            async with self.client.post(path, data=body, headers=headers) as resp:
                await resp.read()
                return resp.status
        status = self.run(go())
        self.statuses[(path, status)] += 1
        return status

    def offsets(self) -> dict:
        return {t: self.run(end_offsets(self.bootstrap, t)) for t in WRITTEN}

    def close(self) -> None:
        self.run(self.client.close())
        self.loop.close()


def _slack_headers(body: bytes, secret: str = SLACK_SECRET, ts: int | None = None) -> dict:
    ts = int(time.time()) if ts is None else ts
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{ts}:".encode() + body,
                           hashlib.sha256).hexdigest()
    return {"X-Slack-Request-Timestamp": str(ts), "X-Slack-Signature": sig,
            "Content-Type": "application/x-www-form-urlencoded"}


def test_hostile_requests(bootstrap: str) -> None:
    h = Harness(bootstrap)
    try:
        before = h.offsets()

        # 1. Anything without a valid signature: 401 (or 413), never a write, never a 5xx.
        @FAST
        @given(body=st.binary(max_size=2048) | json_values.map(orjson.dumps),
               headers=headers_st, path=st.sampled_from(["/webhooks/square", "/slack/actions"]))
        def unsigned(body: bytes, headers: dict, path: str) -> None:
            assert h.post(path, body, headers) in (400, 401, 413)

        # 2. A real envelope signed, then altered by one byte or field: 401.
        @FAST
        @given(pos=st.integers(0, 10_000), byte=st.integers(0, 255))
        def altered(pos: int, byte: int) -> None:
            body = bytearray(orjson.dumps(BASE))
            signature = square_signature(KEY, URL, bytes(body))
            pos %= len(body)
            if body[pos] == byte:
                return
            body[pos] = byte
            assert h.post("/webhooks/square", bytes(body),
                          {SQUARE_SIGNATURE_HEADER: signature}) == 401

        unsigned()
        altered()
        assert h.offsets() == before, "something was written without a valid signature"

        # 3. Authentic but malformed: every field of a real envelope given a wrong type or
        #    deleted, and signed. 200 (a value the normalizer accepts) or 400, never a 5xx.
        @FAST
        @given(path=st.sampled_from(PATHS), value=json_values | st.just("__delete__"),
               n=st.integers(0, 10**9))
        def malformed(path: tuple, value, n: int) -> None:
            env = _mutate(BASE, path, value)
            if isinstance(env, dict) and isinstance(env.get("event_id"), str):
                env["event_id"] = f"{env['event_id']}-{n}"  # not a replay of an earlier one
            body = orjson.dumps(env)
            status = h.post("/webhooks/square", body,
                            {SQUARE_SIGNATURE_HEADER: square_signature(KEY, URL, body)})
            assert status in (200, 400), (path, value, status)

        # 4. Slack: signed forms with random payloads; stale or forged timestamps.
        @FAST
        @given(payload=json_values, stale=st.booleans(), raw=st.binary(max_size=200))
        def slack(payload, stale: bool, raw: bytes) -> None:
            body = b"payload=" + orjson.dumps(payload) if payload is not None else raw
            ts = int(time.time()) - (600 if stale else 0)
            status = h.post("/slack/actions", body, _slack_headers(body, ts=ts))
            assert status in ((401,) if stale else (200, 400)), (payload, stale, status)

        malformed()
        slack()

        # 5. Oversize bodies: 413, nothing written.
        mid = h.offsets()
        big = b"{" + b" " * MAX_BODY_BYTES + b"}"
        assert h.post("/webhooks/square", big,
                      {SQUARE_SIGNATURE_HEADER: square_signature(KEY, URL, big)}) == 413
        assert h.post("/slack/actions", big, _slack_headers(big)) == 413
        assert h.offsets() == mid

        # 6. An old webhook replayed many times is written once.
        old = orjson.dumps(envelope("REDEEM", activity_id="gcact_replayed",
                                    card_id="gftc:replayed", status="COMPLETED",
                                    event_id=f"evt-replayed-{time.time_ns()}"))
        sig = {SQUARE_SIGNATURE_HEADER: square_signature(KEY, URL, old)}
        tx_before = h.offsets()[topics.TRANSACTIONS]
        assert [h.post("/webhooks/square", old, sig) for _ in range(20)] == [200] * 20
        tx_after = h.offsets()[topics.TRANSACTIONS]
        assert sum(tx_after.values()) - sum(tx_before.values()) == 1

        assert not [k for k in h.statuses if k[1] >= 500], h.statuses
        print(f"\nhostile HTTP: {sum(h.statuses.values())} requests; answers "
              f"{dict(sorted(h.statuses.items()))}")
    finally:
        h.close()
