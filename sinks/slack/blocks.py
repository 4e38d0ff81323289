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

import json
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
#: What each button asks for, as written to ``giftcard.feedback`` (``decision``).
DECISIONS = {ACTION_HOLD: "hold", ACTION_RELEASE: "release",
             ACTION_CONFIRM_FRAUD: "confirm_fraud", ACTION_FALSE_POSITIVE: "false_positive"}
#: Slack allows 2,000 characters in a button's value.
_VALUE_MAX = 2000

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


def button_value(alert: Alert) -> str:
    """What a button carries back to ``POST /slack/actions``: the alert id, and what the bridge
    needs to key and describe the decision without a look-up (card, location, event, rules).

    >>> from detectors.alerts import Alert
    >>> a = Alert("a1", "gftc:1", "L1", "square:e1", "t", "t", 90.0, "high", ["rapid_drain"], [], 5)
    >>> parse_button_value(button_value(a))["card_id"]
    'gftc:1'
    >>> parse_button_value("a1")   # a plain alert id, as older messages carry
    {'alert_id': 'a1'}
    """
    value: dict[str, Any] = {"a": alert.alert_id, "l": alert.location_id,
                             "e": alert.event_id, "r": list(alert.rules)}
    if redact_card_numbers(alert.card_id) == alert.card_id:
        value["c"] = alert.card_id  # never a card number: those stay out of Slack entirely
    text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    while len(text) > _VALUE_MAX and value["r"]:
        value["r"] = value["r"][:-1]
        text = json.dumps(value, separators=(",", ":"), ensure_ascii=False)
    return text


def parse_button_value(value: str) -> dict[str, Any]:
    """The fields :func:`button_value` packed: ``alert_id`` and, when present, ``card_id``,
    ``location_id``, ``event_id`` and ``rules``."""
    try:
        data = json.loads(value)
    except (TypeError, ValueError):
        data = None
    if not isinstance(data, dict):
        return {"alert_id": str(value)}
    names = {"a": "alert_id", "c": "card_id", "l": "location_id", "e": "event_id", "r": "rules"}
    return {names[k]: v for k, v in data.items() if k in names and v not in (None, "")}


def _button(label: str, action_id: str, value: str, style: str | None = None,
            confirm: str | None = None) -> dict[str, Any]:
    button: dict[str, Any] = {"type": "button", "action_id": action_id, "value": value,
                              "text": {"type": "plain_text", "text": label}}
    if style:
        button["style"] = style
    if confirm:
        button["confirm"] = {"title": {"type": "plain_text", "text": f"{label}?"},
                             "text": {"type": "mrkdwn", "text": confirm},
                             "confirm": {"type": "plain_text", "text": label},
                             "deny": {"type": "plain_text", "text": "Cancel"}}
    return button


def action_buttons(value: str, hold_mode: HoldMode) -> list[dict[str, Any]]:
    """The buttons for ``hold_mode``: shadow mode shows only the verdicts, else Hold/Release too.

    ``value`` is what every button carries back (:func:`button_value`, or a plain alert id).
    """
    verdicts = [_button("Confirm fraud", ACTION_CONFIRM_FRAUD, value, "danger"),
                _button("False positive", ACTION_FALSE_POSITIVE, value)]
    if hold_mode == "shadow":
        return verdicts
    return [_button("Hold", ACTION_HOLD, value, "primary",
                    confirm="Freeze the card's balance in the POS?"),
            _button("Release", ACTION_RELEASE, value),
            *verdicts]


