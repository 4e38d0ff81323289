"""One test group per rule: it fires on its pattern, and it stays quiet on the pattern's trap."""

from __future__ import annotations

from detectors.engine import Engine
from detectors.policy import Policy
from detectors.testing import LOCS, ev, run_all, run_card


def _card_alerts(events, engine=None):
    engine = engine or Engine(locations=LOCS)
    return [a for alerts in run_card(engine, events, alerts=True) for a in alerts]


# -- rapid_drain ----------------------------------------------------------------------------


def test_rapid_drain_online_minutes_after_activation():
    alerts = _card_alerts([ev("activate", 20000, 0, loc="SEA"),
                           ev("redeem", 18000, 7, loc="WEB")])
    assert len(alerts) == 1
    a = alerts[0]
    assert a.rules == ["rapid_drain"] and a.level == "high" and a.score >= 80
    assert a.reasons == [("redeemed 90% of the balance ($180 of $200) 7 minutes after "
                          "activation, online")]
    assert a.amount_at_risk_minor == 20000


def test_rapid_drain_in_another_city_states_the_distance():
    alerts = _card_alerts([ev("activate", 20000, 0, loc="SEA"),
                           ev("redeem", 20000, 45, loc="MIA")])
    assert len(alerts) == 1 and "rapid_drain" in alerts[0].rules
    assert "redeemed 100% of the balance ($200 of $200) 45 minutes after activation, 4,396 km " \
        "from where it was sold" in alerts[0].reasons


def test_rapid_drain_counts_several_redemptions_together():
    alerts = run_card(Engine(locations=LOCS), [ev("activate", 20000, 0, loc="SEA"),
                                              ev("redeem", 5000, 5, loc="WEB"),
                                              ev("redeem", 9000, 9, loc="WEB")], alerts=True)
    assert alerts[1] == []
    assert [a.rules for a in alerts[2]] == [["rapid_drain"]]
    assert alerts[2][0].reasons[0].startswith("redeemed 70% of the balance ($140 of $200)")


def test_rapid_drain_after_a_load():
    alerts = _card_alerts([ev("activate", 1000, 0, loc="SEA"),
                           ev("load", 30000, 60 * 24 * 3, loc="SEA"),
                           ev("redeem", 30000, 60 * 24 * 3 + 12, loc="WEB")])
    assert len(alerts) == 1 and "after a load" in alerts[0].reasons[0]


def test_trap_card_spent_in_the_same_store_minutes_after_purchase():
    assert _card_alerts([ev("activate", 20000, 0, loc="SEA"),
                         ev("redeem", 19500, 4, loc="SEA")]) == []


def test_trap_card_spent_in_the_same_town():
    assert _card_alerts([ev("activate", 20000, 0, loc="SEA"),
                         ev("redeem", 20000, 20, loc="SEA2")]) == []


def test_rapid_drain_quiet_on_a_small_share_or_late_or_tiny_card():
    assert _card_alerts([ev("activate", 20000, 0, loc="SEA"),
                         ev("redeem", 5000, 7, loc="WEB")]) == []
    assert _card_alerts([ev("activate", 20000, 0, loc="SEA"),
                         ev("redeem", 20000, 60 * 24 * 20, loc="WEB")]) == []
    assert _card_alerts([ev("activate", 1000, 0, loc="SEA"),
                         ev("redeem", 1000, 3, loc="WEB")]) == []


def test_rapid_drain_without_a_locations_file_counts_another_location():
    alerts = _card_alerts([ev("activate", 20000, 0, loc="A"),
                           ev("redeem", 19000, 7, loc="B")], engine=Engine())
    assert len(alerts) == 1 and "at another location" in alerts[0].reasons[0]
    assert _card_alerts([ev("activate", 20000, 0, loc="A"),
                         ev("redeem", 19000, 7, loc="A")], engine=Engine()) == []


def test_rapid_drain_respects_a_per_location_override():
    policy = Policy.from_dict({"locations": {"WEB": {"rules": {"rapid_drain": {"enabled": False}}}}})
    assert _card_alerts([ev("activate", 20000, 0, loc="SEA"),
                         ev("redeem", 19000, 7, loc="WEB")],
                        engine=Engine(policy, LOCS)) == []


def test_a_card_is_not_alerted_twice_for_the_same_thing():
    alerts = _card_alerts([ev("activate", 20000, 0, loc="SEA"),
                           ev("redeem", 15000, 5, loc="WEB"),
                           ev("redeem", 1000, 6, loc="WEB"),
                           ev("redeem", 1000, 7, loc="WEB")])
    assert len(alerts) == 1


# -- bulk_purchase --------------------------------------------------------------------------


def _batch(n, amount, *, loc="SEA", payment_ref="pay1", step=3.0, start=0.0, prefix="b"):
    return [ev("activate", amount, start + i * step, loc=loc, card=f"{prefix}{i}",
               payment_ref=payment_ref) for i in range(n)]


