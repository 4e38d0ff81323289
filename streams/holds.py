"""Holds: the hold policy, the hold registry (a Faust table) and the executor of decisions.

**Policy.** ``GIFTGUARD_HOLD_MODE`` sets the mode everywhere; the policy file (``GIFTGUARD_POLICY``)
may add a ``holds`` section and per-location overrides::

    holds: {auto_score: 90}            # auto mode: act at once at or above this score, ask below
    locations:
      STORE-7:
        holds: {mode: approve, auto_score: 95}

``request_score`` (default: the alert is ``high``) is the score from which an alert asks for a hold
at all. :func:`load_policies` reads both the detectors' :class:`~detectors.policy.Policy` and the
:class:`HoldPolicy` from one file.

**Registry.** The table ``holds`` (bytes keys = card id, bytes values = JSON) keeps per card: whether
it is held (amount frozen, currency, the alert that caused it, the POS activity id), whether it was
deactivated, the recent alerts (what a decision needs: score, rules, reasons, model version) and
the operations on it, each a small state machine ``requested → done | failed | unsupported``
(``shadow`` and ``skipped`` are final without a POS call). Everything that writes it runs inside a
Faust agent of a topic keyed by card (``giftcard.alerts``, ``giftcard.feedback``,
``giftguard.hold-commands``), so the worker that owns a card's partition is the only writer, and
a per-card lock keeps the agents of one worker from interleaving on a card.

**Exactly one POS activity.** An operation's idempotency key is derived from the alert and the
action (:func:`sinks.pos.idempotency_key`); the amount to freeze is read and *pinned in the
registry before the call*, and the table's changelog and the ``requested`` record on
``giftcard.holds`` are flushed to Kafka (acks=all) before the POS is called. A worker killed
between the decision and the call, or during it, replays the decision after a restart (its offset
was not committed), finds the pinned request and sends it again byte for byte under the same key:
the POS answers with the original activity and nothing is created twice. A release uses the key of
the hold's alert, so Release and False positive pressed together still give back once.

**Failures.** A failed call (retries inside the client exhausted) is recorded ``failed`` on
``giftcard.holds`` and the audit topic, counted in ``giftguard_holds_total{outcome="failed"}``,
posted in the alert's Slack thread, and retried by the ``hold-retries`` timer (backoff up to 5 min,
forever) when the POS may accept it later (429, 5xx, timeouts). A refusal (4xx) stays ``failed``
for a person to look at.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import time
import weakref
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import orjson
import yaml

from detectors.alerts import Alert
from detectors.events import Event, format_time
from detectors.policy import Policy, PolicyError
from sinks.pos import HoldRequest, HoldResult, PosClient, perform, read_balance
from sinks.slack.blocks import format_money
from streams.audit import audit_record
from streams.settings import HoldMode

log = logging.getLogger("giftguard.holds")

Decision = Literal["none", "shadow", "ask", "hold"]
#: Decisions an analyst can take in Slack (``decision`` on ``giftcard.feedback``).
DECISIONS = ("hold", "release", "confirm_fraud", "false_positive")
#: Event types that take value off a card: on a held card, each is itself an alert.
DEBIT_TYPES = frozenset({"redeem", "clear_balance", "transfer_balance_from"})
FINAL = frozenset({"done", "unsupported", "shadow", "skipped"})
MAX_ALERTS = 20
MAX_OPS = 40
RETRY_CAP = 300.0      # seconds between retries of a failed hold, at most
STALE_REQUEST = 30.0   # a "requested" operation untouched this long is re-driven by the timer


# -- policy ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HoldParams:
    """When to hold, at one location (policy section ``holds``)."""

    mode: str | None = None         # overrides GIFTGUARD_HOLD_MODE here (shadow|approve|auto)
    auto_score: float = 90.0        # auto mode: hold at once at or above this score
    request_score: float | None = None  # ask for a hold from this score (None: high alerts)


class HoldPolicy:
    """Hold parameters with per-location overrides.

    >>> p = HoldPolicy.from_dict({"holds": {"auto_score": 85},
    ...                           "locations": {"S7": {"holds": {"mode": "approve"}}}})
    >>> p.mode_at("S1", "auto"), p.mode_at("S7", "auto")
    ('auto', 'approve')
    >>> a = Alert("a", "c", "S1", "e", "t", "t", 88.0, "high", [], [], 100)
    >>> p.decide(a, "auto"), p.decide(replace(a, location_id="S7"), "auto"), p.decide(a, "shadow")
    ('hold', 'ask', 'shadow')
    >>> p.decide(replace(a, level="elevated", score=60.0), "auto")
    'none'
    """

    def __init__(self, default: HoldParams | None = None,
                 overrides: dict[str, HoldParams] | None = None) -> None:
        self.default = default or HoldParams()
        self.overrides = overrides or {}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> HoldPolicy:
        """From a policy file's data (only its ``holds`` sections are read)."""
        default = _hold_params("holds", HoldParams(), data.get("holds"))
        overrides = {}
        for loc, sub in (data.get("locations") or {}).items():
            if isinstance(sub, dict) and sub.get("holds") is not None:
                overrides[str(loc)] = _hold_params(f"locations.{loc}.holds", default, sub["holds"])
        return cls(default, overrides)

    def at(self, location_id: str) -> HoldParams:
        return self.overrides.get(location_id, self.default)

    def mode_at(self, location_id: str, mode: HoldMode) -> str:
        """The hold mode at ``location_id``: its override, else ``mode`` (the environment's)."""
        return self.at(location_id).mode or mode

    def decide(self, alert: Alert, mode: HoldMode) -> Decision:
        """What to do about ``alert`` by itself: nothing, record only, ask, or hold now."""
        p = self.at(alert.location_id)
        asks = alert.level == "high" if p.request_score is None else alert.score >= p.request_score
        if not asks:
            return "none"
        here = p.mode or mode
        if here == "shadow":
            return "shadow"
        if here == "auto" and alert.score >= p.auto_score:
            return "hold"
        return "ask"


