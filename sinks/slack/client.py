"""``chat.postMessage`` and ``chat.update`` through slack_sdk, with its errors converted to ours.

This is the only module that talks to slack_sdk. It turns on slack_sdk's retry handlers (connection
errors and HTTP 429, which are off by default for 429) and converts whatever is left into the sink
error hierarchy, at the boundary:

- HTTP 429 / ``ratelimited`` -> :class:`~sinks.base.RetryLater` with the ``Retry-After`` seconds;
- HTTP 5xx, Slack's ``internal_error``-like codes, connection errors, timeouts -> ``RetryLater``
  with ``retry_after=0`` (the caller's backoff decides how long);
- anything else (``invalid_auth``, ``channel_not_found``, ``invalid_blocks``, ...) ->
  :class:`~sinks.base.PermanentFailure`, carrying Slack's error code.
"""

from __future__ import annotations

import asyncio
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError, SlackClientError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.web.async_client import AsyncWebClient

from sinks.base import PermanentFailure, RetryLater, SinkError
from sinks.slack.blocks import SlackMessage

SINK = "slack"
DEFAULT_BASE_URL = AsyncWebClient.BASE_URL

# Slack error codes that mean "try again later" although the HTTP status may be 200.
_TRANSIENT_CODES = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable",
                              "request_timeout", "team_added_to_org"})


def default_retry_handlers() -> list[AsyncRetryHandler]:
    """slack_sdk's own retries: two for connection errors, two for 429 (it sleeps Retry-After)."""
    return [AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=2)]


def make_client(token: str, *, base_url: str | None = None,
                session: aiohttp.ClientSession | None = None,
                retry_handlers: list[AsyncRetryHandler] | None = None,
                timeout: int = 10) -> AsyncWebClient:
    """An ``AsyncWebClient`` for ``base_url`` (``SLACK_API_URL``; Slack's own when None)."""
    return AsyncWebClient(token=token, base_url=base_url or DEFAULT_BASE_URL, session=session,
                          timeout=timeout,
                          retry_handlers=(default_retry_handlers() if retry_handlers is None
                                          else retry_handlers))


def _retry_after(headers: Any) -> float:
    try:
        return max(0.0, float(headers.get("Retry-After") or headers.get("retry-after") or 1))
    except (TypeError, ValueError, AttributeError):
        return 1.0


def convert_error(exc: BaseException, *, alert_id: str | None) -> SinkError:
    """The :class:`~sinks.base.SinkError` that stands for slack_sdk or aiohttp error ``exc``."""
    if isinstance(exc, SlackApiError):
        response = exc.response
        status = getattr(response, "status_code", 0)
        data = getattr(response, "data", None)
        code = data.get("error") if isinstance(data, dict) else None
        detail = {"status": status, "error": code}
        if status == 429 or code == "ratelimited":
            return RetryLater(f"slack rate limited ({code or status})", sink=SINK,
                              alert_id=alert_id, response=detail,
                              retry_after=_retry_after(getattr(response, "headers", {})))
        if status >= 500 or code in _TRANSIENT_CODES:
            return RetryLater(f"slack unavailable (HTTP {status}, {code or 'no error code'})",
                              sink=SINK, alert_id=alert_id, response=detail, retry_after=0.0)
        return PermanentFailure(f"slack refused the message: {code or f'HTTP {status}'}",
                                sink=SINK, alert_id=alert_id, response=detail)
    if isinstance(exc, (aiohttp.ClientError, asyncio.TimeoutError, OSError)):
        return RetryLater(f"cannot reach slack: {type(exc).__name__}: {exc}", sink=SINK,
                          alert_id=alert_id, retry_after=0.0)
    if isinstance(exc, SlackClientError):
        return PermanentFailure(f"slack client error: {exc}", sink=SINK, alert_id=alert_id)
    return SinkError(f"unexpected error: {type(exc).__name__}: {exc}", sink=SINK,
                     alert_id=alert_id)


class SlackChat:
    """Posts and updates messages in Slack; every failure is a :class:`~sinks.base.SinkError`."""

    def __init__(self, client: AsyncWebClient) -> None:
        self.client = client

    async def post(self, channel: str, message: SlackMessage, *, alert_id: str,
                   thread_ts: str | None = None) -> tuple[str, str]:
        """``chat.postMessage`` (a reply when ``thread_ts`` is set); returns the channel id and
        the message's ``ts``.

        ``chat.update`` needs the channel's id, which Slack answers even when posted by name.
        """
        extra = {"thread_ts": thread_ts} if thread_ts else {}
        try:
            response = await self.client.chat_postMessage(
                channel=channel, text=message.text, blocks=message.blocks,
                unfurl_links=False, unfurl_media=False, **extra)
        except (TimeoutError, SlackClientError, aiohttp.ClientError, OSError) as exc:
            raise convert_error(exc, alert_id=alert_id) from exc
        return str(response.get("channel") or channel), str(response["ts"])

    async def update(self, channel: str, ts: str, message: SlackMessage, *, alert_id: str) -> str:
        """``chat.update`` of the message at ``ts``; returns its ``ts``."""
        try:
            response = await self.client.chat_update(
                channel=channel, ts=ts, text=message.text, blocks=message.blocks)
        except (TimeoutError, SlackClientError, aiohttp.ClientError, OSError) as exc:
            raise convert_error(exc, alert_id=alert_id) from exc
        return str(response.get("ts") or ts)
