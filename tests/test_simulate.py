"""The simulator: reproducible, Square-shaped, labelled as documented, and delivered exactly once."""

from __future__ import annotations

import asyncio
import threading
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from detectors.events import CREDIT_TYPES, DEBIT_TYPES
from detectors.locations import Locations
from detectors.square import normalize_square
from streams.signatures import SQUARE_SIGNATURE_HEADER, verify_square
from streams.simulate import main
from streams.simulation import PATTERNS, TRAPS, SimConfig, SimEvent, generate
from streams.simulation.output import Tally, read_jsonl
from streams.simulation.poster import PostConfig, post_events

SMALL = SimConfig(cards=1500, days=14, seed=11)
KEY = "test-signature-key"
NOTIFY = "https://giftguard.example/webhooks/square"


@pytest.fixture(scope="module")
def events() -> list[SimEvent]:
    return list(generate(SMALL))


def _activity(event: SimEvent) -> dict:
    return event.envelope["data"]["object"]["gift_card_activity"]


def test_same_seed_same_files_and_other_seeds_differ(tmp_path: Path) -> None:
    args = ["--cards", "300", "--days", "10", "--quiet"]
    for name, seed in (("a", "5"), ("b", "5"), ("c", "6")):
        assert main([*args, "--seed", seed, "--out", str(tmp_path / name)]) == 0
    for file in ("events.jsonl", "labels.jsonl", "locations.json"):
        assert (tmp_path / "a" / file).read_bytes() == (tmp_path / "b" / file).read_bytes()
    assert (tmp_path / "a/events.jsonl").read_bytes() != (tmp_path / "c/events.jsonl").read_bytes()


