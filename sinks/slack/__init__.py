"""Slack: the message (:mod:`.blocks`), the slack_sdk boundary (:mod:`.client`), the sink.

:func:`alert_sink` picks the sink a worker uses: Slack when ``SLACK_BOT_TOKEN`` and
``SLACK_CHANNEL`` are set, else the console (alerts are printed instead).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import Counter

from detectors.alerts import Alert
from sinks.base import AlertSink
from sinks.slack.blocks import (
    ACTION_CONFIRM_FRAUD,
    ACTION_FALSE_POSITIVE,
    ACTION_HOLD,
    ACTION_RELEASE,
    ACTIONS_BLOCK_ID,
    SlackMessage,
    alert_message,
    format_money,
    redact_card_numbers,
)
from sinks.slack.client import SlackChat, default_retry_handlers, make_client
from sinks.slack.sink import Posted, SlackAlertSink

if TYPE_CHECKING:
    from streams.settings import Settings

__all__ = [
    "ACTIONS_BLOCK_ID", "ACTION_CONFIRM_FRAUD", "ACTION_FALSE_POSITIVE", "ACTION_HOLD",
    "ACTION_RELEASE", "Posted", "SlackAlertSink", "SlackChat", "SlackMessage", "alert_message",
    "alert_sink", "default_retry_handlers", "format_money", "make_client", "redact_card_numbers",
]


def alert_sink(settings: Settings, *, messages: Counter | None = None, currency: str = "USD",
               gan_last4: Callable[[Alert], str | None] | None = None,
               location_name: Callable[[str], str | None] | None = None) -> AlertSink:
    """A :class:`SlackAlertSink` from ``settings``; a console sink when Slack is not set up."""
    token = settings.slack_bot_token.get_secret_value() if settings.slack_bot_token else ""
    if not token or not settings.slack_channel:
        from sinks.console import ConsoleSink
        return ConsoleSink(currency=currency, messages=messages)
    return SlackAlertSink(token, settings.slack_channel, base_url=settings.slack_api_url,
                          hold_mode=settings.giftguard_hold_mode, currency=currency,
                          gan_last4=gan_last4, location_name=location_name, messages=messages)
