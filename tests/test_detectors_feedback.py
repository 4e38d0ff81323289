"""Learning from analysts: feedback changes the scores of later events, in the right direction."""

from __future__ import annotations

import pytest

from detectors.engine import Engine
from detectors.feedback import Feedback, InvalidFeedback
from detectors.testing import LOCS, ev, run_all, run_card


def _drain(card: str, minute: float, sold_at: str = "SEA", spent_at: str = "WEB",
           share: float = 0.35):
    """A card sold at ``sold_at`` and partly spent at ``spent_at`` five minutes later."""
    return [ev("activate", 20000, minute, loc=sold_at, card=card),
            ev("redeem", int(20000 * share), minute + 5, loc=spent_at, card=card,
               eid=f"r-{card}")]


def _score_of_redemption(engine: Engine, card: str, minute: float, **kw) -> float:
    state = None
    out = None
    for e in _drain(card, minute, **kw):
        out = engine.on_card_event(e, state)
        state = out.state
    return out.score


def test_false_positives_lower_the_weight_of_the_rule_that_caused_them():
    engine = Engine(locations=LOCS)
    before = _score_of_redemption(engine, "c0", 0)
    for i in range(1, 15):
        _score_of_redemption(engine, f"c{i}", i * 60)
        engine.on_feedback(Feedback(card_id=f"c{i}", is_fraud=False, event_id=f"r-c{i}",
                                    rules=("rapid_drain",), location_id="WEB"))
    after = _score_of_redemption(engine, "c99", 10_000)
    assert after < before - 10
    # ... most where the false positives were: the same rule elsewhere keeps more weight.
    elsewhere = _score_of_redemption(engine, "c98", 10_000, spent_at="MIA")
    assert elsewhere > after


def test_confirmed_fraud_raises_the_weight_back():
    engine = Engine(locations=LOCS)
    for i in range(10):
        engine.on_feedback(Feedback(card_id=f"c{i}", is_fraud=False, rules=("rapid_drain",)))
    low = _score_of_redemption(engine, "x", 0)
    for i in range(30):
        engine.on_feedback(Feedback(card_id=f"f{i}", is_fraud=True, rules=("rapid_drain",)))
    assert _score_of_redemption(engine, "y", 100) > low


def test_confirmed_fraud_at_a_location_raises_the_risk_of_the_next_events_there():
    engine = Engine(locations=LOCS)
    quiet = _score_of_redemption(engine, "a", 0, spent_at="SEA2", share=0.2)
    for i in range(10):
        engine.on_feedback(Feedback(card_id=f"f{i}", is_fraud=True, location_id="SEA2",
                                    decided_at="2026-11-21T10:00:00Z"))
    risky = _score_of_redemption(engine, "b", 30, spent_at="SEA2", share=0.2)
    assert quiet == 0.0 and risky > 0.0
    # Other locations are unaffected.
    assert _score_of_redemption(engine, "c", 60, sold_at="MIA", spent_at="MIA", share=0.2) == 0.0


def test_an_instrument_confirmed_fraudulent_makes_its_next_purchases_alert():
    engine = Engine(locations=LOCS)
    first = run_all(engine, [ev("activate", 20000, 0, card="k1", payment_ref="stolen")])
    assert first == []
    for card in ("k1", "k2"):
        engine.on_feedback(Feedback(card_id=card, is_fraud=True, payment_ref="stolen",
                                    decided_at="2026-11-21T10:00:00Z"))
    alerts = run_all(engine, [ev("activate", 20000, 60, card="k3", payment_ref="stolen")])
    assert [a.rules for a in alerts] == [["known_fraud_instrument"]]
    assert alerts[0].reasons == [
        "bought with a payment instrument analysts confirmed on 2 fraudulent cards"]


def test_feedback_on_a_remembered_event_teaches_the_supervised_model():
    engine = Engine(locations=LOCS)
    fm = engine.feedback
    for i in range(25):
        run_card(engine, _drain(f"f{i}", i * 60))
        engine.on_feedback(Feedback(card_id=f"f{i}", is_fraud=True, event_id=f"r-f{i}"))
        run_card(engine, _drain(f"l{i}", i * 60, spent_at="MIA", share=0.9))
        engine.on_feedback(Feedback(card_id=f"l{i}", is_fraud=False, event_id=f"r-l{i}"))
    assert fm.labels == [25, 25]
    x_fraud = {"rapid_drain": 0.8, "type_redeem": 1.0, "online": 1.0}
    x_legit = {"rapid_drain": 0.8, "impossible_travel": 0.9, "type_redeem": 1.0}
    assert fm.learned(x_fraud) > fm.learned(x_legit)


def test_feedback_is_plain_data():
    f = Feedback.from_dict({"card_id": "c", "is_fraud": False, "alert_id": "a1",
                            "rules": ["bulk_purchase"], "unknown": 1})
    assert f.rules == ("bulk_purchase",) and f.alert_id == "a1"
    with pytest.raises(InvalidFeedback, match="is_fraud"):
        Feedback.from_dict({"card_id": "c", "is_fraud": "yes"})
    with pytest.raises(InvalidFeedback, match="card_id"):
        Feedback.from_dict({"is_fraud": True})