def test_parallel_writer_gives_the_same_files(tmp_path: Path) -> None:
    args = ["--cards", "400", "--days", "7", "--seed", "9", "--quiet"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--jobs", "3", "--out", str(tmp_path / "three")]) == 0
    for file in ("events.jsonl", "labels.jsonl"):
        assert (tmp_path / "one" / file).read_bytes() == (tmp_path / "three" / file).read_bytes()


def test_every_pattern_and_trap_is_present(events: list[SimEvent]) -> None:
    fraud = Counter(e.pattern for e in events if e.is_fraud)
    assert set(PATTERNS) <= set(fraud), fraud
    traps = Counter(e.trap for e in events if e.trap)
    assert set(TRAPS) <= set(traps), traps
    assert not any(e.is_fraud for e in events if e.trap or not e.pattern)
    assert all(e.incident_id for e in events if e.pattern)


def test_labels_follow_who_acted(events: list[SimEvent]) -> None:
    activations = defaultdict(set)
    for e in events:
        if _activity(e)["type"] == "ACTIVATE":
            activations[e.pattern].add(e.is_fraud)
    assert activations["tamper_drain"] == {False}  # the real customer's purchase
    assert activations["bulk_stolen_payment"] == {True}  # bought with stolen payment
    assert activations["cloned_card"] == {False}
    fraud_share = sum(e.is_fraud for e in events) / len(events)
    assert 0.002 < fraud_share < 0.1


def test_every_envelope_normalizes_and_labels_match(events: list[SimEvent]) -> None:
    ids = set()
    for e in events:
        env = e.envelope
        assert set(env) == {"merchant_id", "type", "event_id", "created_at", "data"}
        activity = _activity(e)
        assert env["data"]["id"] == activity["id"]
        assert len(activity["gift_card_gan"]) == 16 and activity["gift_card_gan"].isdigit()
        assert f"{activity['type'].lower()}_activity_details" in activity
        event = normalize_square(env)
        assert event.event_id == e.event_id
        assert event.card_id == e.card_id
        ids.add(event.event_id)
    assert len(ids) == len(events)
    assert len({e.envelope["event_id"] for e in events}) == len(events)


def test_updates_share_the_activity_id(events: list[SimEvent]) -> None:
    created = {_activity(e)["id"]: e for e in events
               if e.envelope["type"] == "gift_card.activity.created"}
    updates = [e for e in events if e.envelope["type"] == "gift_card.activity.updated"]
    statuses = Counter(_activity(e)["redeem_activity_details"]["status"] for e in updates)
    assert statuses["COMPLETED"] > 0 and set(statuses) <= {"COMPLETED", "CANCELED"}
    for e in updates:
        first = created[_activity(e)["id"]]
        assert _activity(first)["redeem_activity_details"]["status"] == "PENDING"
        assert _activity(e)["created_at"] == _activity(first)["created_at"]


def test_refunds_point_at_an_earlier_sale_of_the_card(events: list[SimEvent]) -> None:
    sales = {}
    linked = 0
    for e in events:
        activity = _activity(e)
        if activity["type"] == "REDEEM":
            details = activity["redeem_activity_details"]
            sales[activity["id"]] = (activity["gift_card_id"], details["payment_id"])
        elif activity["type"] == "REFUND":
            details = activity["refund_activity_details"]
            if "redeem_activity_id" in details:
                linked += 1
                assert sales[details["redeem_activity_id"]] == (
                    activity["gift_card_id"], details["payment_id"])
            else:
                assert e.pattern == "insider_credit" and e.is_fraud  # a refund with no sale
    assert linked > 0


def test_time_order(events: list[SimEvent]) -> None:
    stamps = [e.envelope["created_at"] for e in events]
    assert stamps == sorted(stamps)
    assert [e.ts_ms for e in events] == sorted(e.ts_ms for e in events)


def test_balances_are_consistent(events: list[SimEvent]) -> None:
    balance: dict[str, int] = {}
    for e in events:
        ev = normalize_square(e.envelope)
        after = ev.balance_after_minor
        assert after is not None and after >= 0
        before = balance.get(ev.card_id)
        if before is None:
            assert ev.type == "activate", ev
            assert after == ev.amount_minor
        elif e.envelope["type"] == "gift_card.activity.updated":
            assert after == (before + ev.amount_minor if ev.status == "canceled" else before)
        elif ev.type == "clear_balance":
            assert after == 0
        elif ev.type in CREDIT_TYPES:
            assert after == before + ev.amount_minor, ev
        elif ev.type in DEBIT_TYPES:
            assert after == before - ev.amount_minor, ev
        else:
            assert after == before, ev
        balance[ev.card_id] = after


def test_incidents_are_counted_as_the_backtest_counts_them() -> None:
    events = list(generate(SimConfig(cards=600, days=7, seed=11)))  # one such incident
    tally = Tally()
    for e in events:
        tally.add(e)
    # An incident whose fraud falls after the run's end left only its victims' events: there is
    # nothing to catch yet, and the backtest does not count it.
    fraud = {e.incident_id for e in events if e.is_fraud and e.incident_id}
    assert tally.as_dict()["incidents"] == len(fraud) > 0


def test_files_match_the_library(tmp_path: Path) -> None:
    assert main(["--cards", "200", "--days", "7", "--seed", "3", "--quiet",
                 "--out", str(tmp_path)]) == 0
    envelopes = list(read_jsonl(tmp_path / "events.jsonl"))
    labels = list(read_jsonl(tmp_path / "labels.jsonl"))
    assert len(envelopes) == len(labels) > 100
    for env, label in zip(envelopes, labels, strict=True):
        assert normalize_square(env).event_id == label["event_id"]
        assert set(label) >= {"event_id", "card_id", "is_fraud", "pattern", "incident_id"}
    locations = Locations.load(tmp_path / "locations.json")
    used = {env["data"]["object"]["gift_card_activity"]["location_id"] for env in envelopes}
    assert used <= {loc.location_id for loc in locations.locations}
    assert any(loc.online for loc in locations.locations)
    lib = [orjson.dumps(e.envelope) for e in generate(SimConfig(cards=200, days=7, seed=3))]
    assert lib == (tmp_path / "events.jsonl").read_bytes().splitlines()


def test_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main([])
    assert exit_.value.code == 2
    with pytest.raises(SystemExit):
        main(["--out", "x", "--fraud-rate", "0.9"])
    assert "fraud_rate" in capsys.readouterr().err


class FlakyBridge:
    """A bridge that answers 503 to the first attempts (and some later ones), then 200."""

    def __init__(self, fail_first: int = 6, every: int = 7) -> None:
        self.fail_first = fail_first
        self.every = every
        self.attempts = 0
        self.accepted: list[bytes] = []
        self.bad_signatures = 0

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.attempts += 1
        if not verify_square(KEY, NOTIFY, body, request.headers.get(SQUARE_SIGNATURE_HEADER)):
            self.bad_signatures += 1
            return web.Response(status=401)
        if self.attempts <= self.fail_first or (self.every and self.attempts % self.every == 0):
            return web.Response(status=503, text="kafka unavailable")
        self.accepted.append(body)
        return web.Response(status=200)

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/webhooks/square", self.handle)
        return app


async def test_post_retries_until_every_event_arrives_once() -> None:
    bridge = FlakyBridge()
    server = TestServer(bridge.app(), host="127.0.0.1")
    await server.start_server()
    try:
        sim = list(generate(SimConfig(cards=120, days=5, seed=2)))
        cfg = PostConfig(url=str(server.make_url("/webhooks/square")), signature_key=KEY,
                         notification_url=NOTIFY, concurrency=4, backoff_base=0.005,
                         backoff_cap=0.02)
        summary = await post_events(sim, cfg)
    finally:
        await server.close()
    assert bridge.bad_signatures == 0
    assert summary.sent == len(sim) and summary.failed == 0
    assert summary.retried >= bridge.fail_first
    arrived = [orjson.loads(body)["event_id"] for body in bridge.accepted]
    assert sorted(arrived) == sorted(e.envelope["event_id"] for e in sim)  # each exactly once
    order = {e.envelope["event_id"]: i for i, e in enumerate(sim)}
    per_card: dict[str, list[int]] = defaultdict(list)
    for body in bridge.accepted:
        env = orjson.loads(body)
        per_card[env["data"]["object"]["gift_card_activity"]["gift_card_id"]].append(
            order[env["event_id"]])
    assert all(seq == sorted(seq) for seq in per_card.values())  # one card stays in order


@pytest.fixture
def threaded_bridge() -> Iterator[tuple[FlakyBridge, str]]:
    """A FlakyBridge on its own event loop in a thread, for the synchronous CLI."""
    bridge = FlakyBridge(fail_first=3, every=0)
    loop = asyncio.new_event_loop()
    server = TestServer(bridge.app(), host="127.0.0.1")
    loop.run_until_complete(server.start_server())
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield bridge, str(server.make_url("/webhooks/square"))
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()


def test_cli_posts_signed_with_key_from_env(
        threaded_bridge: tuple[FlakyBridge, str], tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    bridge, url = threaded_bridge
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("SQUARE_WEBHOOK_SIGNATURE_KEY", KEY)
    monkeypatch.setenv("SQUARE_WEBHOOK_URL", NOTIFY)
    code = main(["--cards", "40", "--days", "3", "--seed", "4", "--quiet", "--post", url,
                 "--out", str(tmp_path / "run"), "--concurrency", "2"])
    assert code == 0
    lines = (tmp_path / "run/events.jsonl").read_bytes().splitlines()
    assert sorted(bridge.accepted) == sorted(lines) and bridge.bad_signatures == 0
    assert f"sent {len(lines)}, retried" in capsys.readouterr().out


def test_cli_post_needs_a_signature_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("SQUARE_WEBHOOK_SIGNATURE_KEY", raising=False)
    assert main(["--cards", "20", "--post", "http://127.0.0.1:9/x"]) == 2
    assert "SQUARE_WEBHOOK_SIGNATURE_KEY" in capsys.readouterr().err
