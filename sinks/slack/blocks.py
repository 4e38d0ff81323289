"""Turn an :class:`~detectors.alerts.Alert` into a Slack message: Block Kit plus a text fallback.

Pure functions, no I/O, so the message an analyst sees is tested without Slack. Card numbers
never reach a message: the card is shown by its last four digits only, the provider's card id is
shortened, and every piece of text goes through :func:`redact_card_numbers` before it is placed.

>>> format_money(123456, "USD"), format_money(-250, "EUR"), format_money(5000, "JPY")
('$1,234.56', '-€2.50', '¥5,000')
>>> redact_card_numbers("card 7783 3200 0000 1234 drained")
'card ••••1234 drained'
>>> short_card_id("gftc:6d55a72470d940c6ba09c0ab8ad08d20"), short_card_id("7783320000001234")
('gftc:6d55a7…8d20', '••••1234')
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from detectors.alerts import Alert

HoldMode = Literal["shadow", "approve", "auto"]

#: ``action_id`` of each button; the ``/slack/actions`` endpoint dispatches on these.
ACTION_HOLD = "giftguard_hold"
ACTION_RELEASE = "giftguard_release"
ACTION_CONFIRM_FRAUD = "giftguard_confirm_fraud"
ACTION_FALSE_POSITIVE = "giftguard_false_positive"
ACTIONS_BLOCK_ID = "giftguard_actions"

# ISO 4217 minor-unit exponents that are not 2; everything else has cents.
_EXPONENTS = {"BIF": 0, "CLP": 0, "DJF": 0, "GNF": 0, "ISK": 0, "JPY": 0, "KMF": 0, "KRW": 0,
              "PYG": 0, "RWF": 0, "UGX": 0, "VND": 0, "VUV": 0, "XAF": 0, "XOF": 0, "XPF": 0,
              "BHD": 3, "IQD": 3, "JOD": 3, "KWD": 3, "LYD": 3, "OMR": 3, "TND": 3}
_SYMBOLS = {"USD": "$", "CAD": "CA$", "AUD": "A$", "NZD": "NZ$", "EUR": "€", "GBP": "£",
            "JPY": "¥", "INR": "₹", "KRW": "₩"}

# 12 to 19 digits, optionally grouped by single spaces or dashes: the shape of a card number (PAN or
# gift card GAN). Shorter digit runs (amounts, ids, last four) are left alone.
_CARD_NUMBER = re.compile(r"(?<![\d])\d(?:[ -]?\d){11,18}(?![\d])")

# Block Kit limits (https://api.slack.com/reference/block-kit/blocks).
_HEADER_MAX = 150
_SECTION_MAX = 3000
_FIELD_MAX = 2000
_TEXT_MAX = 3000


@dataclass(frozen=True, slots=True)
class SlackMessage:
    """What ``chat.postMessage`` gets: ``text`` (notifications, fallback) and ``blocks``."""

    text: str
    blocks: list[dict[str, Any]]


def format_money(minor: int, currency: str) -> str:
    """``minor`` smallest units of ``currency`` as money text: ``$1,234.56``, ``1,234.56 CHF``."""
    code = currency.upper()
    exponent = _EXPONENTS.get(code, 2)
    sign = "-" if minor < 0 else ""
    whole, frac = divmod(abs(int(minor)), 10 ** exponent)
    number = f"{whole:,}" + (f".{frac:0{exponent}d}" if exponent else "")
    symbol = _SYMBOLS.get(code)
    return f"{sign}{symbol}{number}" if symbol else f"{sign}{number} {code}"


def redact_card_numbers(text: str) -> str:
    """Replace anything shaped like a card number with ``••••`` and its last four digits."""
    return _CARD_NUMBER.sub(lambda m: "••••" + re.sub(r"\D", "", m.group())[-4:], text)


def last4(value: str | None) -> str | None:
    """The last four digits of ``value`` (a GAN or its last four), or None if it has fewer."""
    digits = re.sub(r"\D", "", value or "")
    return digits[-4:] if len(digits) >= 4 else None


def short_card_id(card_id: str) -> str:
    """A provider card id short enough to read, never a full card number.

    Ids that are mostly digits (some POS use the card number as the id) show their last four only;
    long opaque ids keep their prefix, six characters and the last four.
    """
    digits = re.sub(r"\D", "", card_id)
    if len(digits) >= 8 and len(digits) >= len(card_id) - 4:
        return "••••" + digits[-4:]
    prefix, sep, rest = card_id.rpartition(":")
    prefix += sep
    if len(rest) > 12:
        rest = f"{rest[:6]}…{rest[-4:]}"
    return redact_card_numbers(prefix + rest)


def escape(text: str) -> str:
    """Escape Slack's three control characters in mrkdwn text and redact card numbers."""
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return redact_card_numbers(text)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _button(label: str, action_id: str, alert_id: str, style: str | None = None,
            confirm: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "value": alert_id,
                              "text": {"type": "plain_text", "text": label}}
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = {"title": {"type": "plain_text", "text": f"{label}?"},
                             "text": {"type": "mrkdwn", "text": confirm},
                             "confirm": {"type": "plain_text", "text": label},
                             "deny": {"type": "plain_text", "text": "Cancel"}}
    return button


