"""How fast the detector alone is, and how big its state: ``python -m detectors.bench EVENTS``.

Parses the events first (Square envelopes or canonical), then replays them through a fresh
:class:`~detectors.engine.Engine` — card scope and, inline, entity scope, as the backtest does —
``--repeat`` times, and prints the best run in events per second (wall clock and CPU time, which
other processes on a busy machine disturb less), with the per-card and per-entity state sizes.
``--json`` prints the same as one JSON object.
"""

from __future__ import annotations

import argparse
import sys
import time

import orjson

from detectors.backtest import read_events
from detectors.engine import Engine
from detectors.locations import Locations
from detectors.policy import Policy


def bench(events: list, engine_factory, repeat: int = 3) -> dict[str, float]:
    """Best-of-``repeat`` timing of ``events`` through fresh engines, plus state sizes."""
    best_wall = best_cpu = float("inf")
    cards: dict[str, bytes | None] = {}
    entities: dict[str, bytes | None] = {}
    for _ in range(repeat):
        engine = engine_factory()
        cards, entities = {}, {}
        on_card, entity_scope = engine.on_card_event, engine.entity_scope
        w0, c0 = time.perf_counter(), time.process_time()
        for e in events:
            out = on_card(e, cards.get(e.card_id))
            cards[e.card_id] = out.state
            if out.forward or out.counts:
                entity_scope(out, e, entities)
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    card_sizes = [len(s) for s in cards.values() if s]
    entity_sizes = [len(s) for s in entities.values() if s]
    return {
        "events": len(events),
        "events_per_second_wall": len(events) / best_wall,
        "events_per_second_cpu": len(events) / best_cpu,
        "cards": len(card_sizes),
        "card_state_bytes_mean": sum(card_sizes) / max(1, len(card_sizes)),
        "card_state_bytes_max": max(card_sizes, default=0),
        "entity_keys": len(entity_sizes),
        "entity_state_bytes_mean": sum(entity_sizes) / max(1, len(entity_sizes)),
        "entity_state_bytes_max": max(entity_sizes, default=0),
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m detectors.bench", description=__doc__)
    p.add_argument("events", metavar="EVENTS")
    p.add_argument("--locations", metavar="FILE")
    p.add_argument("--policy", metavar="FILE")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    policy = Policy.load(args.policy)
    locations = Locations.load(args.locations)
    t0 = time.perf_counter()
    events = list(read_events(args.events))
    parse_s = time.perf_counter() - t0
    r = bench(events, lambda: Engine(policy, locations), args.repeat)
    r["parse_events_per_second"] = len(events) / parse_s
    if args.json:
        sys.stdout.write(orjson.dumps(r, option=orjson.OPT_INDENT_2).decode() + "\n")
        return 0
    print(f"{r['events']:,} events; detector (best of {args.repeat}): "
          f"{r['events_per_second_wall']:,.0f} events/s wall, "
          f"{r['events_per_second_cpu']:,.0f} events/s CPU; parsing "
          f"{r['parse_events_per_second']:,.0f} events/s")
    print(f"card state: {r['card_state_bytes_mean']:.0f} bytes mean, "
          f"{r['card_state_bytes_max']} max over {r['cards']:,} cards")
    print(f"entity state: {r['entity_state_bytes_mean']:,.0f} bytes mean, "
          f"{r['entity_state_bytes_max']:,} max over {r['entity_keys']:,} keys")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
