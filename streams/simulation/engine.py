"""The run: schedule cards and incidents per day, merge every card's script by time, and turn
each activity into the Square webhook envelope with its label.

Memory holds only live cards (one paused script each), never the output: a day's new cards are
started when the merge reaches that day, and ``heapq`` always yields the earliest next event.
A run is cut into ``SimConfig.shards`` independent streams (own random generator, own cards and
incidents) merged by ``(time, shard)``, so several processes can generate it byte-identically.
"""

from __future__ import annotations

import heapq
import random
import time
from collections.abc import Callable, Iterable, Iterator

from streams.simulation import fraud, legit
from streams.simulation.context import Ctx, Script
from streams.simulation.model import Act, SimConfig, SimEvent
from streams.simulation.world import DAY_MS, build_locations

#: Relative volume Monday..Sunday.
WEEKDAY_FACTORS = (0.85, 0.85, 0.9, 0.95, 1.15, 1.35, 1.0)
STAFF_BATCH_SHARE = 0.03  # of cards, bought in batches of about 25
DORMANT_LEGIT_SHARE = 0.01
#: Days from the end a pattern must start so its fraud lands inside the run.
_LATEST_START = {"insider_credit": 6, "cloned_card": 3, "slow_drain": 2}

_DETAILS = {kind: f"{kind.lower()}_activity_details" for kind in (
    "ACTIVATE", "LOAD", "REDEEM", "CLEAR_BALANCE", "DEACTIVATE", "ADJUST_INCREMENT",
    "ADJUST_DECREMENT", "REFUND", "UNLINKED_ACTIVITY_REFUND", "IMPORT", "BLOCK", "UNBLOCK",
    "IMPORT_REVERSAL", "TRANSFER_BALANCE_FROM", "TRANSFER_BALANCE_TO")}

#: A scheduled start: a spawner and the incident id it is called with (None for legit ones).
Start = tuple[Callable[..., list[Script]], str | None]


class Schedule:
    """What starts on each local day, for the whole run and every shard alike: ordinary cards,
    trap batches and fraud incidents (each incident belongs to one shard)."""

    def __init__(self, cfg: SimConfig) -> None:
        rng = random.Random(cfg.seed)
        days, shards = cfg.days, cfg.shards
        cards = cfg.legit_cards
        self.shards = shards
        self.holiday = int(days * 0.65) if days >= 3 else None
        weekday = cfg.start.weekday()
        factors = [WEEKDAY_FACTORS[(weekday + d) % 7] for d in range(days)]
        if self.holiday is not None:
            factors[self.holiday] *= cfg.holiday_factor
        self.extra: dict[tuple[int, int], list[Start]] = {}  # (shard, day) -> starts
        self.prelude: dict[int, list[tuple[Start, int]]] = {}  # shard -> (start, day)
        staff = max(1, round(cards * STAFF_BATCH_SHARE / 25))
        dormant = max(1, round(cards * DORMANT_LEGIT_SHARE))
        n = 0
        for _ in range(staff):
            self._add(n, rng.randrange(days), (legit.staff_batch, None))
            n += 1
        for _ in range(dormant):
            self._add(n, rng.randrange(days), (_one(legit.dormant_legit), None), prelude=True)
            n += 1
        ordinary = max(0, cards - staff * 25 - dormant)
        total = sum(factors)
        self.ordinary = [_round(rng.random(), ordinary * f / total) for f in factors]
        if cfg.fraud_rate <= 0:
            return
        fraud_cards = cards * cfg.fraud_rate / (1 - cfg.fraud_rate)
        incident = 0
        for name, (share, size) in fraud.PATTERN_MIX.items():
            count = max(1, _round(rng.random(), fraud_cards * share / size))
            latest = max(1, days - _LATEST_START.get(name, 0))
            for _ in range(count):
                incident += 1
                start = (fraud.SPAWNERS[name], f"inc-{incident:05d}-{name}")
                self._add(n, rng.randrange(latest), start, prelude=name == "dormant_drain")
                n += 1

    def _add(self, n: int, day: int, start: Start, prelude: bool = False) -> None:
        shard = n % self.shards
        if prelude:
            self.prelude.setdefault(shard, []).append((start, day))
        else:
            self.extra.setdefault((shard, day), []).append(start)

    def ordinary_for(self, shard: int, day: int) -> int:
        """This shard's share of the day's ordinary cards (the remainder rotates by day)."""
        count, shards = self.ordinary[day], self.shards
        return (count + shards - 1 - (shard + day) % shards) // shards


def _one(spawn: Callable[[Ctx, int], Script]) -> Callable[[Ctx, int], list[Script]]:
    return lambda ctx, day: [spawn(ctx, day)]


def _round(u: float, x: float) -> int:
    """Stochastic rounding: the expected value is ``x``."""
    whole = int(x)
    return whole + (1 if u < x - whole else 0)


def _spawn(ctx: Ctx, start: Start, day: int) -> list[Script]:
    spawn, incident = start
    return spawn(ctx, day, incident) if incident else spawn(ctx, day)