def test_bulk_purchase_high_value_batch_on_one_instrument():
    alerts = run_all(Engine(locations=LOCS), _batch(5, 50000))
    bulk = [a for a in alerts if a.rules == ["bulk_purchase"]]
    assert bulk, alerts
    # The third card completes an instrument batch (3 cards), naming the first two.
    first = bulk[0]
    assert first.card_id == "b2" and sorted(first.related_card_ids) == ["b0", "b1"]
    assert first.reasons == [("3 cards of $100 or more ($1,500 in total) sold on one payment "
                              "instrument within 6 minutes")]
    assert first.amount_at_risk_minor == 150000
    last = [a for a in bulk if a.card_id == "b4"]
    assert last and set(last[0].related_card_ids) == {"b0", "b1", "b2", "b3"}


def test_bulk_purchase_at_one_location_on_two_instruments():
    events = [ev("activate", 40000, i * 5, loc="MIA", card=f"c{i}", payment_ref=f"p{i % 2}")
              for i in range(4)]
    # A bystander buys a big card in the middle of the batch on their own instrument.
    events.insert(2, ev("activate", 20000, 6, loc="MIA", card="bystander", payment_ref="own"))
    alerts = [a for a in run_all(Engine(locations=LOCS), events) if a.rules == ["bulk_purchase"]]
    assert [a.card_id for a in alerts] == ["c3"]
    assert alerts[0].reasons[0].endswith(
        "sold at Miami Brickell within 15 minutes on 2 payment instruments")
    assert sorted(alerts[0].related_card_ids) == ["c0", "c1", "c2"]


def test_bulk_purchase_at_one_location_far_above_its_normal_rate():
    # Three quiet days (a $25 card every two hours), then twelve $400 cards in 24 minutes,
    # each on its own instrument.
    events = [ev("activate", 2500, i * 120, loc="MIA", card=f"q{i}") for i in range(36)]
    events += [ev("activate", 40000, 36 * 120 + i * 2, loc="MIA", card=f"c{i}",
                  payment_ref=f"p{i}") for i in range(12)]
    alerts = [a for a in run_all(Engine(locations=LOCS), events) if a.rules == ["bulk_purchase"]]
    assert alerts and alerts[0].reasons[0].endswith("0.8 expected")
    # Nothing ties the cards together: each is alerted on its own, nothing else is held.
    assert all(a.related_card_ids == [] for a in alerts) and len(alerts) >= 2
    # A store with no history yet has no baseline: only the instrument evidence counts there.
    assert [a for a in run_all(Engine(locations=LOCS), events[36:])
            if a.rules == ["bulk_purchase"]] == []


def test_trap_busy_store_is_compared_with_its_own_normal_rate():
    # A store that sells a $200 card every ten minutes all week...
    events = [ev("activate", 20000, i * 10, loc="MIA", card=f"w{i}", payment_ref=f"w{i}")
              for i in range(6 * 24 * 7)]
    # ...then a rush: one every three minutes, each on its own instrument.
    start = 6 * 24 * 7 * 10
    events += [ev("activate", 20000, start + i * 3, loc="MIA", card=f"r{i}", payment_ref=f"r{i}")
               for i in range(12)]
    assert [a for a in run_all(Engine(locations=LOCS), events)] == []


def test_trap_batch_of_low_value_staff_cards():
    assert run_all(Engine(locations=LOCS), _batch(40, 2500, step=0.5)) == []


def test_bulk_purchase_quiet_when_spread_over_time():
    events = [ev("activate", 50000, i * 60 * 6, loc="SEA", card=f"c{i}", payment_ref=f"p{i}")
              for i in range(6)]
    assert run_all(Engine(locations=LOCS), events) == []


def test_bulk_purchase_entity_replay_is_a_no_op():
    engine = Engine(locations=LOCS)
    state = None
    outs = []
    for e in _batch(3, 50000, payment_ref="pz") + _batch(3, 50000, payment_ref="pz")[-1:]:
        o = engine.on_entity_event("pi:pz", e, state)
        state = o.state
        outs.append(o)
    assert len(outs[2].alerts) == 1 and outs[3].alerts == []


# -- weak evidence --------------------------------------------------------------------------


def test_weak_evidence_scores_but_never_alerts_on_its_own():
    engine = Engine(locations=LOCS)
    outs = []
    state = None
    for e in [ev("activate", 20000, 0, loc="SEA"), ev("redeem", 1500, 2 * 24 * 60, loc="WEB"),
              ev("redeem", 1500, 2 * 24 * 60 + 30, loc="WEB")]:
        out = engine.on_card_event(e, state)
        state = out.state
        outs.append(out)
    assert outs[2].alerts == [] and 30 <= outs[2].score < 55
    # Even when feedback has made the rule count for more.
    from detectors.feedback import Feedback

    for i in range(40):
        engine.on_feedback(Feedback(card_id=f"f{i}", is_fraud=True, rules=("slow_drain",)))
    out = engine.on_card_event(ev("redeem", 1500, 2 * 24 * 60 + 31, loc="WEB", card="z"),
                               None)
    assert out.alerts == []
