"""The engine's contract: interface, state size, idempotency, Square updates, policy and locations."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest

from detectors.engine import Engine, Outcome
from detectors.events import Event
from detectors.locations import Locations
from detectors.policy import Policy, PolicyError
from detectors.state import MAX_CARD_STATE_BYTES, CardState
from detectors.testing import LOCS, ev, run_card


def test_engine_works_without_policy_or_locations():
    engine = Engine()
    out = engine.on_card_event(ev("activate", 5000, 0), None)
    assert isinstance(out, Outcome)
    assert isinstance(out.state, bytes) and out.alerts == [] and out.score == 0.0
    assert out.forward == () and out.counts == ("loc:L1",)   # an everyday sale: counted only
    assert engine.model_version.startswith("giftguard-detectors-")


def test_sale_forwards_to_location_and_instrument():
    out = Engine().on_card_event(ev("activate", 20000, 0, payment_ref="p1"), None)
    assert out.forward == ("loc:L1", "pi:p1")
    assert out.counts == ()
    # Instrument windows only hold high-value sales; an everyday sale only counts at the store.
    out = Engine().on_card_event(ev("activate", 5000, 0, payment_ref="p1"), None)
    assert out.forward == () and out.counts == ("loc:L1",)


def test_counting_everyday_sales_is_scoring_them_as_events():
    """``on_entity_counts`` over a run of sale times leaves a location's state exactly as
    ``on_entity_event`` over each of those sales (which never alert); a later high-value sale
    is scored the same either way."""
    sales = [ev("activate", 2500 + 100 * i, 3 * i, card=f"c{i}") for i in range(40)]
    big = ev("activate", 50000, 200, card="big")
    one, runs = Engine(), Engine()
    state_one = state_runs = None
    for e in sales:
        out = one.on_entity_event("loc:L1", e, state_one)
        assert out.alerts == [] and out.score == 0.0
        state_one = out.state
    for chunk in (sales[:1], sales[1:25], sales[25:]):
        state_runs = runs.on_entity_counts("loc:L1", [e.ts for e in chunk], state_runs)
    assert state_runs == state_one
    a = one.on_entity_event("loc:L1", big, state_one)
    b = runs.on_entity_event("loc:L1", big, state_runs)
    assert (a.state, a.score) == (b.state, b.score)
    # The counts changed the location's state: a store with no sales counted is another store.
    fresh = Engine().on_entity_event("loc:L1", big, None)
    assert fresh.state != a.state


def test_manual_credit_without_sale_is_forwarded_to_location_and_employee():
    engine = Engine()
    out = engine.on_card_event(ev("activate", 500, 0), None)
    out = engine.on_card_event(ev("adjust_increment", 15000, 5, employee_id="E1"), out.state)
    assert out.forward == ("loc:L1", "emp:E1")
    # A refund of an earlier purchase is not.
    out = engine.on_card_event(ev("redeem", 4000, 10), out.state)
    out = engine.on_card_event(ev("refund", 4000, 20, employee_id="E1"), out.state)
    assert out.forward == ()


def test_redemptions_are_not_forwarded():
    engine = Engine()
    out = engine.on_card_event(ev("activate", 5000, 0), None)
    out = engine.on_card_event(ev("redeem", 1000, 30), out.state)
    assert out.forward == ()


def test_card_state_stays_small_under_any_history():
    engine = Engine(locations=LOCS)
    state = None
    for i in range(500):
        typ = ("activate", "redeem", "redeem", "load", "balance_check", "refund")[i % 6]
        status = "pending" if i % 5 == 0 and typ == "redeem" else None
        out = engine.on_card_event(
            ev(typ, 1000 + i, i, loc=("SEA", "MIA", "WEB")[i % 3], eid=f"x{i}", status=status),
            state)
        state = out.state
        assert len(state) <= MAX_CARD_STATE_BYTES <= 300


def test_repeated_event_is_a_no_op():
    engine = Engine()
    out1 = engine.on_card_event(ev("activate", 20000, 0, eid="a"), None)
    out2 = engine.on_card_event(ev("redeem", 5000, 5, eid="r"), out1.state)
    again = engine.on_card_event(ev("redeem", 5000, 5, eid="r"), out2.state)
    assert again.state == out2.state and again.alerts == [] and again.score == 0.0
    assert CardState.decode(again.state).balance == 15000


def _balance(state: bytes) -> int:
    return CardState.decode(state).balance


def test_pending_then_completed_debits_once():
    states = run_card(Engine(), [
        ev("activate", 10000, 0, eid="square:a"),
        ev("redeem", 3000, 10, eid="square:r", status="pending"),
        ev("redeem", 3000, 11, eid="square:r:completed", status="completed"),
    ])
    assert _balance(states[1]) == 7000 and _balance(states[2]) == 7000


def test_pending_then_canceled_gives_the_value_back():
    states = run_card(Engine(), [
        ev("activate", 10000, 0, eid="square:a"),
        ev("redeem", 3000, 10, eid="square:r", status="pending"),
        ev("redeem", 3000, 11, eid="square:r:canceled", status="canceled"),
    ])
    assert _balance(states[1]) == 7000 and _balance(states[2]) == 10000


def test_update_before_original_is_applied_once():
    states = run_card(Engine(), [
        ev("activate", 10000, 0, eid="square:a"),
        ev("redeem", 3000, 11, eid="square:r:completed", status="completed"),
        ev("redeem", 3000, 10, eid="square:r", status="pending"),
    ])
    assert _balance(states[1]) == 7000 and _balance(states[2]) == 7000
    states = run_card(Engine(), [
        ev("activate", 10000, 0, eid="square:a"),
        ev("redeem", 3000, 11, eid="square:r:canceled", status="canceled"),
        ev("redeem", 3000, 10, eid="square:r", status="pending"),
    ])
    assert _balance(states[2]) == 10000


def test_cancellation_before_original_counts_it_as_in_order():
    """A canceled redemption is an attempt the card's models learn from in either order: the
    card ends the same (but for how the events arrived) whichever of the two came first."""
    activate = ev("activate", 10000, 0, eid="square:a")
    pending = ev("redeem", 3000, 300, eid="square:r", status="pending", balance_after_minor=7000)
    canceled = ev("redeem", 3000, 300, eid="square:r:canceled", status="canceled",
                  balance_after_minor=10000)
    later = ev("redeem", 2500, 400, eid="square:s", status="completed")
    in_order = run_card(Engine(), [activate, pending, canceled, later])
    update_first = run_card(Engine(), [activate, canceled, pending, later])
    a, b = CardState.decode(in_order[-1]), CardState.decode(update_first[-1])
    differ = {n for n in CardState.__slots__ if getattr(a, n) != getattr(b, n)}
    assert differ <= {"eids", "eid_idx", "pending", "n_pending"}, differ
    assert b.n_redeem == 2 and b.balance == 7500 and b.n_pending == 0
    assert CardState.decode(update_first[2]).balance == 10000  # not the original's stale 7,000


def test_square_balance_wins_over_the_computed_one():
    states = run_card(Engine(), [
        ev("activate", 10000, 0),
        ev("redeem", 3000, 10, balance_after_minor=6500),
    ])
    assert _balance(states[1]) == 6500


def test_alert_ids_are_deterministic_and_decided_at_is_event_time():
    events = [ev("activate", 20000, 0, loc="SEA"), ev("redeem", 19000, 5, loc="WEB")]
    a = run_card(Engine(locations=LOCS), events, alerts=True)[1]
    b = run_card(Engine(locations=LOCS), events, alerts=True)[1]
    assert [x.alert_id for x in a] == [x.alert_id for x in b] and len(a) == 1
    assert a[0].decided_at == events[1].occurred_at
    assert a[0].model_version


def test_policy_file_with_location_override(tmp_path: Path):
    path = tmp_path / "policy.yaml"
    path.write_text("rules:\n  rapid_drain: {min_share: 0.9}\n"
                    "locations:\n  SEA:\n    alert: {elevated: 70}\n")
    p = Policy.load(path)
    assert p.at("SEA").alert.elevated == 70 and p.at("MIA").alert.elevated == 55
    assert p.at("SEA").rule("rapid_drain").min_share == 0.9


def test_policy_errors_name_the_key(tmp_path: Path):
    with pytest.raises(PolicyError, match="min_shar"):
        Policy.from_dict({"rules": {"rapid_drain": {"min_shar": 1}}})
    with pytest.raises(PolicyError, match="rules.rapid_drain.min_share must be float"):
        Policy.from_dict({"rules": {"rapid_drain": {"min_share": "lots"}}})


def test_default_policy_file_matches_the_built_in_defaults():
    path = Path(__file__).parents[1] / "detectors" / "default_policy.yaml"
    assert path.read_text() == Policy.load(None).to_yaml(), \
        "regenerate it: python -m detectors.policy > detectors/default_policy.yaml"
    assert Policy.load(path).to_dict() == Policy.load(None).to_dict()


def test_locations_file_round_trip(tmp_path: Path):
    path = tmp_path / "locations.json"
    path.write_bytes(orjson.dumps([
        {"location_id": "A", "name": "A", "lat": 0, "lon": 0, "timezone": "UTC"},
        {"location_id": "W", "name": "Web", "lat": 0, "lon": 0, "timezone": "UTC",
         "channel": "online"}]))
    locs = Locations.load(path)
    assert len(locs) == 2 and locs.is_online("W") and locs.distance_km("A", "W") is None
    assert len(Locations.load(None)) == 0


def test_event_channel_overrides_location_channel():
    engine = Engine(locations=LOCS)
    out = engine.on_card_event(ev("activate", 20000, 0, loc="SEA"), None)
    # Redeemed at the same store but flagged online by the POS: online drain.
    out = engine.on_card_event(ev("redeem", 19000, 3, loc="SEA", channel="online"), out.state)
    assert [a.rules for a in out.alerts] == [["rapid_drain"]]


def test_event_from_json_round_trip_through_engine():
    raw = ev("activate", 20000, 0).to_json()
    out = Engine().on_card_event(Event.from_json(raw), None)
    assert out.state