def _hold_params(section: str, base: HoldParams, values: Any) -> HoldParams:
    if values is None:
        return base
    if not isinstance(values, dict):
        raise PolicyError(f"{section} must be a mapping")
    known = {f.name for f in fields(HoldParams)}
    for key, value in values.items():
        if key not in known:
            raise PolicyError(f"unknown parameter {key!r} in {section} "
                              f"(known: {', '.join(sorted(known))})")
        if key == "mode" and value not in ("shadow", "approve", "auto"):
            raise PolicyError(f"{section}.mode must be shadow, approve or auto, not {value!r}")
        if key in ("auto_score", "request_score") and value is not None and (
                isinstance(value, bool) or not isinstance(value, int | float)):
            raise PolicyError(f"{section}.{key} must be a number, got {value!r}")
    return replace(base, **values)


def load_policies(path: str | Path | None) -> tuple[Policy, HoldPolicy]:
    """The detectors' policy and the hold policy from one YAML file (defaults when None).

    The ``holds`` sections are taken out before the detectors' policy reads the rest.
    """
    if path is None:
        return Policy.load(None), HoldPolicy()
    try:
        data = yaml.safe_load(Path(path).read_text()) or {}
    except yaml.YAMLError as exc:
        raise PolicyError(f"{path}: not YAML: {exc}") from None
    if not isinstance(data, dict):
        raise PolicyError(f"{path}: a policy must be a mapping")
    try:
        holds = HoldPolicy.from_dict(data)
        rest = {k: v for k, v in data.items() if k != "holds"}
        if isinstance(rest.get("locations"), dict):
            rest["locations"] = {
                loc: {k: v for k, v in sub.items() if k != "holds"} if isinstance(sub, dict)
                else sub for loc, sub in rest["locations"].items()}
        return Policy.from_dict(rest), holds
    except PolicyError as exc:
        raise PolicyError(f"{path}: {exc}") from None


# -- the registry entry ---------------------------------------------------------------------------