class ShardRun:
    """One shard of a run: its own random stream, cards and incidents, in time order."""

    def __init__(self, cfg: SimConfig, schedule: Schedule, shard: int) -> None:
        self.cfg = cfg
        self.shard = shard
        self.ctx = Ctx(cfg, shard)
        self.schedule = schedule
        self.clamped = 0  # scripts that went back in time (should stay 0)
        self._day = -1 << 62
        self._prefix = ""

    def __iter__(self) -> Iterator[SimEvent]:
        ctx = self.ctx
        heap: list[tuple[int, int, Act | None, Script | int]] = []
        seq = 0
        now = -(1 << 62)
        end = ctx.end_ms

        def push(script: Script) -> None:
            nonlocal seq
            act = next(script, None)
            if act is None or act.ts >= end:
                return
            if act.ts < now:
                self.clamped += 1
                act.ts = now
                act.created = max(act.created, now) if not act.updated else act.created
            seq += 1
            heapq.heappush(heap, (act.ts, seq, act, script))

        for start, day in self.schedule.prelude.get(self.shard, ()):
            for script in _spawn(ctx, start, day):
                push(script)
        seq += 1
        heap.append((ctx.start_ms - DAY_MS // 2, seq, None, 0))  # day 0 starts here
        heapq.heapify(heap)
        envelope = self._event
        while heap:
            ts, _, act, script = heapq.heappop(heap)
            now = ts
            if act is None:
                day = script
                assert isinstance(day, int)
                self._start_day(day, push)
                if day + 1 < self.cfg.days:
                    seq += 1
                    heapq.heappush(heap, (ts + DAY_MS, seq, None, day + 1))
                continue
            yield envelope(act)
            push(script)  # type: ignore[arg-type]

    def _start_day(self, day: int, push: Callable[[Script], None]) -> None:
        ctx = self.ctx
        trap = "holiday_rush" if day == self.schedule.holiday else None
        for _ in range(self.schedule.ordinary_for(self.shard, day)):
            push(legit.ordinary_card(ctx, day, trap))
        for start in self.schedule.extra.get((self.shard, day), ()):
            for script in _spawn(ctx, start, day):
                push(script)

    def _time(self, ms: int) -> str:
        """RFC 3339 UTC with milliseconds, as Square writes ``created_at``."""
        day, rest = divmod(ms, DAY_MS)
        if day != self._day:
            self._day = day
            self._prefix = time.strftime("%Y-%m-%dT", time.gmtime(day * 86_400))
        sec, milli = divmod(rest, 1000)
        minute, sec = divmod(sec, 60)
        hour, minute = divmod(minute, 60)
        return f"{self._prefix}{hour:02d}:{minute:02d}:{sec:02d}.{milli:03d}Z"

    def _event(self, act: Act) -> SimEvent:
        ctx = self.ctx
        card = act.card
        details = ctx.details(act)  # draws the activity id first
        sent = self._time(act.ts)
        created = sent if act.created == act.ts else _rfc3339(act.created)
        act_id = act.act_id
        activity = {
            "id": act_id, "type": act.kind, "location_id": act.loc.location_id,
            "created_at": created, "gift_card_id": card.card_id, "gift_card_gan": card.gan,
            "gift_card_balance_money": {"amount": act.balance, "currency": ctx.currency},
            _DETAILS[act.kind]: details,
        }
        event_id = "square:" + act_id  # type: ignore[operator]
        if act.updated:
            kind = "gift_card.activity.updated"
            event_id += ":" + act.status.lower()  # type: ignore[union-attr]
        else:
            kind = "gift_card.activity.created"
        envelope = {"merchant_id": ctx.cfg.merchant_id, "type": kind,
                    "event_id": ctx.ids.event_id(), "created_at": sent,
                    "data": {"type": "gift_card_activity", "id": act_id,
                             "object": {"gift_card_activity": activity}}}
        return SimEvent(envelope, event_id, card.card_id, act.fraud, card.pattern,
                        card.incident_id, card.trap, act.ts)


def _rfc3339(ms: int) -> str:
    sec, milli = divmod(ms, 1000)
    return f"{time.strftime('%Y-%m-%dT%H:%M:%S', time.gmtime(sec))}.{milli:03d}Z"


class Simulation:
    """One seeded run: every shard merged by time (ties by shard), as :class:`SimEvent`."""

    def __init__(self, cfg: SimConfig, shards: Iterable[int] | None = None) -> None:
        self.cfg = cfg
        self.schedule = Schedule(cfg)
        self.locations = build_locations()
        wanted = range(cfg.shards) if shards is None else shards
        self.runs = [ShardRun(cfg, self.schedule, shard) for shard in wanted]

    @property
    def clamped(self) -> int:
        return sum(run.clamped for run in self.runs)

    def __iter__(self) -> Iterator[SimEvent]:
        if len(self.runs) == 1:
            yield from self.runs[0]
            return
        for _, event in self.tagged():
            yield event

    def tagged(self) -> Iterator[tuple[tuple[int, int], SimEvent]]:
        """Events with their merge key ``(ts_ms, shard)``: a total order across processes."""
        heap = []
        for run in self.runs:
            it = iter(run)
            first = next(it, None)
            if first is not None:
                heap.append((first.ts_ms, run.shard, first, it))
        heapq.heapify(heap)
        while heap:
            ts, shard, event, it = heap[0]
            yield (ts, shard), event
            following = next(it, None)
            if following is None:
                heapq.heappop(heap)
            else:
                heapq.heapreplace(heap, (following.ts_ms, shard, following, it))


def generate(cfg: SimConfig | None = None) -> Iterator[SimEvent]:
    """Labelled Square webhook envelopes in time order, lazily (see :class:`SimConfig`)."""
    return iter(Simulation(cfg or SimConfig()))