def alert_message(alert: Alert, *, gan_last4: str | None = None, currency: str = "USD",
                  hold_mode: HoldMode = "shadow", location_name: str | None = None,
                  decisions: list[str] | None = None) -> SlackMessage:
    """The Slack message for ``alert``.

    ``gan_last4`` is the card's last four digits when known (the alert itself carries no card
    number); anything longer is cut to its last four. ``location_name`` is shown beside the id.
    ``decisions`` are lines saying who decided what, when, and the outcome (shown under the
    buttons, so the channel sees what happened to the alert).
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
         "elements": action_buttons(button_value(alert), hold_mode)},
        *_decision_blocks(decisions),
        {"type": "context", "elements": [{"type": "mrkdwn", "text": escape(
            f"alert {alert.alert_id} · event {alert.event_id} · decided {alert.decided_at}")}]},
    ]
    first = alert.reasons[0] if alert.reasons else "no reason given"
    text = _clip(redact_card_numbers(
        f"{alert.level.upper()} gift card alert (score {alert.score:.0f}): {money} at risk on card "
        f"{card} at {location_name or alert.location_id} — {first}"), _TEXT_MAX)
    return SlackMessage(text=text, blocks=blocks)


#: Block Kit allows 50 blocks per message; a batch reply spends three per alert.
MAX_ALERTS_PER_MESSAGE = 15


def _decision_blocks(decisions: list[str] | None) -> list[dict[str, Any]]:
    if not decisions:
        return []
    # Our own lines (they may mention <@user>): card numbers redacted, mrkdwn kept.
    text = _clip("\n".join(redact_card_numbers(d) for d in decisions[-8:]), _TEXT_MAX)
    return [{"type": "context", "elements": [{"type": "mrkdwn", "text": text}]}]


def batch_message(alerts: list[Alert], *, gan_last4: dict[str, str | None] | None = None,
                  currency: str = "USD", hold_mode: HoldMode = "shadow",
                  decisions: dict[str, list[str]] | None = None) -> SlackMessage:
    """One thread reply for several alerts of the same incident (a coalesced burst).

    Each alert gets a one-line summary, its own buttons and its decisions, so analysts can still
    act per card. At most :data:`MAX_ALERTS_PER_MESSAGE` alerts fit in one message.
    """
    if len(alerts) > MAX_ALERTS_PER_MESSAGE:
        raise ValueError(f"at most {MAX_ALERTS_PER_MESSAGE} alerts per message, not {len(alerts)}")
    gan_last4 = gan_last4 or {}
    decisions = decisions or {}
    total = sum(a.amount_at_risk_minor for a in alerts)
    blocks: list[dict[str, Any]] = [{"type": "section", "text": {"type": "mrkdwn", "text": (
        f"*{len(alerts)} more alerts in this incident* — "
        f"{format_money(total, currency)} at risk in all")}}]
    for i, alert in enumerate(alerts):
        four = last4(gan_last4.get(alert.alert_id))
        card = f"•••• {four}" if four else f"`{escape(short_card_id(alert.card_id))}`"
        first = alert.reasons[0] if alert.reasons else "no reason given"
        line = (f"*{alert.level.upper()} {alert.score:.0f}* · {card} · "
                f"{format_money(alert.amount_at_risk_minor, currency)} at risk · "
                f"{escape(alert.location_id)}\n{escape(first)}\n_alert {escape(alert.alert_id)}_")
        blocks.append({"type": "section", "text": {"type": "mrkdwn",
                                                   "text": _clip(line, _SECTION_MAX)}})
        blocks.append({"type": "actions", "block_id": f"{ACTIONS_BLOCK_ID}:{i}",
                       "elements": action_buttons(button_value(alert), hold_mode)})
        blocks.extend(_decision_blocks(decisions.get(alert.alert_id)))
    text = _clip(redact_card_numbers(
        f"{len(alerts)} more gift card alerts in this incident: "
        f"{format_money(total, currency)} at risk"), _TEXT_MAX)
    return SlackMessage(text=text, blocks=blocks[:50])


def note_message(text: str) -> SlackMessage:
    """A short note in a thread: a decision's outcome, a failed hold."""
    body = _clip(redact_card_numbers(text), _SECTION_MAX)  # our text; may mention <@user>
    return SlackMessage(text=_clip(redact_card_numbers(text), _TEXT_MAX),
                        blocks=[{"type": "section", "text": {"type": "mrkdwn", "text": body}}])
