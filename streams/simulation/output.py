"""Write a run to disk: ``events.jsonl``, ``labels.jsonl`` and ``locations.json``, streaming."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import orjson

from streams.simulation.model import SimEvent
from streams.simulation.world import Location

_LINE = orjson.OPT_APPEND_NEWLINE


def body_of(event: SimEvent) -> bytes:
    """The exact bytes a webhook delivery carries (and ``events.jsonl`` stores) for an event."""
    return orjson.dumps(event.envelope)


def kind_of(event: SimEvent) -> str:
    """``pattern:fraud`` / ``pattern:victim`` for incidents, the trap name, or ``normal``."""
    if event.pattern:
        return f"{event.pattern}:{'fraud' if event.is_fraud else 'legit'}"
    return event.trap or "normal"


class Tally:
    """Counts of a run, for the summary: events per pattern or trap, per activity type, cards."""

    def __init__(self) -> None:
        self.events = 0
        self.fraud = 0
        self._keys: Counter[tuple[str | None, str | None, bool, str]] = Counter()
        self._fraud_cards: set[str] = set()
        self.incidents: set[str] = set()
        self.first_ms: int | None = None
        self.last_ms: int | None = None

    def add(self, event: SimEvent) -> None:
        self.add_fields(event.pattern, event.trap, event.is_fraud,
                        event.envelope["data"]["object"]["gift_card_activity"]["type"],
                        event.incident_id, event.card_id, event.ts_ms)

    def add_fields(self, pattern: str | None, trap: str | None, is_fraud: bool, kind: str,
                   incident_id: str | None, card_id: str, ts_ms: int) -> None:
        """Count one event from its label fields and Square activity type."""
        self.events += 1
        self._keys[(pattern, trap, is_fraud, kind)] += 1
        if is_fraud:
            self.fraud += 1
            self._fraud_cards.add(card_id)
        if incident_id and is_fraud:
            # (as the backtest counts them: an incident whose fraud fell after the run's end
            # left only its victim's events, and nothing to catch)
            self.incidents.add(incident_id)
        if self.first_ms is None:
            self.first_ms = ts_ms
        self.last_ms = ts_ms

    @property
    def by_kind(self) -> Counter[str]:
        """Events per ``pattern:fraud|legit``, trap name, or ``normal``."""
        out: Counter[str] = Counter()
        for (pattern, trap, fraud, _), n in self._keys.items():
            if pattern:
                out[f"{pattern}:{'fraud' if fraud else 'legit'}"] += n
            else:
                out[trap or "normal"] += n
        return out

    @property
    def by_type(self) -> Counter[str]:
        """Events per Square activity type."""
        out: Counter[str] = Counter()
        for key, n in self._keys.items():
            out[key[3]] += n
        return out

    def as_dict(self) -> dict[str, Any]:
        return {"events": self.events, "fraud_events": self.fraud, "cards": self.by_type["ACTIVATE"],
                "fraud_cards": len(self._fraud_cards), "incidents": len(self.incidents),
                "by_kind": dict(sorted(self.by_kind.items())),
                "by_type": dict(sorted(self.by_type.items()))}


class RunWriter:
    """Streams events and labels to ``out_dir`` as they are generated."""

    def __init__(self, out_dir: str | Path, locations: Iterable[Location]) -> None:
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "locations.json").write_bytes(orjson.dumps(
            [loc.to_json() for loc in locations], option=orjson.OPT_INDENT_2 | _LINE))
        self._events: IO[bytes] = open(self.dir / "events.jsonl", "wb", buffering=1 << 20)
        self._labels: IO[bytes] = open(self.dir / "labels.jsonl", "wb", buffering=1 << 20)

    def write(self, event: SimEvent, body: bytes | None = None) -> None:
        if body is None:
            self._events.write(orjson.dumps(event.envelope, option=_LINE))
        else:
            self._events.write(body + b"\n")
        self._labels.write(orjson.dumps(event.label(), option=_LINE))

    def raw_files(self) -> tuple[IO[bytes], IO[bytes]]:
        """The open ``events.jsonl`` and ``labels.jsonl``, for writers with ready-made lines."""
        return self._events, self._labels

    def close(self) -> None:
        self._events.close()
        self._labels.close()

    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()


def write_run(events: Iterable[SimEvent], out_dir: str | Path,
              locations: Iterable[Location]) -> Tally:
    """Write every event of a run to ``out_dir``; return its tally."""
    tally = Tally()
    with RunWriter(out_dir, locations) as writer:
        for event in events:
            writer.write(event)
            tally.add(event)
    return tally


def read_jsonl(path: str | Path) -> Iterator[Any]:
    """Parse a JSON-lines file lazily (for tests and tools)."""
    with open(path, "rb") as handle:
        for line in handle:
            if line.strip():
                yield orjson.loads(line)
