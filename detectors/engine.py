"""The detector: one call per event, state in and state out, the same in the worker and the backtest.

Topics are partitioned by card, so a worker sees every event of a card (*card scope*) but not every
event of a location. :meth:`Engine.on_card_event` runs the card rules and models and returns, in
``Outcome.forward``, the entity keys (``loc:…``, ``pi:…``, ``emp:…``) the event must also be routed
to; :meth:`Engine.on_entity_event` then runs the windowed rules for each of those keys. An everyday
sale is not routed as an event: ``Outcome.counts`` names the location whose rates of sales only
count its time (:meth:`Engine.on_entity_counts`). Card-scope alerts depend only on the card's
state, the static locations, the policy and the learned (global) feedback models; entity-scope
alerts only on the entity's state. So the worker (which re-keys through a topic) and the backtest
(which calls both inline, :meth:`Engine.entity_scope`) raise the same alerts.

Nothing here reads a clock: windows use the event's ``occurred_at``, an alert's ``decided_at`` is
the event's ``occurred_at`` (the worker may overwrite it), and ``alert_id`` is a hash of the scope
key and the event id, so a replay raises the same alert ids.

Idempotency and order (Square): a repeated ``event_id`` on a card is a no-op (the card keeps its
last 8 event-id hashes). A POS redemption is first ``square:<id>`` with status ``pending`` (the
value is debited then), and later ``square:<id>:completed`` (confirmed: no second debit) or
``square:<id>:canceled`` (the value is given back). If an update arrives *before* its original, the
update is applied as if the original had come: a completed one debits, and the original, when it
arrives, is a no-op; a canceled one is remembered, and the original, when it arrives, is scored and
counted as it would have been in order, its value given back at once.

>>> from detectors.events import Event
>>> def ev(i, typ, amount, minute, loc="L1", **kw):
...     return Event.from_dict({"event_id": f"e{i}", "type": typ, "card_id": "gc1",
...         "location_id": loc, "amount_minor": amount, "currency": "USD",
...         "occurred_at": f"2026-11-21T10:{minute:02d}:00Z", **kw})
>>> engine = Engine()
>>> out = engine.on_card_event(ev(1, "activate", 20000, 0), None)
>>> out.alerts, out.forward
([], ('loc:L1',))
>>> out = engine.on_card_event(ev(2, "redeem", 19000, 6, channel="online"), out.state)
>>> [(a.rules, a.level) for a in out.alerts]
[(['rapid_drain'], 'high')]
>>> out.alerts[0].reasons[0]
'redeemed 95% of the balance ($190 of $200) 6 minutes after activation, online'
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass

from detectors.alerts import Alert
from detectors.entity import EntityState
from detectors.events import Event, parse_time
from detectors.feedback import Feedback
from detectors.locations import Locations, loc_hash
from detectors.models.card_stats import CardStats
from detectors.models.feedback_model import FeedbackModel
from detectors.models.location_model import LocationModel
from detectors.policy import LocationPolicy, Policy
from detectors.rules import RULE_NAMES
from detectors.rules.base import CardContext, Hit
from detectors.rules.bulk_purchase import BulkPurchase
from detectors.rules.dormant_drain import DormantDrain
from detectors.rules.impossible_travel import ImpossibleTravel
from detectors.rules.insider_credit import InsiderCredit
from detectors.rules.known_instrument import KnownFraudInstrument
from detectors.rules.rapid_drain import RapidDrain
from detectors.rules.slow_drain import SlowDrain, decayed
from detectors.score import combine, level_of
from detectors.state import (
    F_ACTIVATED,
    F_CREDIT_ONLINE,
    F_DEACTIVATED,
    F_LAST_ACTIVATE,
    P_CANCELED,
    P_DONE,
    P_PENDING,
    CardState,
    h32,
    u32,
)

__version__ = "0.3.0"

SALE_TYPES = frozenset({"activate", "load"})
MANUAL_TYPES = frozenset({"adjust_increment", "refund", "unlinked_activity_refund"})
SPEND_TYPES = frozenset({"redeem", "clear_balance", "transfer_balance_from"})
PROBE_TYPES = frozenset({"balance_check", "declined"})
_UPDATE_SUFFIXES = (":completed", ":canceled")
_RULE_BIT = {name: 1 << i for i, name in enumerate(RULE_NAMES)}
_LN2 = math.log(2)
#: At most this many location states are kept decoded between events (see ``_entity_state``).
_DECODED_MAX = 10_000


@dataclass(slots=True)
class Outcome:
    """What one event did: the key's new state, alerts, the event's risk, and where to route it."""

    state: bytes | None            # the key's new state, compact bytes (None = delete the key)
    alerts: list[Alert]            # usually empty
    score: float                   # 0-100 risk of this event in this scope
    forward: tuple[str, ...] = ()  # card scope only: entity keys this event must ALSO be routed to
    #: card scope only: entity keys that only count this sale, by its time (``on_entity_counts``)
    counts: tuple[str, ...] = ()


def alert_id(scope_key: str, event_id: str) -> str:
    """A deterministic alert id: the same event in the same scope always gives the same id.

    >>> alert_id("card:gc1", "square:a1") == alert_id("card:gc1", "square:a1")
    True
    """
    return hashlib.blake2b(f"{scope_key}|{event_id}".encode(), digest_size=12).hexdigest()


def _give_back(s: CardState, amount: int) -> None:
    """A canceled redemption's value returns to the card."""
    s.drained = max(0, s.drained - amount)
    s.redeemed_total = max(0, s.redeemed_total - amount)
    s.balance += amount


