"""One conformance suite over every detector: each rule through the engine, each model alone.

Every rule: fires on its pattern and not on its trap; same events -> same outputs (fresh engines,
pickled engines); state survives a bytes round trip unchanged; replays change nothing; missing
optional fields and unknown event types do not break it. Every model: pickle round trip and clone
keep its behaviour, the same seed gives the same scores, and it ranks a labelled fixture better
than chance.
"""

from __future__ import annotations

import copy
import math
import pickle
import random

import pytest

from detectors.engine import Engine
from detectors.entity import EntityState
from detectors.metrics import roc_auc
from detectors.models.card_stats import CardStats
from detectors.models.compact_hst import CompactHST
from detectors.models.ewstats import EWStats
from detectors.models.feedback_model import FeedbackModel
from detectors.models.location_model import LocationModel
from detectors.models.location_model import Params as LocationParams
from detectors.rules import RULE_NAMES
from detectors.state import CardState
from detectors.testing import LOCS, ev

DAY = 24 * 60


def _bulk(prefix, amount, n, pi=True):
    return [ev("activate", amount, i * 2, loc="SEA", card=f"{prefix}{i}",
               payment_ref="pay" if pi else f"{prefix}p{i}") for i in range(n)]


def _insider(prefix):
    out = []
    for i in range(3):
        out += [ev("activate", 500, i * 60, loc="SEA", card=f"{prefix}{i}"),
                ev("adjust_increment", 15000, i * 60 + 30, loc="SEA", card=f"{prefix}{i}")]
    return out


#: rule -> (events of the pattern, events of its trap)
FIXTURES = {
    "rapid_drain": (
        [ev("activate", 20000, 0, loc="SEA"), ev("redeem", 18000, 7, loc="WEB")],
        [ev("activate", 20000, 0, loc="SEA"), ev("redeem", 18000, 7, loc="SEA")],
    ),
    "impossible_travel": (
        [ev("activate", 20000, 0, loc="SEA"), ev("redeem", 3000, 2 * DAY, loc="SEA"),
         ev("redeem", 3000, 2 * DAY + 60, loc="MIA")],
        [ev("activate", 20000, 0, loc="SEA"), ev("redeem", 3000, 2 * DAY, loc="SEA"),
         ev("redeem", 3000, 4 * DAY, loc="MIA")],
    ),
    "dormant_drain": (
        [ev("activate", 5000, 0, loc="SEA"), ev("redeem", 4000, 100 * DAY + 15 * 60, loc="WEB")],
        [ev("activate", 5000, 0, loc="SEA"), ev("redeem", 4000, 100 * DAY + 8 * 60, loc="SEA")],
    ),
    "slow_drain": (
        [ev("activate", 20000, 0, loc="SEA")]
        + [ev("redeem", 1500, DAY + i * 40, loc="WEB") for i in range(6)],
        [ev("activate", 20000, 0, loc="SEA")]
        + [ev("redeem", 1500, DAY + i * 6 * DAY, loc="SEA") for i in range(6)],
    ),
    "insider_credit": (
        _insider("i"),
        [ev("activate", 5000, 0, loc="SEA"), ev("redeem", 4000, 60, loc="SEA"),
         ev("refund", 4000, 2 * DAY, loc="SEA")],
    ),
    "bulk_purchase": (_bulk("b", 50000, 6), _bulk("s", 2500, 40)),
}
#: Rules that need feedback first (tested in test_detectors_feedback.py).
NEEDS_FEEDBACK = {"known_fraud_instrument"}


def run(engine, events, cards=None, entities=None):
    """Card then entity scope, inline: (alerts, scores, card states, entity states)."""
    cards = {} if cards is None else cards
    entities = {} if entities is None else entities
    alerts, scores = [], []
    for e in events:
        o = engine.on_card_event(e, cards.get(e.card_id))
        cards[e.card_id] = o.state
        alerts += o.alerts
        entity_score, entity_alerts = engine.entity_scope(o, e, entities)
        alerts += entity_alerts
        scores.append(max(o.score, entity_score))
    return alerts, scores, cards, entities


def test_every_rule_has_a_fixture():
    assert set(FIXTURES) | NEEDS_FEEDBACK == set(RULE_NAMES)


@pytest.mark.parametrize("rule", sorted(FIXTURES))
def test_rule_fires_on_its_pattern_and_not_on_its_trap(rule):
    fraud, trap = FIXTURES[rule]
    alerts = run(Engine(locations=LOCS), fraud)[0]
    assert any(rule in a.rules for a in alerts), alerts
    assert run(Engine(locations=LOCS), trap)[0] == []
    fraud_scores = run(Engine(locations=LOCS), fraud)[1]
    trap_scores = run(Engine(locations=LOCS), trap)[1]
    assert max(fraud_scores) > max(trap_scores)


@pytest.mark.parametrize("rule", sorted(FIXTURES))
def test_rule_is_deterministic_and_survives_pickling(rule):
    fraud, trap = FIXTURES[rule]
    events = trap + fraud
    a = run(Engine(locations=LOCS), events)
    b = run(Engine(locations=LOCS), events)
    assert [x.to_dict() for x in a[0]] == [x.to_dict() for x in b[0]] and a[1] == b[1]
    # An engine pickled half-way (its learned state) carries on exactly like the original.
    engine = Engine(locations=LOCS)
    half = len(events) // 2
    first = run(engine, events[:half])
    clone = pickle.loads(pickle.dumps(engine))
    rest_a = run(engine, events[half:], dict(first[2]), dict(first[3]))
    rest_b = run(clone, events[half:], dict(first[2]), dict(first[3]))
    assert rest_a[1] == rest_b[1] and len(rest_a[0]) == len(rest_b[0])


