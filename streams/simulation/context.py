"""The run's shared context: randomness, places, time, and the ledger operations on cards.

Each operation updates the card's balance and returns the :class:`Act` Square would report, so a
card's script only decides *what happens when*; balances stay consistent by construction.
"""

from __future__ import annotations

import math
import random
from bisect import bisect
from collections.abc import Generator, Iterator

from streams.simulation.model import Act, Card, SimConfig
from streams.simulation.world import (
    DAY_MS,
    MINUTE_MS,
    Clock,
    Ids,
    Location,
    build_locations,
    distance_km,
)

ActGen = Generator[Act, None, int]
Script = Iterator[Act]

#: Share of point-of-sale redemptions reported PENDING first, and of those, the share canceled.
PENDING_SHARE = 0.12
CANCEL_SHARE = 0.08
# Common gift card values in cents, and their weights; the rest are odd amounts.
_DENOMINATIONS = (2500, 5000, 10000, 2000, 7500, 15000, 20000)
_DENOM_CUM = (30, 60, 80, 84, 88, 91, 93)
#: Median basket paid with a gift card: $28 (log of cents).
_BASKET_LOG = math.log(2800)


class Ctx:
    """Everything a card script needs; one per run."""

    def __init__(self, cfg: SimConfig, shard: int = 0) -> None:
        self.cfg = cfg
        self.shard = shard
        self.rng = random.Random(f"giftguard:{cfg.seed}:{shard}")
        self.ids = Ids(self.rng, shard, cfg.shards, random.Random(cfg.seed).randrange(10**11))
        self.clock = Clock(cfg.start, self.rng, cfg.days)
        self.start_ms = self.clock.start_ms
        self.end_ms = self.start_ms + cfg.days * DAY_MS
        self.currency = cfg.currency
        self.locations = build_locations()
        self.stores = [loc for loc in self.locations if not loc.online]
        self.online = [loc for loc in self.locations if loc.online]
        self._store_cum = _cumulative(s.weight for s in self.stores)
        self._instruments: list[str] = []

    # -- choices ---------------------------------------------------------------------------
    def store(self) -> Location:
        """A physical store, weighted by its size."""
        cum = self._store_cum
        return self.stores[bisect(cum, self.rng.random() * cum[-1])]

    def web(self) -> Location:
        return self.online[0] if self.rng.random() < 0.67 else self.online[1]

    def same_city(self, loc: Location) -> Location:
        """Another store in the same city (or the same store when it is the only one)."""
        near = [s for s in self.stores if s.city == loc.city and s is not loc]
        return self.rng.choice(near) if near else loc

    def far_store(self, loc: Location, min_km: float = 800.0) -> Location:
        """A store in another city at least ``min_km`` away when there is one."""
        far = [s for s in self.stores if s.city != loc.city and distance_km(s, loc) >= min_km]
        return self.rng.choice(far or [s for s in self.stores if s.city != loc.city])

    def denomination(self) -> int:
        """A gift card value: mostly $25/$50/$100, sometimes an odd amount."""
        rnd = self.rng.random() * 100
        for value, cum in zip(_DENOMINATIONS, _DENOM_CUM, strict=True):
            if rnd < cum:
                return value
        return self.rng.randrange(1000, 25000, 50)

    def purchase(self, balance: int) -> int:
        """A shopping basket paid with the card: the whole balance when it nearly covers it."""
        amount = max(150, int(math.exp(self.rng.gauss(_BASKET_LOG, 0.65))))
        return balance if amount >= balance * 0.85 else amount

    def instrument(self) -> str:
        """A buyer's payment card id; some customers come back with the same card."""
        pool = self._instruments
        if pool and self.rng.random() < 0.15:
            return self.rng.choice(pool)
        ref = self.ids.instrument_id()
        if len(pool) < 5000:
            pool.append(ref)
        else:
            pool[self.rng.randrange(5000)] = ref
        return ref

    def new_card(self, home: Location, pattern: str | None = None,
                 incident_id: str | None = None, trap: str | None = None) -> Card:
        return Card(self.ids.card_id(), self.ids.gan(), home, pattern, incident_id, trap)

    def minutes(self, low: float, high: float) -> int:
        return int(self.rng.uniform(low, high) * MINUTE_MS)

    def days_later(self, median_days: float, sigma: float = 0.9) -> int:
        return int(math.exp(self.rng.gauss(math.log(median_days), sigma)) * DAY_MS)

    # -- ledger operations -----------------------------------------------------------------
    def activate(self, card: Card, ts: int, loc: Location, amount: int, instrument: str,
                 fraud: bool = False, order_id: str | None = None) -> Act:
        card.balance += amount
        return Act(ts, "ACTIVATE", card, loc, amount, fraud, ref=order_id, instrument=instrument)

    def load(self, card: Card, ts: int, loc: Location, amount: int, instrument: str,
             fraud: bool = False) -> Act:
        card.balance += amount
        return Act(ts, "LOAD", card, loc, amount, fraud, instrument=instrument)

    def redeem_now(self, card: Card, ts: int, loc: Location, amount: int,
                   fraud: bool = False) -> Act:
        """A redemption reported COMPLETED at once (online, or a POS that captures at once)."""
        amount = min(amount, card.balance)
        card.balance -= amount
        return Act(ts, "REDEEM", card, loc, amount, fraud, "COMPLETED")

    def redeem(self, card: Card, ts: int, loc: Location, amount: int, fraud: bool = False,
               pos_flow: bool | None = None) -> ActGen:
        """Yield a redemption; at a store some go PENDING, then COMPLETED or CANCELED.

        Returns the time of the last notification.
        """
        rnd = self.rng.random
        pending = (not loc.online and rnd() < PENDING_SHARE) if pos_flow is None else pos_flow
        if not pending:
            yield self.redeem_now(card, ts, loc, amount, fraud)
            return ts
        amount = min(amount, card.balance)
        card.balance -= amount
        first = Act(ts, "REDEEM", card, loc, amount, fraud, "PENDING")
        yield first
        done = ts + int(rnd() * 85_000) + 5_000
        status = "CANCELED" if rnd() < CANCEL_SHARE else "COMPLETED"
        if status == "CANCELED":
            card.balance += amount
        yield Act(done, "REDEEM", card, loc, amount, fraud, status, ref=first, updated=True,
                  created=ts)
        return done

    def refund(self, card: Card, ts: int, loc: Location, amount: int,
               redeemed: Act | None = None, fraud: bool = False) -> Act:
        """A REFUND; with ``redeemed`` it points at the sale behind it, without it has none."""
        card.balance += amount
        return Act(ts, "REFUND", card, loc, amount, fraud, ref=redeemed)

    def unlinked_refund(self, card: Card, ts: int, loc: Location, amount: int,
                        fraud: bool = False) -> Act:
        card.balance += amount
        return Act(ts, "UNLINKED_ACTIVITY_REFUND", card, loc, amount, fraud)

    def adjust(self, card: Card, ts: int, loc: Location, amount: int, reason: str,
               fraud: bool = False) -> Act:
        """ADJUST_INCREMENT for a positive ``amount``, ADJUST_DECREMENT for a negative one."""
        if amount >= 0:
            card.balance += amount
            return Act(ts, "ADJUST_INCREMENT", card, loc, amount, fraud, ref=reason)
        amount = min(-amount, card.balance)
        card.balance -= amount
        return Act(ts, "ADJUST_DECREMENT", card, loc, amount, fraud, ref=reason)

    def clear_balance(self, card: Card, ts: int, loc: Location, reason: str,
                      fraud: bool = False) -> Act:
        card.balance = 0
        return Act(ts, "CLEAR_BALANCE", card, loc, 0, fraud, ref=reason)

    def deactivate(self, card: Card, ts: int, loc: Location, reason: str) -> Act:
        return Act(ts, "DEACTIVATE", card, loc, 0, False, ref=reason)

    # -- serialization -----------------------------------------------------------------------
    def details(self, act: Act) -> dict[str, object]:
        """The ``<type>_activity_details`` object Square sends; draws the activity's ids."""
        ids = self.ids
        kind = act.kind
        if act.updated:
            origin = act.ref
            act.act_id, act.payment_id = origin.act_id, origin.payment_id
        else:
            act.act_id = ids.activity_id()
        money = {"amount": act.amount, "currency": self.currency}
        if kind == "REDEEM":
            if act.payment_id is None:
                act.payment_id = ids.payment_id()
            return {"amount_money": money, "payment_id": act.payment_id, "status": act.status}
        if kind in ("ACTIVATE", "LOAD"):
            return {"amount_money": money, "order_id": act.ref or ids.order_id(),
                    "line_item_uid": ids.token(22),
                    "buyer_payment_instrument_ids": [act.instrument]}
        if kind == "REFUND":
            sale = act.ref
            if sale is None:
                return {"amount_money": money}
            return {"amount_money": money, "payment_id": sale.payment_id,
                    "redeem_activity_id": sale.act_id}
        if kind == "UNLINKED_ACTIVITY_REFUND":
            return {"amount_money": money, "reference_id": ids.token(12)}
        if kind in ("ADJUST_INCREMENT", "ADJUST_DECREMENT"):
            return {"amount_money": money, "reason": act.ref}
        return {"reason": act.ref}


def _cumulative(weights: Iterator[float] | list[float]) -> list[float]:
    out, total = [], 0.0
    for w in weights:
        total += w
        out.append(total)
    return out