class Engine:
    """Rules and models over canonical events (see the module docstring for the contract)."""

    def __init__(self, policy: Policy | None = None, locations: Locations | None = None) -> None:
        self.policy = policy if policy is not None else Policy.load(None)
        self.locations = locations if locations is not None else Locations()
        self.model_version = f"giftguard-detectors-{__version__}+policy.{self.policy.digest}"
        self.rapid_drain = RapidDrain()
        self.impossible_travel = ImpossibleTravel()
        self.dormant_drain = DormantDrain()
        self.slow_drain = SlowDrain()
        self.insider_credit = InsiderCredit()
        self.bulk_purchase = BulkPurchase()
        self.known_instrument = KnownFraudInstrument()
        default = self.policy.default
        self.card_stats = CardStats(default.model("card_stats"))
        self.location_model = LocationModel(default.model("location_model"))
        self.feedback = FeedbackModel(default.model("feedback"))
        self._loc_h: dict[str, int] = {}
        self._places: dict[str, tuple] = {}
        self._decoded: dict[str, tuple[bytes, EntityState]] = {}
        self._last_ts = 0.0

    def __getstate__(self) -> dict:
        """Pickle the engine without its decoded-state cache (it only saves work)."""
        state = self.__dict__.copy()
        state["_decoded"] = {}
        return state

    # -- helpers ----------------------------------------------------------------------------

    def _hash_loc(self, location_id: str) -> int:
        h = self._loc_h.get(location_id)
        if h is None:
            h = self._loc_h[location_id] = loc_hash(location_id)
        return h

    def _online(self, event: Event) -> bool:
        if event.channel is not None:
            return event.channel == "online"
        return self.locations.is_online(event.location_id)

    def _place(self, location_id: str) -> tuple:
        """What the engine needs about a location, computed once: its hash, whether it sells
        online, its policy, the enabled redemption rules with their thresholds there, and its
        entity key."""
        lp = self.policy.at(location_id)
        rules = lp.rules
        spend = tuple((rule, rules[rule.name]) for rule in (
            self.rapid_drain, self.impossible_travel, self.dormant_drain, self.slow_drain)
            if rules[rule.name].enabled)
        place = (self._hash_loc(location_id), self.locations.is_online(location_id), lp, spend,
                 f"loc:{location_id}")
        if len(self._places) < 100_000:
            self._places[location_id] = place
        return place

    def _where(self, location_id: str) -> str:
        loc = self.locations.get(location_id)
        return loc.name if loc is not None else location_id

    # -- card scope -------------------------------------------------------------------------

    def on_card_event(self, event: Event, state: bytes | None) -> Outcome:
        """Score one event of a card against the card's state; return the new state."""
        s = CardState.decode(state)
        eid = event.event_id
        eh = h32(eid)
        if eh in s.eids:
            return Outcome(state, [], 0.0)         # a replay or duplicate: nothing changes
        s.remember_hash(eh)
        typ = event.type
        ts = event.ts
        if ts > self._last_ts:
            self._last_ts = ts
        amount = event.amount_minor
        place = self._places.get(event.location_id)
        if place is None:
            place = self._place(event.location_id)
        loc_h, loc_online, lp, spend_rules, loc_key = place
        online = loc_online if event.channel is None else event.channel == "online"
        hits: list[Hit] = []
        signals: list[tuple[str, float]] = []
        forward: tuple[str, ...] = ()
        counts: tuple[str, ...] = ()
        learn_debit = 0

        if typ in SPEND_TYPES:
            debit, credit_back = self._resolve_redemption(s, event)
            if debit > 0:
                ctx = CardContext(s, event, event.location_id, loc_h, ts, debit, online,
                                  self.locations, event.currency)
                for rule, p in spend_rules:
                    hit = rule.check(ctx, p)
                    if hit is not None:
                        hits.append(hit)
                p = lp.rules["insider_credit"]
                if p.enabled and s.manual_amt:
                    hit = self.insider_credit.check_spend(ctx, p)
                    if hit is not None:
                        hits.append(hit)
                if self.card_stats.params.enabled:
                    signals.extend(self.card_stats.score_one(s, debit, ts))
                if s.t_alert and lp.alert.carry_over > 0:
                    # Spending on a card already alerted on is as suspicious as the alert was.
                    age_days = max(0.0, ts - s.t_alert) / 86400
                    carry = (lp.alert.carry_over * s.alert_score / 100
                             * 0.5 ** (age_days / lp.alert.carry_over_days))
                    if carry > 0.01:
                        signals.append(("card_alerted", carry))
                learn_debit = debit
            elif credit_back > 0:
                _give_back(s, credit_back)
        elif typ in SALE_TYPES:
            self._apply_sale(s, event, ts, amount, loc_h, online)
            p = lp.rules["known_fraud_instrument"]
            if p.enabled and event.payment_ref and self.feedback.place:
                hit = self.known_instrument.check(
                    self.feedback.instrument_confirmed(event.payment_ref, ts), amount, p)
                if hit is not None:
                    hits.append(hit)
            if amount >= lp.rules["bulk_purchase"].min_card_amount_minor:
                forward = (loc_key,)
                # Instrument windows only hold high-value sales: forward nothing else there.
                if event.payment_ref:
                    forward += (f"pi:{event.payment_ref}",)
            elif self.location_model.params.enabled:
                # An everyday sale only counts towards the location's rates of sales: its time
                # is all the entity scope needs (``on_entity_counts``), not the whole event.
                counts = (loc_key,)
        elif typ in MANUAL_TYPES:
            if self._is_manual_credit(s, event, amount):
                p = lp.rules["insider_credit"]
                if p.enabled:
                    ctx = CardContext(s, event, event.location_id, loc_h, ts, amount, online,
                                      self.locations, event.currency)
                    hit = self.insider_credit.check_credit(ctx, typ, p)
                    if hit is not None:
                        hits.append(hit)
                s.manual_amt += amount
                s.t_manual = int(ts)
                s.manual_loc = loc_h
                forward = (loc_key,)
                if event.employee_id:
                    forward += (f"emp:{event.employee_id}",)
            s.balance += amount
            s.t_last = int(ts)
        elif typ == "adjust_decrement":
            s.last_dec = amount
            s.balance -= amount
        elif typ in PROBE_TYPES:
            half_life = lp.rules["dormant_drain"].probe_window_hours / 2
            count, _ = decayed(s.pr_count, 0.0, s.t_probe, ts, half_life)
            s.pr_count, s.t_probe = count + 1.0, int(ts)
        elif typ in ("deactivate", "block"):
            s.flags |= F_DEACTIVATED
        elif typ == "unblock":
            s.flags &= ~F_DEACTIVATED

        score = 0.0
        alerts = []
        fm = self.feedback
        context = (fm.location_signal(event.location_id, ts)
                   if fm.place and fm.params.enabled and (learn_debit or typ in SALE_TYPES)
                   else None)
        if context and not (hits or signals):
            # Only the place's history: a small score, nothing to learn or remember.
            score = combine((), context, fm.weights_at(("location_risk",), event.location_id))
        elif hits or signals:
            if context:
                signals.extend(context)
            if fm.params.enabled:
                features = _features(hits, signals, typ, online)
                learned = fm.learned(features)
                if learned > 0:
                    signals.append(("learned", learned))
                fm.remember(eid, features, tuple(h.rule for h in hits) + tuple(
                    n for n, _ in signals), event.location_id, event.payment_ref)
                weights = fm.weights_at([h.rule for h in hits] + [n for n, _ in signals],
                                        event.location_id)
            else:
                weights = {}
            score = combine(hits, signals, weights)
            if hits:
                # An alert stands on this event's own evidence, not on the card's past alert.
                own = (combine(hits, [x for x in signals if x[0] != "card_alerted"], weights)
                       if s.t_alert else score)
                alert = self._maybe_alert(f"card:{event.card_id}", event, s, hits, own, lp)
                if alert is not None:
                    alerts.append(alert)
        if learn_debit:
            if not alerts and self.card_stats.params.enabled:
                self.card_stats.learn_one(s, learn_debit, ts)   # flagged events not learned
            self._apply_debit(s, ts, learn_debit, loc_h, online, lp)
            if credit_back:
                # Its cancellation came first: counted as it happened, then given back as the
                # update would have (the update's balance stands, not this stale one).
                _give_back(s, credit_back)
        if (event.balance_after_minor is not None and typ not in PROBE_TYPES
                and not (learn_debit and credit_back)):
            s.balance = event.balance_after_minor
        if not s.t_first:
            s.t_first = int(ts)
        if s.n_events < 65535:
            s.n_events += 1
        return Outcome(s.encode(), alerts, score, forward, counts)

    def _resolve_redemption(self, s: CardState, event: Event) -> tuple[int, int]:
        """(value debited now, value given back now) for a redemption and its Square updates
        (both, for an original whose cancellation came first)."""
        eid = event.event_id
        amount = event.amount_minor
        if eid.endswith(_UPDATE_SUFFIXES):
            activity = h32(eid.rpartition(":")[0])
            entry = s.pending_entry(activity)
            if eid.endswith(":completed"):
                if entry is not None and entry[2] == P_PENDING:
                    s.drop_pending(activity)          # confirmed: already debited
                    return 0, 0
                if entry is None:                      # the update came first: debit now
                    s.set_pending(activity, amount, P_DONE)
                    return amount, 0
                return 0, 0
            # canceled
            if entry is not None and entry[2] == P_PENDING:
                s.drop_pending(activity)
                return 0, entry[1]
            if entry is None:                          # canceled before the original arrived
                s.set_pending(activity, 0, P_CANCELED)
            return 0, 0
        if event.status == "canceled":
            return 0, 0
        if event.status == "pending":
            activity = h32(eid)
            entry = s.pending_entry(activity)
            if entry is not None and entry[2] == P_DONE:
                s.drop_pending(activity)               # its completion already debited it
                return 0, 0
            if entry is not None and entry[2] == P_CANCELED:
                s.drop_pending(activity)               # debited and given back at once
                return amount, amount
            s.set_pending(activity, amount, P_PENDING)
        return amount, 0


    def _apply_debit(self, s: CardState, ts: float, amount: int, loc_h: int, online: bool,
                     lp: LocationPolicy) -> None:
        s.drained += amount
        s.redeemed_total += amount
        s.balance -= amount
        if s.manual_amt:
            s.manual_amt = max(0, s.manual_amt - amount)
        p = lp.rules["slow_drain"]
        if amount <= p.max_amount_minor:
            count, total = decayed(s.sd_count, s.sd_sum, s.t_sd, ts, p.half_life_hours)
            s.sd_count, s.sd_sum, s.t_sd = count + 1.0, total + amount, int(ts)
        if s.n_redeem < 65535:
            s.n_redeem += 1
        if not online:
            s.t_phys, s.phys_loc = int(ts), loc_h
        s.t_last = int(ts)

    def _apply_sale(self, s: CardState, event: Event, ts: float, amount: int, loc_h: int,
                    online: bool) -> None:
        flags = s.flags & ~(F_CREDIT_ONLINE | F_LAST_ACTIVATE)
        if event.type == "activate":
            flags |= F_ACTIVATED | F_LAST_ACTIVATE
        if online:
            flags |= F_CREDIT_ONLINE
        s.flags = flags
        s.balance += amount
        if event.balance_after_minor is not None:
            s.balance = event.balance_after_minor
        s.t_credit = int(ts)
        s.credit_amt = amount
        s.credit_base = max(s.balance, amount)
        s.sold_total += amount
        s.drained = 0
        s.credit_loc = loc_h
        if not online:
            s.t_phys, s.phys_loc = int(ts), loc_h
        s.t_last = int(ts)

    @staticmethod
    def _is_manual_credit(s: CardState, event: Event, amount: int) -> bool:
        """Whether a refund or adjustment puts value on the card that no sale backs."""
        if event.type == "adjust_increment" and 0 < amount <= s.last_dec:
            s.last_dec -= amount                       # releasing a freeze, not new value
            return False
        if event.type in ("refund", "adjust_increment") and amount <= s.redeemed_total:
            s.redeemed_total -= amount                 # gives back an earlier purchase
            return False
        return amount > 0

    def _maybe_alert(self, scope: str, event: Event, s: CardState, hits: list[Hit],
                     score: float, lp: LocationPolicy) -> Alert | None:
        ap = lp.alert
        level = level_of(score, ap.elevated, ap.high)
        if level is None or max(h.score for h in hits) < ap.min_rule_score:
            return None
        mask = 0
        for h in hits:
            if h.score >= ap.elevated:                 # weak, early evidence is not news
                mask |= _RULE_BIT.get(h.rule, 0)
        ts = u32(event.ts)
        if s.t_alert and ts - s.t_alert < ap.realert_hours * 3600:
            if mask & ~s.alert_mask == 0 and score < s.alert_score + ap.realert_margin:
                return None                            # nothing new to tell
            s.alert_mask |= mask
            s.alert_score = max(s.alert_score, int(score))
        else:
            s.alert_mask = mask
            s.alert_score = int(score)
        s.t_alert = ts
        return self._alert(scope, event, hits, score, level)

    def _alert(self, scope: str, event: Event, hits: list[Hit], score: float,
               level: str) -> Alert:
        related: list[str] = []
        for h in hits:
            for c in h.related_card_ids:
                if c != event.card_id and c not in related:
                    related.append(c)
        hits = sorted(hits, key=lambda h: -h.score)
        return Alert(
            alert_id=alert_id(scope, event.event_id),
            card_id=event.card_id,
            location_id=event.location_id,
            event_id=event.event_id,
            occurred_at=event.occurred_at,
            decided_at=event.occurred_at,
            score=round(score, 1),
            level=level,  # type: ignore[arg-type]
            rules=[h.rule for h in hits],
            reasons=[h.reason for h in hits],
            amount_at_risk_minor=max(h.amount_at_risk_minor for h in hits),
            model_version=self.model_version,
            related_card_ids=related,
        )

    # -- entity scope -----------------------------------------------------------------------

    def on_entity_event(self, key: str, event: Event, state: bytes | None) -> Outcome:
        """Score one forwarded event against the windows of a location, instrument or employee."""
        kind = key.partition(":")[0]
        es = self._entity_state(key, state)
        lp = self.policy.at(event.location_id)
        ts = event.ts
        card_id = event.card_id
        amount = event.amount_minor
        hits: list[Hit] = []
        signals: list[tuple[str, float]] = []
        sales_changed = manual_changed = False     # which windows this event touches
        if event.type in SALE_TYPES:
            p = lp.rules["bulk_purchase"]
            big = amount >= p.min_card_amount_minor
            window_s = p.window_minutes * 60
            lm = self.location_model
            use_lm = kind == "loc" and lm.params.enabled
            if big:
                its = int(ts)
                for r in reversed(es.sales):               # newest first, by time
                    if r[0] < its:
                        break
                    if r[0] == its and r[1] == card_id:
                        return Outcome(state, [], 0.0)     # a replayed event
                # Location rows: [ts, card, amount, instrument, flagged].
                extra = [(event.payment_ref or "")[:8], 0] if kind == "loc" else None
                sales_changed = True                       # only high-value sales touch it
                left = es.push(es.sales, ts, card_id, amount, window_s=window_s, cap=64,
                               extra=extra)
                if left and use_lm:
                    lm.learn_window_exits(es, left)
            expected = None
            assessment = None
            share = 0.25
            sales = None
            if use_lm:
                lm.count_sale(es, ts)
                if big:
                    assessment = lm.assess(es, event, ts, self.locations)
                    expected = lm.expected_big(es, ts, window_s, assessment)
                    share = lm.usual_big_share(es, ts, assessment)
                    sales = lm.sales_in_window(es, ts, window_s)
                    signals.extend(lm.signals(es, assessment))
            if big and p.enabled:
                hit = self.bulk_purchase.check(kind, self._where(event.location_id), es.sales,
                                               card_id, amount, p, event.currency, expected,
                                               share, sales)
                if hit is not None:
                    hits.append(hit)
                    if kind == "loc":
                        batch = {card_id, *hit.related_card_ids}
                        for row in es.sales:
                            if row[1] in batch:
                                row[4] = 1                 # keep the batch out of the baseline
            if assessment is not None:
                lm.commit(es, assessment, flagged=bool(hits))  # flagged: not learned
            if use_lm and not hits:
                lm.learn_sale(es, ts)
        elif event.type in MANUAL_TYPES:
            p = lp.rules["insider_credit"]
            if any(r[0] == int(ts) and r[1] == card_id and r[2] == amount for r in es.manual):
                return Outcome(state, [], 0.0)
            manual_changed = True
            es.push(es.manual, ts, card_id, amount, window_s=p.window_days * 86400, cap=64)
            if p.enabled:
                hit = self.insider_credit.check_concentration(
                    kind, self._where(event.location_id), es.manual, card_id, p, event.currency)
                if hit is not None:
                    hits.append(hit)
        score = 0.0
        alerts = []
        if hits or signals:
            weights = (self.feedback.weights_at([h.rule for h in hits] + [n for n, _ in signals],
                                                event.location_id)
                       if self.feedback.params.enabled else {})
            score = combine(hits, signals, weights)
            if hits and max(h.score for h in hits) >= lp.alert.min_rule_score:
                level = level_of(score, lp.alert.elevated, lp.alert.high)
                if level is not None:
                    es.t_alert = int(ts)
                    alerts.append(self._alert(key, event, hits, score, level))
        return Outcome(self._encode_entity(key, es, sales_changed, manual_changed), alerts, score)

    def on_entity_counts(self, key: str, times: Sequence[float], state: bytes | None) -> bytes:
        """Count everyday sales (``Outcome.counts``) into a location's rates of sales, in order.

        The same as :meth:`on_entity_event` for each of those sales, which never alert: below the
        bulk-purchase amount a sale only updates the location model's counts and rates. The
        worker sends a run of them as one item instead of an event each."""
        lm = self.location_model
        if not lm.params.enabled:
            return state or b""
        es = self._entity_state(key, state)
        for ts in times:
            lm.count_sale(es, ts)
            lm.learn_sale(es, ts)
        return self._encode_entity(key, es, False, False)

    def entity_scope(self, out: Outcome, event: Event,
                     entities: dict[str, bytes | None]) -> tuple[float, list[Alert]]:
        """Route a card outcome through the entity scope inline, states in ``entities`` (what
        the backtest does; the worker does it through a topic): the highest score and the
        alerts of the entity keys."""
        score = 0.0
        alerts: list[Alert] = []
        for key in out.counts:
            entities[key] = self.on_entity_counts(key, (event.ts,), entities.get(key))
        for key in out.forward:
            eo = self.on_entity_event(key, event, entities.get(key))
            entities[key] = eo.state
            if eo.score > score:
                score = eo.score
            if eo.alerts:
                alerts += eo.alerts
        return score, alerts

    def _entity_state(self, key: str, raw: bytes | None) -> EntityState:
        """The state of an entity key: when the caller hands back the bytes this engine
        returned for the key last (the backtest's dict, an in-memory table, or the worker's copy
        of them behind its replay mark), the object they were encoded from, else a fresh decode.
        ``decode(encode(s))`` equals ``s``, so both give the same results; the object is taken
        out of the cache while it is being updated, so an event that fails half-way cannot leave
        it behind."""
        hit = self._decoded.pop(key, None)
        if hit is not None and hit[0] == raw:  # (bytes == tells the same object at once)
            return hit[1]
        return EntityState.decode(raw)

    def _encode_entity(self, key: str, es: EntityState, sales_changed: bool,
                       manual_changed: bool) -> bytes:
        """The new state of an entity key as bytes; a location's is also kept decoded (they
        see most entity events; instruments and employees are rarely seen twice in a row).
        The JSON of a window this event did not change is reused from the last encoding (``es``
        is either the object encoded then, or a fresh decode that has none to reuse)."""
        raw = es.encode(sales_unchanged=not sales_changed, manual_unchanged=not manual_changed)
        if key.startswith("loc:"):
            if len(self._decoded) >= _DECODED_MAX:
                self._decoded.clear()
            self._decoded[key] = (raw, es)
        return raw

    # -- feedback -----------------------------------------------------------------------------

    def on_feedback(self, feedback: Feedback) -> None:
        """Learn from an analyst decision or label (global learned state, no event state)."""
        if not self.feedback.params.enabled:
            return
        ts = self._last_ts
        if feedback.decided_at:
            try:
                ts = parse_time(feedback.decided_at)
            except ValueError:
                pass
        self.feedback.learn(feedback, ts)


def _features(hits: list[Hit], signals: list[tuple[str, float]], typ: str,
              online: bool) -> dict[str, float]:
    """The evidence an event carried, as a River feature dict for the supervised model."""
    x = {h.rule: h.score / 100.0 for h in hits}
    for name, value in signals:
        x[name] = value
    x[f"type_{typ}"] = 1.0
    if online:
        x["online"] = 1.0
    return x