def alert_context(alert: Alert) -> dict[str, Any]:
    """What the registry keeps of an alert: what a decision on it and its audit record need."""
    return {"alert_id": alert.alert_id, "score": alert.score, "level": alert.level,
            "rules": list(alert.rules), "reasons": list(alert.reasons),
            "model_version": alert.model_version, "location_id": alert.location_id,
            "event_id": alert.event_id, "amount_at_risk_minor": alert.amount_at_risk_minor,
            "related_card_ids": list(alert.related_card_ids)[:10], "gan_last4": alert.gan_last4,
            "occurred_at": alert.occurred_at}


@dataclass
class CardHolds:
    """One card's registry entry (JSON in the table)."""

    card_id: str
    held: bool = False
    hold: dict[str, Any] | None = None       # alert_id, amount_minor, currency, pos, activity...
    deactivated: bool = False
    alerts: dict[str, dict[str, Any]] = field(default_factory=dict)
    ops: dict[str, dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def decode(cls, card_id: str, raw: bytes | None) -> CardHolds:
        if not raw:
            return cls(card_id=card_id)
        data = orjson.loads(raw)
        return cls(card_id=card_id, held=bool(data.get("held")), hold=data.get("hold"),
                   deactivated=bool(data.get("deactivated")), alerts=data.get("alerts") or {},
                   ops=data.get("ops") or {})

    def encode(self) -> bytes:
        while len(self.alerts) > MAX_ALERTS:
            del self.alerts[next(iter(self.alerts))]
        finished = [k for k, op in self.ops.items() if op["status"] in FINAL]
        while len(self.ops) > MAX_OPS and finished:
            del self.ops[finished.pop(0)]
        return orjson.dumps({"card_id": self.card_id, "held": self.held, "hold": self.hold,
                             "deactivated": self.deactivated, "alerts": self.alerts,
                             "ops": self.ops})

    def view(self) -> dict[str, Any]:
        """What ``GET /holds/{card_id}`` answers."""
        hold = self.hold or {}
        pending = [op for op in self.ops.values() if op["status"] not in FINAL]
        return {"card_id": self.card_id, "held": self.held, "deactivated": self.deactivated,
                "amount_minor": hold.get("amount_minor") if self.held else None,
                "currency": hold.get("currency") if self.held else None,
                "alert_id": hold.get("alert_id") if self.held else None,
                "since": hold.get("at") if self.held else None,
                "pos_activity_id": hold.get("pos_activity_id") if self.held else None,
                "pending": [_op_view(op) for op in pending],
                "operations": [_op_view(op) for op in list(self.ops.values())[-10:]]}


def _op_view(op: dict[str, Any]) -> dict[str, Any]:
    keys = ("op_id", "action", "status", "alert_id", "amount_minor", "currency", "decided_by",
            "pos_activity_id", "error", "attempts", "updated_at")
    return {k: op.get(k) for k in keys if op.get(k) is not None}


def held_card_alert(entry: CardHolds, event: Event, model_version: str) -> Alert | None:
    """An alert for value taken off a card that is held: the hold did not stop it somewhere."""
    if not entry.held or event.type not in DEBIT_TYPES or event.status == "canceled":
        return None
    hold = entry.hold or {}
    cause = entry.alerts.get(hold.get("alert_id") or "", {})
    import hashlib

    alert_id = hashlib.blake2b(f"held|{event.event_id}".encode(), digest_size=12).hexdigest()
    reason = (f"{event.type.replace('_', ' ')} of {format_money(event.amount_minor, event.currency)}"
              f" on a card held since {hold.get('at', '?')} (alert {hold.get('alert_id', '?')})")
    return Alert(alert_id=alert_id, card_id=event.card_id, location_id=event.location_id,
                 event_id=event.event_id, occurred_at=event.occurred_at,
                 decided_at=event.occurred_at, score=max(95.0, float(cause.get("score") or 0)),
                 level="high", rules=["held_card_used"], reasons=[reason],
                 amount_at_risk_minor=max(event.amount_minor, 0), action="alert",
                 model_version=model_version, related_card_ids=[], gan_last4=event.gan_last4)


# -- the executor ---------------------------------------------------------------------------------


Send = Callable[[str, dict[str, Any]], Awaitable[object]]


@dataclass
class Outputs:
    """Where the executor writes: each takes (card_id or channel key, JSON-ready record)."""

    holds: Send
    audit: Send
    commands: Send
    slack: Callable[[dict[str, Any]], Awaitable[object]]
    flush: Callable[[], Awaitable[object]]


class HoldExecutor:
    """Records alerts in the registry and executes hold decisions against the POS.

    ``table`` is the registry (set by :func:`declare_registry`'s caller), ``pos`` the POS client
    (None: nothing can be executed, every operation is ``unsupported``), ``mode`` the
    environment's hold mode, ``failpoint`` a test hook (``before_pos_call`` kills the process
    with SIGKILL after the request is pinned, before the POS is called).
    """

    def __init__(self, *, pos: PosClient | None, mode: HoldMode, policy: HoldPolicy,
                 outputs: Outputs, metrics: Any, clock: Callable[[], float] = time.time,
                 failpoint: str | None = None) -> None:
        self.table: Any = None
        self.pos = pos
        self.mode = mode
        self.policy = policy
        self.out = outputs
        self.metrics = metrics
        self._failed_shown: set[tuple[str, str]] = set()
        self.clock = clock
        self.failpoint = failpoint
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._inflight: set[str] = set()
        self._retry_sent: dict[str, float] = {}

    # -- registry access ----------------------------------------------------------------------

    def lock(self, card_id: str) -> asyncio.Lock:
        lock = self._locks.get(card_id)
        if lock is None:
            lock = self._locks[card_id] = asyncio.Lock()
        return lock

    def entry(self, card_id: str) -> CardHolds:
        return CardHolds.decode(card_id, self.table.get(card_id.encode()))

    def _save(self, entry: CardHolds) -> None:
        self.table[entry.card_id.encode()] = entry.encode()

    # -- inputs ---------------------------------------------------------------------------------

    async def record_alert(self, alert: Alert) -> None:
        """Keep ``alert``'s context on its card (inside the act-on-alerts agent)."""
        async with self.lock(alert.card_id):
            entry = self.entry(alert.card_id)
            entry.alerts[alert.alert_id] = alert_context(alert)
            self._save(entry)

    async def on_record(self, rec: dict[str, Any]) -> None:
        """One record from ``giftcard.feedback`` or ``giftguard.hold-commands``."""
        if rec.get("kind") == "retry":
            await self._retry(str(rec["card_id"]), str(rec["op_id"]))
            return
        decision = rec.get("decision")
        if decision not in DECISIONS:
            return  # a label or verdict without a decision: the learner reads it, we do not
        card_id = rec.get("card_id")
        if not isinstance(card_id, str) or not card_id:
            log.warning("decision %s on alert %s names no card; nothing to execute",
                        decision, rec.get("alert_id"))
            return
        async with self.lock(card_id):
            await self._decide(card_id, rec)

    # -- decisions ------------------------------------------------------------------------------

    async def _decide(self, card_id: str, rec: dict[str, Any]) -> None:
        decision = rec["decision"]
        alert_id = str(rec.get("alert_id") or "")
        who = str(rec.get("user_id") or rec.get("analyst") or "system")
        who_name = rec.get("user_name")
        entry = self.entry(card_id)
        ctx = entry.alerts.get(alert_id) or {
            "alert_id": alert_id, **{k: rec[k] for k in ("location_id", "rules", "score",
                                                         "event_id", "model_version")
                                     if rec.get(k) is not None}}
        location_id = ctx.get("location_id") or rec.get("location_id") or ""
        mode = self.policy.mode_at(location_id, self.mode)
        decided_at = rec.get("decided_at") or format_time(self.clock())

        plan: list[tuple[str, str]] = []
        if decision == "hold":
            plan.append(("hold", alert_id))
        elif decision == "confirm_fraud":
            plan.append(("confirm_fraud", alert_id))
        elif entry.held or any(op["action"] == "hold" and op["status"] not in ("done", "shadow")
                               for op in entry.ops.values()):
            hold_alert = (entry.hold or {}).get("alert_id") or alert_id
            plan.append(("release", hold_alert))
        already = all(f"{a}:{act}" in entry.ops for act, a in plan) and plan
        if not already:  # a replayed decision is not audited twice
            await self.out.audit(card_id, audit_record(
                "decision", card_id, action=decision, who=who, who_name=who_name, alert=ctx,
                outcome="requested" if plan else "noted", mode=mode,
                source=rec.get("source", "slack" if who != "system" else "policy"),
                decided_at=decided_at))
        if not plan:
            verdict = {"false_positive": "False positive", "release": "Release"}.get(
                decision, decision)
            extra = " (card not held: nothing to release)" if decision == "release" else ""
            await self._slack_decision(card_id, alert_id, f"{verdict} by {_who(who)} at "
                                       f"{decided_at}{extra}")
            return
        for action, op_alert in plan:
            await self._run(entry, action, op_alert, who=who, who_name=who_name, mode=mode,
                            ctx=ctx, decided_at=decided_at, shown_on=alert_id,
                            verdict=decision)
            entry = self.entry(card_id)

    async def _retry(self, card_id: str, op_id: str) -> None:
        async with self.lock(card_id):
            entry = self.entry(card_id)
            op = entry.ops.get(op_id)
            if op is None or op["status"] in FINAL:
                return
            if op["status"] == "failed" and not op.get("retryable"):
                return
            ctx = entry.alerts.get(op["alert_id"], {"alert_id": op["alert_id"]})
            await self._run(entry, op["action"], op["alert_id"], who=op.get("decided_by", "system"),
                            who_name=op.get("decided_by_name"), mode=op.get("mode", self.mode),
                            ctx=ctx, decided_at=op.get("decided_at"),
                            shown_on=op.get("shown_on") or op["alert_id"],
                            verdict=op.get("verdict", op["action"]))

    async def _run(self, entry: CardHolds, action: str, alert_id: str, *, who: str,
                   who_name: str | None, mode: str, ctx: dict[str, Any], decided_at: str | None,
                   shown_on: str, verdict: str) -> None:
        card_id = entry.card_id
        op_id = f"{alert_id}:{action}"
        op = entry.ops.get(op_id)
        now = self.clock()
        if op is not None and op["status"] in FINAL:
            log.info("operation %s on %s already %s; not repeated", op_id, card_id, op["status"])
            return
        label = _ACTION_LABEL[action]
        if op is None:
            op = {"op_id": op_id, "action": action, "alert_id": alert_id, "status": "new",
                  "mode": mode, "decided_by": who, "decided_by_name": who_name,
                  "decided_at": decided_at, "shown_on": shown_on, "verdict": verdict,
                  "location_id": ctx.get("location_id"), "attempts": 0, "failures": 0}
            skip = None
            if action == "hold" and entry.held:
                skip = f"card already held (alert {(entry.hold or {}).get('alert_id')})"
            elif action == "hold" and entry.deactivated:
                skip = "card already deactivated"
            elif action == "confirm_fraud" and entry.deactivated:
                skip = "card already deactivated"
            elif action == "release" and not entry.held:
                skip = "card not held: nothing to release"
            if skip is not None or mode == "shadow":
                op["status"] = "skipped" if skip else "shadow"
                op["error"] = skip
                op["updated_at"] = now
                entry.ops[op_id] = op
                self._save(entry)
                outcome = op["status"]
                await self._outcome(entry, op, ctx, None)
                note = skip or "recorded only (shadow mode)"
                await self._slack_decision(card_id, shown_on, f"{label} by {_who(who)} at "
                                           f"{decided_at}: {note}")
                self._count(action, outcome)
                return
            if action == "release":
                op["amount_minor"] = (entry.hold or {}).get("amount_minor")
                op["currency"] = (entry.hold or {}).get("currency")
                op["location_id"] = (entry.hold or {}).get("location_id") or op["location_id"]
            entry.ops[op_id] = op

        if op_id in self._inflight:
            return
        self._inflight.add(op_id)
        try:
            await self._call(entry, op, ctx, label)
        finally:
            self._inflight.discard(op_id)

    async def _call(self, entry: CardHolds, op: dict[str, Any], ctx: dict[str, Any],
                    label: str) -> None:
        card_id = entry.card_id
        action = op["action"]
        now = self.clock()
        if self.pos is None:
            op.update(status="unsupported", error="no POS client configured",
                      updated_at=now)
            self._save(entry)
            await self._outcome(entry, op, ctx, None)
            await self._slack_decision(card_id, op["shown_on"], f"{label} by "
                                       f"{_who(op['decided_by'])}: no POS is configured")
            self._count(action, "unsupported")
            return
        request = self._request(card_id, op)
        # 1. Pin what the call will send (the amount to freeze), durably, before calling.
        if action == "hold" and op.get("amount_minor") is None:
            got = await read_balance(self.pos, request)
            if got is not None and not got.ok:
                await self._failed(entry, op, ctx, got, label)
                return
            if got is not None:
                op["amount_minor"], op["currency"] = got.amount_minor, got.currency
                request = self._request(card_id, op)
        if op["status"] != "requested":
            op["status"] = "requested"
            op["requested_at"] = now
            op["idempotency_key"] = request.idempotency_key
            op["updated_at"] = now
            self._save(entry)
            await self._outcome(entry, op, ctx, None)
        await self.out.flush()   # the changelog and the requested record are in Kafka now
        if self.failpoint == "before_pos_call":
            log.error("failpoint before_pos_call: killing the worker")
            os.kill(os.getpid(), signal.SIGKILL)
        # 2. Call the POS under the key derived from alert and action.
        op["attempts"] = int(op.get("attempts") or 0) + 1
        result = await perform(self.pos, request)
        entry = self.entry(card_id)        # re-read: nothing else writes this card meanwhile
        entry.ops[op["op_id"]] = op
        if not result.ok and result.outcome == "failed":
            await self._failed(entry, op, ctx, result, label)
            return
        op.update(status=result.outcome, pos=result.pos, pos_activity_id=result.pos_activity_id,
                  pos_attempts=result.attempts, error=result.error, updated_at=self.clock(),
                  retryable=False, next_retry_at=None)
        if result.amount_minor is not None:
            op["amount_minor"] = result.amount_minor
        if result.ok:
            if action == "hold":
                entry.held = True
                entry.hold = {"alert_id": op["alert_id"], "amount_minor": op.get("amount_minor"),
                              "currency": op.get("currency"), "pos": result.pos,
                              "pos_activity_id": result.pos_activity_id,
                              "location_id": op.get("location_id"),
                              "at": format_time(self.clock()), "by": op["decided_by"]}
            elif action == "release":
                entry.held = False
                entry.hold = None
            elif action == "confirm_fraud":
                entry.deactivated = True
        self._save(entry)
        await self._outcome(entry, op, ctx, result)
        self._count(action, result.outcome, result.pos)
        if result.ok:
            amount = op.get("amount_minor")
            money = (f" {format_money(amount, op.get('currency') or 'USD')}"
                     if amount is not None and action != "confirm_fraud" else "")
            what = {"hold": f"{money} frozen", "release": f"{money} given back",
                    "confirm_fraud": " card deactivated"}[action]
            line = (f":white_check_mark: {label} by {_who(op['decided_by'])} at "
                    f"{op.get('decided_at') or format_time(self.clock())}:{what} "
                    f"({result.pos} activity {result.pos_activity_id or '—'})")
        else:
            line = (f":information_source: {label} by {_who(op['decided_by'])}: "
                    f"{result.error or result.outcome}")
        await self._slack_decision(card_id, op["shown_on"], line)

    async def _failed(self, entry: CardHolds, op: dict[str, Any], ctx: dict[str, Any],
                      result: HoldResult, label: str) -> None:
        now = self.clock()
        failures = int(op.get("failures") or 0) + 1
        retryable = result.retry_after is not None
        wait = min(RETRY_CAP, max(result.retry_after or 0.0, 5.0 * 2 ** (failures - 1)))
        op.update(status="failed", error=result.error, error_code=result.error_code,
                  status_code=result.status_code, pos=result.pos, pos_attempts=result.attempts,
                  failures=failures, retryable=retryable, updated_at=now,
                  next_retry_at=now + wait if retryable else None)
        entry.ops[op["op_id"]] = op
        self._save(entry)
        await self._outcome(entry, op, ctx, result)
        self._count(op["action"], "failed", result.pos)
        then = (f"retrying in {wait:.0f}s" if retryable
                else "not retried: the POS refused it; act in the POS or press again")
        text = (f":warning: {label} of card {_short(entry.card_id)} failed "
                f"({result.error_code or result.status_code or 'error'}: {result.error}); {then}")
        if failures == 1 or not retryable:  # one note per failure streak, not per retry
            await self.out.slack({"kind": "note", "card_id": entry.card_id,
                                  "alert_id": op["shown_on"], "text": text})

    def _request(self, card_id: str, op: dict[str, Any]) -> HoldRequest:
        return HoldRequest(card_id=card_id, alert_id=op["alert_id"], action=op["action"],
                           amount_minor=op.get("amount_minor"), currency=op.get("currency"),
                           location_id=op.get("location_id") or None)

    async def _outcome(self, entry: CardHolds, op: dict[str, Any], ctx: dict[str, Any],
                       result: HoldResult | None) -> None:
        """The ``giftcard.holds`` record and the audit record of an operation's new state."""
        record = {"hold_id": op["op_id"], "card_id": entry.card_id, "alert_id": op["alert_id"],
                  "location_id": op.get("location_id"), "mode": op.get("mode"),
                  "action": op["action"], "outcome": op["status"],
                  "requested": op["action"], "score": ctx.get("score"),
                  "amount_minor": op.get("amount_minor"), "currency": op.get("currency"),
                  "idempotency_key": op.get("idempotency_key"), "pos": op.get("pos"),
                  "pos_activity_id": op.get("pos_activity_id"), "error": op.get("error"),
                  "attempts": op.get("attempts"), "decided_by": op.get("decided_by"),
                  "reasons": ctx.get("reasons"), "model_version": ctx.get("model_version"),
                  "held": entry.held, "decided_at": op.get("decided_at"),
                  "at": format_time(self.clock())}
        await self.out.holds(entry.card_id, {k: v for k, v in record.items() if v is not None})
        await self.out.audit(entry.card_id, audit_record(
            "pos", entry.card_id, action=op["action"], who=op.get("decided_by", "system"),
            who_name=op.get("decided_by_name"), alert=ctx, outcome=op["status"],
            mode=op.get("mode"), error=op.get("error"),
            pos=(result.to_dict() if result is not None else
                 {k: op.get(k) for k in ("amount_minor", "currency", "idempotency_key")
                  if op.get(k) is not None}) or None))

    async def _slack_decision(self, card_id: str, alert_id: str, line: str) -> None:
        await self.out.slack({"kind": "decision", "card_id": card_id, "alert_id": alert_id,
                              "line": line})

    def _count(self, action: str, outcome: str, pos: str | None = None) -> None:
        name = pos or (self.pos.name if self.pos is not None else "none")
        self.metrics.holds.labels(name, action, outcome).inc()

    # -- retries --------------------------------------------------------------------------------

    def due(self, now: float | None = None) -> list[tuple[str, str]]:
        """(card, operation) pairs to drive again: failed and due, or requested and stale.
        The same scan of the registry sets ``giftguard_holds_failed``."""
        now = self.clock() if now is None else now
        out = []
        failed: Counter[tuple[str, str]] = Counter()
        for key, raw in list(self.table.items()):
            entry = CardHolds.decode(key.decode(), raw)
            for op_id, op in entry.ops.items():
                if op["status"] == "failed":
                    failed[op.get("pos") or "none", op["action"]] += 1
                if op_id in self._inflight:
                    continue
                due = (op["status"] == "failed" and op.get("retryable")
                       and (op.get("next_retry_at") or 0) <= now) or (
                    op["status"] in ("requested", "new")
                    and now - (op.get("updated_at") or 0) > STALE_REQUEST)
                if due and now - self._retry_sent.get(op_id, 0.0) > STALE_REQUEST:
                    out.append((entry.card_id, op_id))
        self._show_failed(failed)
        return out

    def _show_failed(self, failed: Counter[tuple[str, str]]) -> None:
        """``giftguard_holds_failed`` from a scan of the registry (0 for what recovered)."""
        gauge = self.metrics.holds_failed
        for labels in self._failed_shown - failed.keys():
            gauge.labels(*labels).set(0)
        for labels, n in failed.items():
            gauge.labels(*labels).set(n)
        self._failed_shown = set(failed)

    async def send_retries(self) -> int:
        """Put a retry command on ``giftguard.hold-commands`` for every due operation."""
        sent = 0
        for card_id, op_id in self.due():
            self._retry_sent[op_id] = self.clock()
            await self.out.commands(card_id, {"kind": "retry", "card_id": card_id,
                                              "op_id": op_id})
            sent += 1
        if len(self._retry_sent) > 10_000:
            self._retry_sent.clear()
        return sent


_ACTION_LABEL = {"hold": "Hold", "release": "Release", "confirm_fraud": "Deactivation"}


def _who(who: str) -> str:
    return "GiftGuard (automatic)" if who == "system" else f"<@{who}>"


def _short(card_id: str) -> str:
    from sinks.slack.blocks import short_card_id

    return short_card_id(card_id)


# -- Faust wiring ---------------------------------------------------------------------------------


def declare_registry(app: Any, partitions: int) -> Any:
    """The ``holds`` table: bytes keys (card id) and bytes values (JSON)."""
    table = app.Table("holds", default=None, partitions=partitions, key_type=bytes,
                      value_type=bytes)
    _check_partitions_once_known(app, table)
    return table


def _check_partitions_once_known(app: Any, table: Any) -> None:
    """Faust checks, on a table's first write, that its changelog has as many partitions as the
    source topic, from the consumer's snapshot of the group's metadata. On a fresh cluster that
    snapshot can hold the changelog Faust has just created with 0 partitions (no leader yet)
    until the next rebalance; the check then raised ``PartitionsMismatch`` on every write, and
    every alert's action was dead-lettered (720 of 720 in a benchmark run). Here the check waits
    until the changelog's partitions are known, as Faust already does when it is unknown."""
    verify = table._verify_source_topic_partitions

    def verify_when_known(source_topic: str) -> None:
        if app.consumer.topic_partitions(table.changelog_topic_name):
            verify(source_topic)

    table._verify_source_topic_partitions = verify_when_known


def register_hold_agents(app: Any, executor: HoldExecutor, feedback: Any, commands: Any,
                         dead_letter: Callable[[Any, Exception], Awaitable[None]],
                         retry_interval: float = 5.0) -> None:
    """The agents that execute decisions, the retry timer and ``GET /holds/{card_id}``."""
    table = executor.table

    async def handle(stream: Any) -> None:
        async for event in stream.events():
            try:
                rec = orjson.loads(event.value)
                if isinstance(rec, dict):
                    await executor.on_record(rec)
            except Exception as exc:
                await dead_letter(event, exc)

    app.agent(feedback, name="execute-decisions")(handle)
    app.agent(commands, name="hold-commands")(handle)

    @app.timer(interval=retry_interval, name="hold-retries")
    async def hold_retries() -> None:
        try:
            await executor.send_retries()
        except Exception:  # a table being recovered, a producer restarting: next round
            log.warning("scheduling hold retries failed", exc_info=True)

    @app.page("/holds/{card_id}")
    @app.table_route(table=table, match_info="card_id")
    async def get_hold(web: Any, request: Any, card_id: str) -> Any:
        entry = CardHolds.decode(card_id, table.get(card_id.encode()))
        return web.json(entry.view())