@pytest.mark.parametrize("rule", sorted(FIXTURES))
def test_rule_state_round_trips_and_replays_change_nothing(rule):
    fraud, trap = FIXTURES[rule]
    engine = Engine(locations=LOCS)
    _, _, cards, entities = run(engine, trap + fraud)
    for raw in cards.values():
        assert CardState.decode(raw).encode() == raw and len(raw) <= 300
    for raw in entities.values():
        assert EntityState.decode(raw).encode() == raw
    # A card remembers its last 8 event ids: redelivery of recent events is a no-op.
    again = run(engine, (trap + fraud)[-8:], dict(cards), dict(entities))
    assert again[0] == [] and again[2] == cards and again[3] == entities


@pytest.mark.parametrize("rule", sorted(FIXTURES))
def test_rule_copes_with_missing_fields_and_unknown_types(rule):
    fraud, _ = FIXTURES[rule]
    bare = [ev(e.type, e.amount_minor, (e.ts - fraud[0].ts) / 60, loc=e.location_id,
               card=e.card_id) for e in fraud]
    run(Engine(), bare)                                   # no locations file, no payment refs
    odd = [ev("frobnicate", 100, 1), ev("transfer_balance_to", 500, 2), ev("import", 700, 3),
           ev("balance_check", 0, 4), ev("declined", 0, 5), ev("clear_balance", 0, 6)]
    run(Engine(locations=LOCS), fraud + odd)


# -- models ---------------------------------------------------------------------------------


def _normal_and_odd(rng, n_normal=400, n_odd=20):
    normal = [[rng.gauss(0.5, 0.05) for _ in range(4)] for _ in range(n_normal)]
    odd = [[rng.choice((0.05, 0.95)) for _ in range(4)] for _ in range(n_odd)]
    return normal, odd


def test_compact_hst_same_seed_same_scores_and_better_than_chance():
    rng = random.Random(1)
    normal, odd = _normal_and_odd(rng)
    scores = []
    for seed in (7, 7):
        hst = CompactHST(["a", "b", "c", "d"], n_trees=8, height=5, window_size=100, seed=seed)
        st = hst.new_state()
        for x in normal:
            hst.learn_one(st, [min(1, max(0, v)) for v in x])
        test = normal[-50:] + odd
        scores.append([hst.score_one(st, [min(1, max(0, v)) for v in x]) for x in test])
    assert scores[0] == scores[1]
    assert roc_auc(scores[0], [0] * 50 + [1] * len(odd)) > 0.9
    raw = hst.encode(st)
    assert hst.encode(hst.decode(raw)) == raw
    assert hst.decode(b"garbage").first_window          # another shape: start afresh


def test_location_model_pickles_clones_and_ranks_odd_sales_higher():
    m = LocationModel(LocationParams(window_size=50))
    es = EntityState()
    for i in range(300):
        e = ev("activate", 10000 + 2500 * (i % 3), i * 15, loc="SEA", card=f"n{i}")
        m.learn_one(es, e, e.ts, LOCS)
    for other in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        e = ev("activate", 50000, 300 * 15, loc="SEA", card="x")
        assert other.assess(es, e, e.ts, LOCS).score == m.assess(es, e, e.ts, LOCS).score
    usual = [m.assess(es, e, e.ts, LOCS).score
             for e in (ev("activate", 12500, 300 * 15 + i, loc="SEA") for i in range(10))]
    odd = [m.assess(es, e, e.ts, LOCS).score
           for e in (ev("activate", 90000, 300 * 15 + 3 * 60 + i, loc="SEA") for i in range(10))]
    assert roc_auc(usual + odd, [0] * 10 + [1] * 10) > 0.9


def test_card_stats_match_river_and_flag_unusual_amounts():
    from river import stats

    m, v, s = stats.EWMean(0.3), stats.EWVar(0.3), EWStats(0.3)
    for x in [math.log(a) for a in (2000, 2500, 1800, 3000, 2200)]:
        m.update(x)
        v.update(x)
        s.learn_one(x)
    assert math.isclose(s.mean, m.get()) and math.isclose(s.var, v.get())
    model = CardStats()
    st = CardState()
    for i, amount in enumerate((2000, 2500, 1800, 3000, 2200)):
        model.learn_one(st, amount, 1e9 + i * 86400)
        st.t_last = int(1e9 + i * 86400)
        st.n_redeem += 1
    st = CardState.decode(st.encode())                   # 32-bit floats in the state
    assert model.score_one(st, 2400, st.t_last + 86400) == []
    assert [n for n, _ in model.score_one(st, 40000, st.t_last + 60)] == ["amount_unusual",
                                                                           "pace_unusual"]
    assert pickle.loads(pickle.dumps(model)).score_one(st, 40000, st.t_last + 60) == \
        model.score_one(st, 40000, st.t_last + 60)


def test_feedback_model_pickles_and_handles_missing_and_new_features():
    from detectors.feedback import Feedback

    fm = FeedbackModel()
    rng = random.Random(3)
    for i in range(60):
        fraud = i % 2 == 0
        x = {"rapid_drain": 0.8 if fraud else 0.2, "type_redeem": 1.0}
        if rng.random() < 0.3:
            x["brand_new_feature"] = 1.0
        fm.remember(f"e{i}", x, ("rapid_drain",), "L1", None)
        fm.learn(Feedback(card_id=f"c{i}", is_fraud=fraud, event_id=f"e{i}"))
    clone = pickle.loads(pickle.dumps(fm))
    for x in ({"rapid_drain": 0.9}, {}, {"never_seen": 1.0, "type_redeem": 1.0}):
        assert clone.learned(x) == fm.learned(x)
    assert fm.learned({"rapid_drain": 0.9, "type_redeem": 1.0}) > \
        fm.learned({"rapid_drain": 0.1, "type_redeem": 1.0})
