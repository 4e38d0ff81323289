"""A local stand-in for Slack's Web API, for the part GiftGuard uses.

It listens on 127.0.0.1 (a free port) and answers ``POST /api/chat.postMessage`` and
``POST /api/chat.update`` as Slack does, with JSON or form bodies (slack_sdk sends JSON for these):

- ``Authorization: Bearer <token>`` (or a ``token`` form field) must match, else
  ``{"ok": false, "error": "invalid_auth"}`` (``not_authed`` when missing), HTTP 200 like Slack;
- an unknown channel answers ``channel_not_found``; a wrong ``ts`` on update ``message_not_found``;
- an accepted call is recorded in :attr:`FakeSlackApi.calls` and answered
  ``{"ok": true, "channel": <id>, "ts": "<unique>", "message": {...}}``;
- ``chat.postMessage`` is limited per channel to ``limit`` messages in any ``window`` seconds
  (Slack: about 1 per second); beyond that it answers HTTP 429 with an integer ``Retry-After``
  header (the seconds until the window frees, at least 1, or ``retry_after`` when set) and
  ``{"ok": false, "error": "ratelimited"}``. ``rate_limited=False`` turns this off;
- :meth:`FakeSlackApi.outage` makes every call answer 500 (or 503, or 429 with ``Retry-After``) for
  a number of seconds or calls, or, with ``status=REFUSE``, stops listening for a number of seconds
  (connections refused); windows can be scheduled back to back with ``after``
  (tests/fakes/outage.py);
- :meth:`FakeSlackApi.posts_per_alert` counts the accepted posts that show each alert.

Use it as an async context manager (the ``fake_slack`` fixture in tests/test_slack_sink.py does);
give slack_sdk ``fake.base_url`` (``http://127.0.0.1:<port>/api/``).
"""

from __future__ import annotations

import itertools
import json
import math
import time
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

from tests.fakes.outage import REFUSE, Listener, Outages, drop

TOKEN = "xoxb-giftguard-test"
CHANNEL_ID = "C0GIFTGUARD"
CHANNEL_NAME = "giftguard-alerts"


@dataclass(frozen=True, slots=True)
class Call:
    """One accepted call: the method, the channel id, the body as parsed, the answer's ts."""

    method: str
    channel: str
    body: dict[str, Any]
    ts: str
    at: float  # time.monotonic() when accepted

    @property
    def blocks(self) -> list[dict[str, Any]]:
        """The blocks sent, parsed from a JSON string if the client sent them as one."""
        blocks = self.body.get("blocks") or []
        return json.loads(blocks) if isinstance(blocks, str) else blocks

    @property
    def text(self) -> str:
        """The text fallback sent."""
        return str(self.body.get("text") or "")


