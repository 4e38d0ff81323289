"""The benchmark's data: ``giftguard simulate`` output, and the canonical records the bridge
would have written for it (cached under ``var/bench``; the simulator is seeded, so a cached
run is the same data)."""

from __future__ import annotations

import random
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson

from bench.common import ROOT, VAR, log
from detectors.events import Event, format_time
from detectors.square import normalize_square, salted_hasher

#: The settings' default salt: the worker never sees raw references either way.
SALT = "giftguard-dev-salt"


@dataclass(frozen=True)
class Dataset:
    """A simulated run on disk: Square envelopes, labels, locations, canonical records."""

    dir: Path
    events: int  # the size asked of the simulator (it produces about that many)

    @property
    def envelopes(self) -> Path:
        return self.dir / "events.jsonl"

    @property
    def labels(self) -> Path:
        return self.dir / "labels.jsonl"

    @property
    def locations(self) -> Path:
        return self.dir / "locations.json"

    @property
    def canonical(self) -> Path:
        return self.dir / "canonical.jsonl"

    def records(self) -> Iterator[tuple[bytes, bytes]]:
        """``(card_id, canonical JSON)`` in file order, as the bridge writes them."""
        with open(self.canonical, "rb") as fh:
            for line in fh:
                value = line.rstrip(b"\n")
                # card_id is always present; slicing it out is cheaper than parsing the line
                start = value.index(b'"card_id":"') + 11
                yield value[start:value.index(b'"', start)], value

    def count(self) -> int:
        with open(self.canonical, "rb") as fh:
            return sum(buf.count(b"\n") for buf in iter(lambda: fh.read(1 << 20), b""))


def dataset(events: int, seed: int = 7) -> Dataset:
    """``giftguard simulate --events N`` (cached), plus the canonical records."""
    ds = Dataset(VAR / f"sim-{events}-s{seed}", events)
    if not (ds.envelopes.exists() and ds.locations.exists() and (ds.dir / ".done").exists()):
        log(f"simulating {events:,} events (giftguard simulate, seed {seed}) ...")
        started = time.perf_counter()
        subprocess.run([sys.executable, "-m", "streams.cli", "simulate", "--events", str(events),
                        "--seed", str(seed), "--out", str(ds.dir), "--jobs", "2", "--quiet"],
                       check=True, cwd=ROOT, stdout=subprocess.DEVNULL)
        (ds.dir / ".done").touch()
        log(f"simulated in {time.perf_counter() - started:.0f} s")
    if not ds.canonical.exists():
        _canonicalize(ds)
    return ds


def _canonicalize(ds: Dataset) -> None:
    """Square envelopes to canonical events, exactly as the bridge normalizes them."""
    hasher = salted_hasher(SALT)
    tmp = ds.canonical.with_suffix(".tmp")
    received = format_time(time.time())
    with open(ds.envelopes, "rb") as src, open(tmp, "wb") as out:
        for line in src:
            event = normalize_square(orjson.loads(line), hasher, received_at=received)
            out.write(event.to_json() + b"\n")
    tmp.rename(ds.canonical)


def activations(cards: int, locations: list[str], start: int = 0,
                seed: int = 1) -> Iterator[tuple[bytes, bytes]]:
    """``cards`` activations of distinct cards (``card_id`` ``bench-<n>``) at the given
    locations, 2.6 s apart (a million cards over a month), each with its own payment
    reference: what a card's state looks like once it was sold."""
    rng = random.Random(seed + start)
    t0 = 1_764_547_200  # 2025-12-01T00:00:00Z
    amounts = (2500, 5000, 5000, 10000, 10000, 20000)
    for n in range(start, start + cards):
        card = f"gftc:bench{n:012d}"
        amount = rng.choice(amounts)
        ev = Event(event_id=f"square:bench-act-{n}", type="activate", card_id=card,
                   location_id=rng.choice(locations), amount_minor=amount, currency="USD",
                   occurred_at=format_time(t0 + n * 2.6), source="square",
                   balance_after_minor=amount, status="completed",
                   payment_ref=f"{rng.getrandbits(64):016x}", gan_last4=f"{n % 10000:04d}",
                   merchant_id="MBENCH")
        yield card.encode(), ev.to_json()


def location_ids(ds: Dataset) -> list[str]:
    return [loc["location_id"] for loc in orjson.loads(ds.locations.read_bytes())]
