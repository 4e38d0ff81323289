"""The audit trail: one record on ``giftcard.audit`` (keyed by card) per decision and per action.

A record says **who** (``system`` or the Slack user id and name), **what** (``kind``: ``alert``
for the automatic decision taken on an alert, ``decision`` for an analyst's, ``pos`` for a call
to the POS and its answer; ``action``: hold, release, confirm_fraud, false_positive, shadow, ask),
**why** (alert id, score, rules, reasons, model version), the **outcome** (requested, done, failed,
skipped, shadow, unsupported) with the POS response or error, and **when** (``at``, RFC 3339).

``giftguard audit CARD_ID`` prints a card's history from the topic:

    giftguard audit gftc:6d55a72470d940c6ba09c0ab8ad08d20 [--json]

>>> r = audit_record("decision", "gftc:1", action="hold", who="U123", who_name="ana",
...                  alert={"alert_id": "a1", "score": 91.0, "rules": ["rapid_drain"]},
...                  outcome="requested", at=0.0)
>>> r["who"], r["why"]["score"], r["at"]
('U123', 91.0, '1970-01-01T00:00:00.000Z')
>>> print(format_record(r))
1970-01-01T00:00:00.000Z  decision  hold            requested  by U123 (ana)  alert a1  score 91  rapid_drain
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from typing import Any

import orjson

from detectors.events import format_time
from streams import topics

#: The parts of an alert an audit record keeps as its "why".
WHY_FIELDS = ("alert_id", "score", "level", "rules", "reasons", "model_version",
              "amount_at_risk_minor", "location_id", "event_id")


def audit_record(kind: str, card_id: str, *, action: str, who: str = "system",
                 who_name: str | None = None, alert: dict[str, Any] | None = None,
                 outcome: str | None = None, mode: str | None = None,
                 pos: dict[str, Any] | None = None, error: str | None = None,
                 at: float | None = None, **extra: Any) -> dict[str, Any]:
    """One audit record (JSON-ready). ``alert`` may be an alert's dict or the registry's copy."""
    alert = alert or {}
    why = {k: alert[k] for k in WHY_FIELDS if alert.get(k) is not None}
    record: dict[str, Any] = {
        "kind": kind, "card_id": card_id, "action": action, "who": who,
        "who_name": who_name, "why": why, "model_version": alert.get("model_version"),
        "outcome": outcome, "mode": mode, "pos": pos, "error": error,
        "at": format_time(time.time() if at is None else at), **extra}
    return {k: v for k, v in record.items() if v is not None}


def format_record(r: dict[str, Any]) -> str:
    """One line of ``giftguard audit``."""
    why = r.get("why") or {}
    who = r.get("who", "?") + (f" ({r['who_name']})" if r.get("who_name") else "")
    parts = [r.get("at", "?"), f"{r.get('kind', '?'):<8}", f"{r.get('action', '?'):<14}",
             f"{r.get('outcome', '-'):<9}", f"by {who}"]
    if why.get("alert_id"):
        parts.append(f"alert {why['alert_id']}")
    if why.get("score") is not None:
        parts.append(f"score {why['score']:.0f}")
    if why.get("rules"):
        parts.append(",".join(why["rules"]))
    pos = r.get("pos") or {}
    if pos.get("pos_activity_id"):
        parts.append(f"{pos.get('pos', 'pos')} {pos['pos_activity_id']}")
    if pos.get("amount_minor") is not None and r.get("kind") == "pos":
        parts.append(f"amount {pos['amount_minor']} {pos.get('currency') or ''}".rstrip())
    if r.get("error"):
        parts.append(f"error: {r['error']}")
    return "  ".join(parts)


async def card_history(bootstrap: list[str], card_id: str, timeout: float = 10.0,
                       ) -> list[dict[str, Any]]:
    """Every audit record of ``card_id``, oldest first, read from the card's partition."""
    from aiokafka import AIOKafkaConsumer, TopicPartition
    from aiokafka.partitioner import DefaultPartitioner

    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topics.AUDIT)
        if not parts:
            await consumer._client.force_metadata_update()
            parts = consumer.partitions_for_topic(topics.AUDIT) or set()
        if not parts:
            return []
        key = card_id.encode()
        ordered = sorted(parts)
        # The producer's partitioner (murmur2 of the key), so only the card's partition is read.
        tp = TopicPartition(topics.AUDIT, DefaultPartitioner()(key, ordered, ordered))
        consumer.assign([tp])
        await consumer.seek_to_beginning(tp)
        end = (await consumer.end_offsets([tp]))[tp]
        records: list[dict[str, Any]] = []
        deadline = asyncio.get_running_loop().time() + timeout
        while await consumer.position(tp) < end:
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"could not read {topics.AUDIT} to its end in {timeout:.0f}s")
            batch = await consumer.getmany(tp, timeout_ms=500)
            for rec in batch.get(tp, []):
                if rec.key == key:
                    try:
                        records.append(orjson.loads(rec.value))
                    except orjson.JSONDecodeError:
                        continue
        return records
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> int:
    """``giftguard audit CARD_ID [--json]``."""
    from streams.settings import ConfigError, load_settings

    parser = argparse.ArgumentParser(prog="giftguard audit",
                                     description="Print a card's decisions and actions.")
    parser.add_argument("card_id")
    parser.add_argument("--json", action="store_true", help="one JSON record per line")
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except ConfigError as exc:
        print(f"giftguard: {exc}", file=sys.stderr)
        return 2
    records = asyncio.run(card_history(settings.bootstrap_servers, args.card_id))
    for r in records:
        print(orjson.dumps(r).decode() if args.json else format_record(r))
    if not records:
        print(f"no audit records for {args.card_id}", file=sys.stderr)
        return 1
    return 0