def action_buttons(alert_id: str, hold_mode: HoldMode) -> list[dict[str, Any]]:
    """The buttons for ``hold_mode``: shadow mode shows only the verdicts, else Hold/Release too."""
    verdicts = [_button("Confirm fraud", ACTION_CONFIRM_FRAUD, alert_id, "danger"),
                _button("False positive", ACTION_FALSE_POSITIVE, alert_id)]
    if hold_mode == "shadow":
        return verdicts
    return [_button("Hold", ACTION_HOLD, alert_id, "primary",
                    confirm="Freeze the card's balance in the POS?"),
            _button("Release", ACTION_RELEASE, alert_id),
            *verdicts]


def alert_message(alert: Alert, *, gan_last4: str | None = None, currency: str = "USD",
                  hold_mode: HoldMode = "shadow", location_name: str | None = None) -> SlackMessage:
    """The Slack message for ``alert``.

    ``gan_last4`` is the card's last four digits when known (the alert itself carries no card
    number); anything longer is cut to its last four. ``location_name`` is shown beside the id.
    """
    emoji = ":rotating_light:" if alert.level == "high" else ":warning:"
    header = _clip(redact_card_numbers(
        f"{emoji} {alert.level.upper()} risk gift card alert — score {alert.score:.0f}"),
        _HEADER_MAX)

    money = format_money(alert.amount_at_risk_minor, currency)
    four = last4(gan_last4)
    card = f"•••• {four}" if four else "last four unknown"
    card_field = f"{card} (`{escape(short_card_id(alert.card_id))}`)"
    where = escape(f"{location_name} ({alert.location_id})" if location_name else alert.location_id)
    reasons = "\n".join(f"• {escape(r)}" for r in alert.reasons) or "• (no reason given)"
    rules = ", ".join(f"`{escape(r)}`" for r in alert.rules) or "—"
    fields = [("Amount at risk", money), ("Card", card_field), ("Location", where),
              ("Related cards", str(len(alert.related_card_ids))),
              ("Action", alert.action.replace("_", " ")), ("Rules", rules),
              ("Model", escape(alert.model_version or "—")),
              ("Occurred", escape(alert.occurred_at))]

    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {"type": "section", "text": {"type": "mrkdwn",
                                     "text": _clip(f"*Why*\n{reasons}", _SECTION_MAX)}},
        {"type": "section", "fields": [{"type": "mrkdwn", "text": _clip(f"*{k}*\n{v}", _FIELD_MAX)}
                                       for k, v in fields]},
        {"type": "actions", "block_id": ACTIONS_BLOCK_ID,
         "elements": action_buttons(alert.alert_id, hold_mode)},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": escape(
            f"alert {alert.alert_id} · event {alert.event_id} · decided {alert.decided_at}")}]},
    ]
    first = alert.reasons[0] if alert.reasons else "no reason given"
    text = _clip(redact_card_numbers(
        f"{alert.level.upper()} gift card alert (score {alert.score:.0f}): {money} at risk on card "
        f"{card} at {location_name or alert.location_id} — {first}"), _TEXT_MAX)
    return SlackMessage(text=text, blocks=blocks)