@dataclass
class FakeSlackApi:
    """The fake server. Every attribute can be changed while it runs.

    Args:
        token: the bot token it accepts.
        channels: channel id -> name; a call may name a channel by either (``#name`` too).
        rate_limited: answer 429 beyond ``limit`` posts per ``window`` seconds per channel.
        limit: posts allowed per channel in any ``window`` seconds.
        window: the rate-limit window in seconds (1.0 as Slack; shorter in fast tests).
        retry_after: the ``Retry-After`` value to send (integer seconds); computed when None.
    """

    token: str = TOKEN
    channels: dict[str, str] = field(default_factory=lambda: {CHANNEL_ID: CHANNEL_NAME})
    rate_limited: bool = True
    limit: int = 1
    window: float = 1.0
    retry_after: int | None = None

    calls: list[Call] = field(default_factory=list, init=False)
    #: Every request seen, accepted or not: (method, HTTP status, Slack error code or None).
    requests: list[tuple[str, int, str | None]] = field(default_factory=list, init=False)
    #: When each of :attr:`requests` arrived (time.monotonic()), in the same order.
    request_times: list[float] = field(default_factory=list, init=False)
    port: int = field(default=0, init=False)

    _recent: defaultdict[str, deque[float]] = field(
        default_factory=lambda: defaultdict(deque), init=False, repr=False)
    _ts: itertools.count = field(default_factory=lambda: itertools.count(1), init=False, repr=False)
    outages: Outages = field(default_factory=Outages, init=False, repr=False)
    _runner: web.AppRunner | None = field(default=None, init=False, repr=False)
    listener: Listener | None = field(default=None, init=False, repr=False)

    # -- lifecycle --------------------------------------------------------------------------------

    async def start(self) -> FakeSlackApi:
        """Listen on 127.0.0.1 on a free port."""
        app = web.Application()
        app.router.add_post("/api/{method}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.listener = Listener(self._runner, self.outages)
        self.port = await self.listener.start()
        return self

    async def stop(self) -> None:
        """Stop listening."""
        if self.listener is not None:
            await self.listener.stop()
            self.listener = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        """What to give slack_sdk as ``base_url``."""
        return f"http://127.0.0.1:{self.port}/api/"

    # -- switches for tests -----------------------------------------------------------------------

    def outage(self, *, seconds: float | None = None, calls: int | None = None,
               status: int = 500, retry_after: int | None = None, after: float = 0.0) -> None:
        """Answer ``status`` to every call for ``seconds`` or for the next ``calls``, starting
        ``after`` seconds from now. 429 answers ``ratelimited`` with ``Retry-After``
        (``retry_after``, else 1); ``status=REFUSE`` refuses connections for ``seconds``."""
        if status == 429 and retry_after is None:
            retry_after = 1
        self.outages.add(status, seconds=seconds, calls=calls, after=after,
                         retry_after=retry_after)

    def end_outage(self) -> None:
        """Answer normally again (scheduled outages too)."""
        self.outages.clear()

    # -- what tests look at -----------------------------------------------------------------------

    def posts(self, channel: str | None = None) -> list[Call]:
        """Accepted ``chat.postMessage`` calls, for one channel id or all."""
        return [c for c in self.calls
                if c.method == "chat.postMessage" and (channel is None or c.channel == channel)]

    def statuses(self, method: str = "chat.postMessage") -> list[int]:
        """The HTTP status of every request to ``method``, in order."""
        return [status for m, status, _ in self.requests if m == method]

    def posts_per_alert(self, alert_ids: list[str] | set[str]) -> dict[str, int]:
        """For each alert id: how many accepted ``chat.postMessage`` calls show it (an alert is
        shown in its blocks: the button values and the context line carry the id)."""
        bodies = [json.dumps(c.blocks) for c in self.posts()]
        return {a: sum(1 for b in bodies if _mentions(b, a)) for a in alert_ids}

    def max_posts_in_window(self, channel: str, window: float | None = None) -> int:
        """The most accepted posts to ``channel`` seen in any ``window`` seconds."""
        window = self.window if window is None else window
        times = [c.at for c in self.posts(channel)]
        return max((sum(1 for t in times[i:] if t - start < window)
                    for i, start in enumerate(times)), default=0)

    # -- the API ----------------------------------------------------------------------------------

    async def _handle(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        body = await _read_body(request)

        outage = self.outages.current()
        if outage is not None and outage.status == REFUSE:
            self._seen(method, REFUSE, "refused")
            return drop(request)
        if outage is not None and outage.status == 429:
            self._seen(method, 429, "ratelimited")
            return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                     headers={"Retry-After": outage.retry_after or "1"})
        if outage is not None:
            self._seen(method, outage.status, None)
            headers = {"Retry-After": outage.retry_after} if outage.retry_after else None
            return web.Response(status=outage.status, text="upstream unavailable",
                                content_type="text/html", headers=headers)
        if method not in ("chat.postMessage", "chat.update"):
            return self._error(method, "unknown_method", status=404)

        auth = request.headers.get("Authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else body.get(
            "token")
        if not token:
            return self._error(method, "not_authed")
        if token != self.token:
            return self._error(method, "invalid_auth")

        channel = self._channel_id(str(body.get("channel") or ""))
        if channel is None:
            return self._error(method, "channel_not_found")
        if not body.get("text") and not body.get("blocks"):
            return self._error(method, "no_text")

        now = time.monotonic()
        if method == "chat.update":
            ts = str(body.get("ts") or "")
            if not any(c.ts == ts and c.channel == channel for c in self.posts()):
                return self._error(method, "message_not_found")
        else:
            wait = self._rate_limit_wait(channel, now)
            if wait > 0:
                seconds = (self.retry_after if self.retry_after is not None
                           else max(1, math.ceil(wait)))
                self._seen(method, 429, "ratelimited")
                return web.json_response({"ok": False, "error": "ratelimited"}, status=429,
                                         headers={"Retry-After": str(seconds)})
            self._recent[channel].append(now)
            ts = f"{int(time.time())}.{next(self._ts):06d}"

        call = Call(method=method, channel=channel, body=body, ts=ts, at=now)
        self.calls.append(call)
        self._seen(method, 200, None)
        message = {"type": "message", "text": body.get("text", ""), "ts": ts,
                   "blocks": call.blocks, "bot_id": "B0GIFTGUARD"}
        return web.json_response({"ok": True, "channel": channel, "ts": ts, "message": message})

    def _seen(self, method: str, status: int, code: str | None) -> None:
        self.requests.append((method, status, code))
        self.request_times.append(time.monotonic())

    def _error(self, method: str, code: str, status: int = 200) -> web.Response:
        self._seen(method, status, code)
        return web.json_response({"ok": False, "error": code}, status=status)

    def _channel_id(self, channel: str) -> str | None:
        if channel in self.channels:
            return channel
        name = channel.removeprefix("#")
        return next((cid for cid, cname in self.channels.items() if cname == name), None)

    def _rate_limit_wait(self, channel: str, now: float) -> float:
        if not self.rate_limited:
            return 0.0
        recent = self._recent[channel]
        while recent and now - recent[0] >= self.window:
            recent.popleft()
        if len(recent) < self.limit:
            return 0.0
        return recent[0] + self.window - now


def _mentions(text: str, alert_id: str) -> bool:
    """``alert_id`` in ``text`` as a whole id ("a-1" is not in "a-10")."""
    start = text.find(alert_id)
    while start >= 0:
        end = start + len(alert_id)
        if end == len(text) or not (text[end].isalnum() or text[end] in "-_"):
            return True
        start = text.find(alert_id, start + 1)
    return False


async def _read_body(request: web.Request) -> dict[str, Any]:
    if request.content_type == "application/json":
        data = await request.json()
        return data if isinstance(data, dict) else {}
    form = await request.post()
    body: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    for key in ("blocks", "attachments", "metadata"):
        if isinstance(body.get(key), str):
            try:
                body[key] = json.loads(body[key])
            except json.JSONDecodeError:
                pass
    return body
