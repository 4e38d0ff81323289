"""Acting on an alert (per mode) and learning from feedback, without Kafka."""

from __future__ import annotations

from typing import Any

import orjson
from prometheus_client import CollectorRegistry

from sinks.memory import MemorySink
from sinks.metrics import worker_metrics
from streams.actions import AlertActions, FeedbackLearner
from streams.holds import HoldPolicy
from tests.test_holds import make_alert


async def actions_in(mode: str) -> tuple[AlertActions, dict[str, list[Any]]]:
    out: dict[str, list[Any]] = {"holds": [], "audit": [], "commands": [], "slack": []}

    async def send_hold(key: str, value: bytes) -> None:
        out["holds"].append(orjson.loads(value))

    def collect(name: str):
        async def send(*args: Any) -> None:
            out[name].append(args[-1])
        return send

    return AlertActions(mode, MemorySink(), send_hold,  # type: ignore[arg-type]
                        worker_metrics(CollectorRegistry()), policy=HoldPolicy(),
                        send_audit=collect("audit"), send_command=collect("commands"),
                        send_slack=collect("slack")), out


async def test_each_mode_does_what_it_says() -> None:
    shadow, out = await actions_in("shadow")
    await shadow(make_alert(score=95))
    assert out["holds"][0]["action"] == "shadow" and out["commands"] == []
    assert out["audit"][0]["action"] == "shadow" and out["slack"][0]["alert"]["action"] == "alert"

    approve, out = await actions_in("approve")
    await approve(make_alert(score=95))
    assert out["holds"] == [] and out["commands"] == []
    assert out["slack"][0]["alert"]["action"] == "hold_requested"

    auto, out = await actions_in("auto")
    await auto(make_alert(score=95))
    await auto(make_alert("a2", score=85))
    assert [c["alert_id"] for c in out["commands"]] == ["a1"]  # 95 >= 90: at once
    assert [s["alert"]["action"] for s in out["slack"]] == ["hold", "hold_requested"]
    assert out["commands"][0]["user_id"] == "system"


def test_learner_feeds_verdicts_only() -> None:
    learned: list[Any] = []
    learner = FeedbackLearner(["x:1"], learned.append)
    assert learner.apply(orjson.dumps({"decision": "confirm_fraud", "card_id": "c",
                                       "is_fraud": True, "user_id": "U1", "rules": ["r"]}))
    assert not learner.apply(orjson.dumps({"decision": "hold", "card_id": "c"}))
    assert not learner.apply(b"not json")
    assert learned[0].is_fraud is True and learned[0].analyst == "U1"
