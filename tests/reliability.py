"""Shared pieces of the reliability tests (``tests/test_reliability_*.py``).

A *run* is a simulated stream whose every identifier (event, card, location, payment instrument,
employee, terminal) carries a run prefix, so a test can share the session broker, its topics, the
``giftguard`` consumer group and the worker's tables with every other test and still count only
its own records. The same events go through the detectors in-process (:func:`reference`): that is
what the worker must end up with, whatever was broken on the way.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from aiokafka import AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from detectors.alerts import Alert
from detectors.engine import Engine
from detectors.events import Event
from detectors.locations import Locations
from detectors.policy import Policy
from detectors.square import normalize_square, salted_hasher
from streams import topics
from streams.agents import card_state
from streams.settings import Settings
from streams.simulation import SimConfig, SimEvent, generate
from streams.simulation.world import build_locations
from tests.kafka_helpers import end_offsets, read_since

GROUP = "giftguard"                       # the Faust app id is the consumer group
CARDS_CHANGELOG = "giftguard-cards-changelog"
ENTITIES_CHANGELOG = "giftguard-entities-changelog"
_PREFIXED = ("card_id", "location_id", "payment_ref", "customer_ref", "employee_id",
             "terminal_id")


def new_run() -> str:
    return "r" + uuid.uuid4().hex[:8]


@dataclass
class Run:
    """A prefixed simulated stream, its labels and the locations file the worker reads."""

    run: str
    events: list[Event]                 # canonical, in the order they are written
    bodies: list[bytes]                 # Square envelopes (for runs posted to a bridge)
    incident_of_card: dict[str, str]    # card id -> incident id (fraud cards and victims)
    pattern_of_incident: dict[str, str]
    locations: list[dict]
    locations_path: Path
    sim: list = field(default_factory=list)  # SimEvents with the prefixed envelopes (to POST)

    def by_id(self) -> dict[str, Event]:
        return {e.event_id: e for e in self.events}


def prefix_event(run: str, ev: Event) -> Event:
    """``ev`` with every identifier made unique to ``run`` (Square's id shape kept)."""
    data = ev.to_dict()
    provider, _, rest = data["event_id"].partition(":")
    data["event_id"] = f"{provider}:{run}-{rest}"
    for name in _PREFIXED:
        if data.get(name):
            data[name] = f"{run}-{data[name]}"
    return Event.from_dict(data)


def prefix_envelope(run: str, envelope: dict) -> dict:
    """A Square envelope whose ids (event, activity, card, location) are unique to ``run``."""
    env = orjson.loads(orjson.dumps(envelope))
    env["event_id"] = f"{run}-{env['event_id']}"
    env["data"]["id"] = f"{run}-{env['data']['id']}"
    act = env["data"]["object"]["gift_card_activity"]
    act["id"] = f"{run}-{act['id']}"
    act["gift_card_id"] = f"{run}-{act['gift_card_id']}"
    act["location_id"] = f"{run}-{act['location_id']}"
    return env


def sim_run(tmp_path: Path, *, events: int = 3000, days: int = 7, seed: int = 11,
            fraud_rate: float = 0.05, run: str | None = None) -> Run:
    """A labelled simulated stream of about ``events`` events, prefixed with a new run id."""
    run = run or new_run()
    sim = list(generate(SimConfig(events=events, days=days, seed=seed, fraud_rate=fraud_rate)))
    hasher = salted_hasher(Settings().giftguard_hash_salt.get_secret_value())
    envelopes = [prefix_envelope(run, s.envelope) for s in sim]
    canonical = [normalize_square(env, hasher) for env in envelopes]
    # normalize_square prefixed card, location and event ids through the envelope; the other
    # identifiers (hashed payment/customer refs, employee, terminal) get the prefix here.
    evs = []
    for ev in canonical:
        data = ev.to_dict()
        for name in ("payment_ref", "customer_ref", "employee_id", "terminal_id"):
            if data.get(name):
                data[name] = f"{run}-{data[name]}"
        evs.append(Event.from_dict(data))
    incident_of_card = {f"{run}-{s.card_id}": s.incident_id for s in sim if s.incident_id}
    pattern = {s.incident_id: s.pattern for s in sim if s.incident_id}
    locs = []
    for loc in build_locations():
        item = loc.to_json()
        item["location_id"] = f"{run}-{item['location_id']}"
        locs.append(item)
    path = tmp_path / f"locations-{run}.json"
    path.write_bytes(orjson.dumps(locs))
    posted = [SimEvent(env, f"square:{env['data']['object']['gift_card_activity']['id']}",
                       f"{run}-{s.card_id}", s.is_fraud, s.pattern, s.incident_id, s.trap, s.ts_ms)
              for s, env in zip(sim, envelopes, strict=True)]
    return Run(run, evs, [orjson.dumps(e) for e in envelopes], incident_of_card, pattern, locs,
               path, posted)


@dataclass
class Reference:
    """What the detectors make of a run in-process, each event once, in order."""

    card_alerts: dict[str, Alert] = field(default_factory=dict)     # alert_id -> alert
    entity_alerts: dict[str, Alert] = field(default_factory=dict)
    card_states: dict[str, bytes | None] = field(default_factory=dict)
    entity_states: dict[str, bytes | None] = field(default_factory=dict)

    @property
    def alerts(self) -> dict[str, Alert]:
        return {**self.card_alerts, **self.entity_alerts}


def engine_for(run: Run) -> Engine:
    return Engine(policy=Policy.load(None), locations=Locations.load(run.locations_path))


def reference(run: Run, events: Iterable[Event] | None = None) -> Reference:
    """Card scope then entity scope for every event, as the backtest does."""
    engine = engine_for(run)
    ref = Reference()
    for e in run.events if events is None else events:
        o = engine.on_card_event(e, ref.card_states.get(e.card_id))
        ref.card_states[e.card_id] = o.state
        ref.card_alerts.update((a.alert_id, a) for a in o.alerts)
        _, entity_alerts = engine.entity_scope(o, e, ref.entity_states)
        ref.entity_alerts.update((a.alert_id, a) for a in entity_alerts)
    return ref


def incidents_alerted(run: Run, alerts: Iterable[dict | Alert]) -> set[str]:
    """Incidents with at least one alert naming one of their cards."""
    out = set()
    for a in alerts:
        a = a if isinstance(a, dict) else a.to_dict()
        for card in [a["card_id"], *a.get("related_card_ids", [])]:
            if card in run.incident_of_card:
                out.add(run.incident_of_card[card])
    return out


def comparable(alert: dict) -> dict:
    """An alert without the fields that legitimately differ between deliveries."""
    return {k: v for k, v in alert.items() if k not in ("decided_at",)}


# -- Kafka ----------------------------------------------------------------------------------


async def produce(bootstrap: str, events: Iterable[Event], *, rate: float | None = None,
                  on_progress: Callable[[int], object] | None = None,
                  topic: str = topics.TRANSACTIONS) -> int:
    """Write canonical events keyed by card id (acks=all, idempotent); ``rate`` in events/s."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True,
                                linger_ms=5)
    await producer.start()
    n = 0
    started = time.monotonic()
    try:
        futures = []
        for e in events:
            futures.append(await producer.send(topic, e.to_json(), key=e.card_id.encode()))
            n += 1
            if rate and n % 20 == 0:
                delay = started + n / rate - time.monotonic()
                if delay > 0:
                    await asyncio.gather(*futures)
                    futures.clear()
                    await asyncio.sleep(delay)
            if on_progress is not None:
                result = on_progress(n)
                if asyncio.iscoroutine(result):
                    await result
        await asyncio.gather(*futures)
    finally:
        await producer.stop()
    return n


async def committed(bootstrap: str, group: str = GROUP) -> dict[TopicPartition, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        await admin.start()
        offsets = await admin.list_consumer_group_offsets(group)
        return {tp: meta.offset for tp, meta in offsets.items()}
    except KafkaError:  # e.g. the group's coordinator is not elected yet: nothing committed
        return {}
    finally:
        await admin.close()


async def wait_consumed(bootstrap: str, topic_names: Iterable[str], *, timeout: float = 90.0,
                        group: str = GROUP, alive: Callable[[], None] | None = None) -> None:
    """Until ``group`` has committed the current end of every partition of ``topic_names``."""
    names = list(topic_names)
    deadline = time.monotonic() + timeout
    ends: dict[TopicPartition, int] = {}
    for name in names:
        ends.update(await end_offsets(bootstrap, name))
    behind: dict[TopicPartition, int] = {}
    while time.monotonic() < deadline:
        if alive is not None:
            alive()
        done = await committed(bootstrap, group)
        behind = {tp: end - done.get(tp, 0) for tp, end in ends.items() if done.get(tp, 0) < end}
        if not behind:
            # The entity topic is written by the worker: once the transactions are committed
            # its end may have moved; look again.
            new_ends: dict[TopicPartition, int] = {}
            for name in names:
                new_ends.update(await end_offsets(bootstrap, name))
            if new_ends == ends:
                return
            ends = new_ends
            continue
        await asyncio.sleep(0.5)
    raise AssertionError(f"group {group} still behind after {timeout:.0f}s: {behind}")


async def read_topic(bootstrap: str, topic: str, since: dict | None = None,
                     keep: Callable[[object], bool] | None = None) -> list:
    """Every record of ``topic`` after ``since`` up to its current end (filtered by ``keep``)."""
    records = await read_since(bootstrap, topic, since, timeout=60)
    return [r for r in records if keep is None or keep(r)]


async def alerts_of(bootstrap: str, run: str, since: dict | None = None) -> list[dict]:
    """This run's alert records on ``giftcard.alerts`` (duplicates kept), in topic order."""
    records = await read_topic(bootstrap, topics.ALERTS, since,
                               keep=lambda r: r.key is not None and r.key.startswith(run.encode()))
    return [orjson.loads(r.value) for r in records]


async def table_from_changelog(bootstrap: str, changelog: str, prefix: str,
                               since: dict | None = None) -> dict[str, bytes | None]:
    """The last value per key of a table's changelog, for keys that start with ``prefix``."""
    out: dict[str, bytes | None] = {}
    for r in await read_topic(bootstrap, changelog, since,
                              keep=lambda r: r.key is not None and prefix.encode() in r.key):
        out[r.key.decode()] = card_state(r.value) if changelog == CARDS_CHANGELOG else r.value
    return out


async def changelog_history(bootstrap: str, keys: list[str], since: dict | None = None,
                            ) -> dict[str, list[tuple[int, int, int, int]]]:
    """For a failure message: each card key's ``cards`` changelog records in order, as
    (changelog partition, changelog offset, offset of the last event applied, events applied)."""
    from detectors.state import CardState
    from streams.agents import _MARK

    wanted = {k.encode() for k in keys}
    out: dict[str, list[tuple[int, int, int, int]]] = {k: [] for k in keys}
    for r in await read_topic(bootstrap, CARDS_CHANGELOG, since, keep=lambda r: r.key in wanted):
        mark = _MARK.unpack_from(r.value)[2] if r.value else -1
        n = CardState.decode(card_state(r.value)).n_events if r.value else 0
        out[r.key.decode()].append((r.partition, r.offset, mark, n))
    return out


def summarize_alerts(alerts: list[dict]) -> tuple[int, int, Counter]:
    """(records, distinct alert ids, records per alert id beyond the first)."""
    per_id = Counter(a["alert_id"] for a in alerts)
    return len(alerts), len(per_id), Counter({k: v - 1 for k, v in per_id.items() if v > 1})


def state_diff(worker: bytes | None, ref: bytes | None) -> dict[str, tuple]:
    """The card-state fields that differ: name -> (worker's, reference's)."""
    from detectors.state import CardState

    a, b = CardState.decode(worker), CardState.decode(ref)
    return {n: (getattr(a, n), getattr(b, n)) for n in CardState.__slots__
            if getattr(a, n) != getattr(b, n)}


#: Faust reads these from the environment: a killed worker's partitions move after 6 s (the
#: broker's minimum session timeout) instead of Faust's default 60 s.
FAST_FAILOVER = {"BROKER_SESSION_TIMEOUT": "6", "BROKER_HEARTBEAT_INTERVAL": "1"}


def replace(ev: Event, **changes: object) -> Event:
    data = ev.to_dict()
    data.update(changes)
    return Event.from_dict(data)



