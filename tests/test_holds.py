"""The hold policy and the executor's state machine, without Kafka (a dict for the table)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from detectors.alerts import Alert
from detectors.policy import PolicyError
from sinks.metrics import worker_metrics
from sinks.pos import HoldRequest, HoldResult, MemoryPosClient
from streams.holds import CardHolds, HoldExecutor, HoldPolicy, Outputs, load_policies


def make_alert(alert_id: str = "a1", card_id: str = "gftc:1", score: float = 85.0,
               location_id: str = "L1") -> Alert:
    return Alert(alert_id=alert_id, card_id=card_id, location_id=location_id,
                 event_id=f"square:{alert_id}", occurred_at="t", decided_at="t", score=score,
                 level="high", rules=["rapid_drain"], reasons=["drained"],
                 amount_at_risk_minor=9000, model_version="m1")


class Recorder:
    def __init__(self) -> None:
        self.holds: list[dict[str, Any]] = []
        self.audit: list[dict[str, Any]] = []
        self.commands: list[dict[str, Any]] = []
        self.slack: list[dict[str, Any]] = []
        self.flushes = 0

    def outputs(self) -> Outputs:
        async def holds(key: str, rec: dict) -> None:
            self.holds.append(rec)

        async def audit(key: str, rec: dict) -> None:
            self.audit.append(rec)

        async def commands(key: str, rec: dict) -> None:
            self.commands.append(rec)

        async def slack(rec: dict) -> None:
            self.slack.append(rec)

        async def flush() -> None:
            self.flushes += 1

        return Outputs(holds=holds, audit=audit, commands=commands, slack=slack, flush=flush)


class FailingPos(MemoryPosClient):
    """Answers ``failed`` (retryable) to the first ``n`` calls."""

    def __init__(self, n: int, **kw: Any) -> None:
        super().__init__(**kw)
        self.n = n

    async def hold(self, req: HoldRequest) -> HoldResult:
        if self.n > 0:
            self.n -= 1
            self.requests.append(req)
            return HoldResult(pos="memory", action="hold", outcome="failed", card_id=req.card_id,
                              alert_id=req.alert_id, idempotency_key=req.idempotency_key,
                              error="square create ADJUST_DECREMENT answered 503",
                              status_code=503, retry_after=0.0, attempts=4)
        return await super().hold(req)


def executor(pos: Any, mode: str = "approve", policy: HoldPolicy | None = None,
             now: list[float] | None = None) -> tuple[HoldExecutor, Recorder]:
    rec = Recorder()
    clock = now or [1_000_000.0]
    ex = HoldExecutor(pos=pos, mode=mode, policy=policy or HoldPolicy(),  # type: ignore[arg-type]
                      outputs=rec.outputs(), metrics=worker_metrics(CollectorRegistry()),
                      clock=lambda: clock[0])
    ex.table = {}
    return ex, rec


def failed_open(ex: HoldExecutor) -> float:
    """``giftguard_holds_failed{pos="memory",action="hold"}`` as the worker would export it."""
    [metric] = ex.metrics.holds_failed.collect()
    return sum(s.value for s in metric.samples
               if s.labels == {"pos": "memory", "action": "hold"})


def decision(decision: str, alert_id: str = "a1", card_id: str = "gftc:1", **kw: Any) -> dict:
    return {"decision": decision, "alert_id": alert_id, "card_id": card_id,
            "user_id": "U1", **kw}


async def test_hold_pins_the_balance_then_release_gives_back_once() -> None:
    pos = MemoryPosClient(balances={"gftc:1": 12345})
    ex, rec = executor(pos)
    await ex.record_alert(make_alert())
    await ex.on_record(decision("hold"))
    await ex.on_record(decision("hold"))                     # replayed: no second call
    await ex.on_record(decision("hold", alert_id="a2"))      # another alert: already held
    entry = ex.entry("gftc:1")
    assert entry.held and entry.hold["amount_minor"] == 12345
    assert [(r.action, r.amount_minor) for r in pos.requests] == [("hold", 12345)]
    assert rec.flushes >= 1  # the pinned request reached Kafka before the call

    await ex.on_record(decision("release"))
    await ex.on_record(decision("false_positive", is_fraud=False))  # not held: nothing more
    assert [(r.action, r.amount_minor, r.alert_id) for r in pos.requests] == [
        ("hold", 12345, "a1"), ("release", 12345, "a1")]
    assert not ex.entry("gftc:1").held
    assert [(h["action"], h["outcome"]) for h in rec.holds] == [
        ("hold", "requested"), ("hold", "done"), ("hold", "skipped"),
        ("release", "requested"), ("release", "done")]
    assert {a["kind"] for a in rec.audit} == {"decision", "pos"}
    assert any("frozen" in s.get("line", "") and "<@U1>" in s["line"] for s in rec.slack)


async def test_a_failed_hold_is_recorded_alerted_and_retried_until_done() -> None:
    now = [1_000_000.0]
    pos = FailingPos(2, balances={"gftc:1": 500})
    ex, rec = executor(pos, now=now)
    await ex.on_record(decision("hold", location_id="L1"))
    op = ex.entry("gftc:1").ops["a1:hold"]
    assert op["status"] == "failed" and op["retryable"] and op["amount_minor"] == 500
    assert [s["kind"] for s in rec.slack] == ["note"]  # posted in the thread
    assert ex.due() == []                               # not before its time
    assert failed_open(ex) == 1                         # what GiftGuardHoldFailed watches
    for _ in range(3):
        now[0] += 400
        assert await ex.send_retries() == 1
        await ex.on_record(rec.commands[-1])
        if ex.entry("gftc:1").held:
            break
    assert ex.entry("gftc:1").held
    ex.due()
    assert failed_open(ex) == 0                         # done: the alert resolves
    keys = {r.idempotency_key for r in pos.requests}
    assert len(keys) == 1 and [r.amount_minor for r in pos.requests] == [500] * 3
    assert [h["outcome"] for h in rec.holds] == ["requested", "failed"] * 2 + ["requested", "done"]


async def test_shadow_mode_and_location_overrides() -> None:
    pos = MemoryPosClient(balances={"gftc:1": 100})
    policy = HoldPolicy.from_dict({"locations": {"S7": {"holds": {"mode": "shadow"}}}})
    ex, rec = executor(pos, policy=policy)
    await ex.on_record(decision("hold", location_id="S7"))
    assert pos.requests == [] and rec.holds[-1]["outcome"] == "shadow"
    assert policy.decide(make_alert(score=95, location_id="S1"), "auto") == "hold"
    assert policy.decide(make_alert(score=85, location_id="S1"), "auto") == "ask"
    assert policy.decide(make_alert(score=95, location_id="S7"), "auto") == "shadow"


def test_policy_file_with_holds_sections(tmp_path: Path) -> None:
    path = tmp_path / "policy.yaml"
    path.write_text("alert: {high: 75}\nholds: {auto_score: 92}\n"
                    "locations:\n  S7:\n    holds: {mode: approve}\n"
                    "    rules: {bulk_purchase: {min_cards_location: 12}}\n")
    policy, holds = load_policies(path)
    assert policy.at("X").alert.high == 75.0
    assert policy.at("S7").rule("bulk_purchase").min_cards_location == 12
    assert holds.at("X").auto_score == 92 and holds.mode_at("S7", "auto") == "approve"
    path.write_text("holds: {mode: sometimes}\n")
    with pytest.raises(PolicyError, match="holds.mode"):
        load_policies(path)


def test_registry_entry_round_trip_and_view() -> None:
    entry = CardHolds(card_id="gftc:1", held=True,
                      hold={"alert_id": "a1", "amount_minor": 5, "currency": "USD", "at": "t"})
    back = CardHolds.decode("gftc:1", entry.encode())
    assert back.view()["held"] and back.view()["amount_minor"] == 5
    assert CardHolds.decode("gftc:2", None).view()["held"] is False


def test_the_registry_waits_for_its_changelog_partitions_before_checking(tmp_path: Path,
                                                                       monkeypatch) -> None:
    """A fresh cluster: the group's metadata can show the just-created changelog with 0
    partitions. That is not a mismatch (it dead-lettered every alert's action); a real one
    still is, once the partitions are known."""
    from faust.exceptions import PartitionsMismatch

    from streams.app import create_app
    from streams.holds import declare_registry
    from streams.settings import Settings

    app = create_app(Settings(kafka_bootstrap_servers="127.0.0.1:9", giftguard_data_dir=tmp_path))
    table = declare_registry(app, 8)
    counts = {"giftcard.alerts": 8, table.changelog_topic_name: 0}
    monkeypatch.setattr(app.consumer, "topic_partitions", counts.get)
    table._verify_source_topic_partitions("giftcard.alerts")      # 0: not known yet, no error
    counts[table.changelog_topic_name] = 4
    with pytest.raises(PartitionsMismatch):
        table._verify_source_topic_partitions("giftcard.alerts")  # known, and wrong
    counts[table.changelog_topic_name] = 8
    table._verify_source_topic_partitions("giftcard.alerts")
