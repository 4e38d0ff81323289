"""The fraud patterns of PRODUCT.md, one function each, returning one script per card.

Only the fraudster's own actions are labelled fraud: a victim's activation or purchases and the
merchant's later clean-up stay legitimate, though they carry the incident's pattern and id.
"""

from __future__ import annotations

import math

from streams.simulation.context import Ctx, Script
from streams.simulation.legit import prelude, spend_life
from streams.simulation.model import Card
from streams.simulation.world import DAY_MS, HOUR_MS, MINUTE_MS, Location, distance_km

#: Share of fraud cards per pattern, and the average number of cards one incident touches.
PATTERN_MIX: dict[str, tuple[float, float]] = {
    "tamper_drain": (0.30, 1.0),
    "bulk_stolen_payment": (0.25, 14.0),
    "cloned_card": (0.10, 1.0),
    "dormant_drain": (0.15, 3.5),
    "insider_credit": (0.10, 5.5),
    "slow_drain": (0.10, 1.0),
}
#: Per-transaction limit a slow drain stays under (minor units).
SLOW_DRAIN_LIMIT = 3000
#: Median wait between a tampered card's activation and its drain: about 40 minutes (log ms).
_TAMPER_DELAY = math.log(40 * MINUTE_MS)


def _drain_spot(ctx: Ctx, home: Location, t: int, online_share: float) -> tuple[Location, int]:
    """Where and when a fraudster spends: online at any hour, or an open store in another city."""
    if ctx.rng.random() < online_share:
        return ctx.web(), t
    loc = ctx.far_store(home, 500.0)
    hour = ctx.clock.local_hour(loc, t)
    return loc, t if 8 <= hour < 21 else ctx.clock.busy_after(loc, t)


def _drain(ctx: Ctx, card: Card, t: int, pieces: int, online_share: float) -> Script:
    """Empty the card in ``pieces`` quick redemptions (fraud)."""
    loc, t = _drain_spot(ctx, card.home, t, online_share)
    for i in range(pieces):
        if card.balance <= 0:
            return
        left = pieces - i
        amount = card.balance if left == 1 else int(card.balance * ctx.rng.uniform(0.3, 0.7))
        t = yield from ctx.redeem(card, t, loc, amount, fraud=True)
        t += ctx.minutes(1, 20)


def tamper_drain(ctx: Ctx, day: int, inc: str) -> list[Script]:
    """Numbers copied off racked cards; emptied minutes to hours after a customer activates."""
    card = ctx.new_card(ctx.store(), "tamper_drain", inc)
    return [_tamper(ctx, card, day)]


def _tamper(ctx: Ctx, card: Card, day: int) -> Script:
    rnd = ctx.rng.random
    t = ctx.clock.busy_time(card.home, day)
    yield ctx.activate(card, t, card.home, ctx.denomination(), ctx.instrument())
    loaded = card.balance
    delay = min(8 * HOUR_MS, max(3 * MINUTE_MS, int(ctx.rng.lognormvariate(_TAMPER_DELAY, 1.0))))
    pieces = 1 if rnd() < 0.6 else 2 if rnd() < 0.75 else 3
    yield from _drain(ctx, card, t + delay, pieces, online_share=0.7)
    if rnd() < 0.3:
        # The customer complains; staff put the value back (legitimate), and the card is used.
        t = ctx.clock.busy_after(card.home, t + delay + ctx.days_later(2.0, 0.4))
        if t < ctx.end_ms:
            yield ctx.adjust(card, t, card.home, loaded - card.balance, "SUPPORT_ISSUE")
            yield from spend_life(ctx, card, t)


def bulk_stolen_payment(ctx: Ctx, day: int, inc: str) -> list[Script]:
    """Many high-value cards bought at one store on a few stolen cards, drained within hours."""
    rnd = ctx.rng.random
    store = ctx.store()
    instruments = [ctx.ids.instrument_id() for _ in range(ctx.rng.randint(1, 3))]
    count = ctx.rng.randint(8, 20)
    t = ctx.clock.busy_time(store, day)
    scripts = []
    for _ in range(count):
        t += int(rnd() * 4 * MINUTE_MS) + 20_000
        value = ctx.rng.choice((20000, 25000, 30000, 50000)) if rnd() < 0.8 else 10000
        card = ctx.new_card(store, "bulk_stolen_payment", inc)
        scripts.append(_bulk_card(ctx, card, t, value, ctx.rng.choice(instruments)))
    return scripts


def _bulk_card(ctx: Ctx, card: Card, t: int, value: int, instrument: str) -> Script:
    yield ctx.activate(card, t, card.home, value, instrument, fraud=True)
    if ctx.rng.random() < 0.85:
        delay = ctx.minutes(20, 360)
        yield from _drain(ctx, card, t + delay, ctx.rng.randint(1, 2), online_share=0.6)
    else:
        # Not drained in time: the chargeback lands and Square deactivates the card.
        t += ctx.days_later(14.0, 0.3)
        if t < ctx.end_ms:
            yield ctx.deactivate(card, t, card.home, "CHARGEBACK_DEACTIVATE")


def cloned_card(ctx: Ctx, day: int, inc: str) -> list[Script]:
    """A copied card used far away shortly after the owner used it at home."""
    card = ctx.new_card(ctx.store(), "cloned_card", inc)
    return [_cloned(ctx, card, day)]


def _cloned(ctx: Ctx, card: Card, day: int) -> Script:
    home = card.home
    t = ctx.clock.busy_time(home, day)
    yield ctx.activate(card, t, home, ctx.rng.choice((10000, 15000, 20000)), ctx.instrument())
    t = ctx.clock.busy_after(home, t + int(ctx.rng.uniform(0.3, 2.5) * DAY_MS))
    t = yield from ctx.redeem(card, t, home, min(ctx.purchase(card.balance), card.balance // 3))
    for _ in range(ctx.rng.randint(1, 2)):
        if card.balance <= 0:
            break
        t, loc = _open_far_store(ctx, home, t)
        share = ctx.rng.uniform(0.5, 1.0)
        t = yield from ctx.redeem(card, t, loc, max(500, int(card.balance * share)), fraud=True)
        home = loc
    yield from spend_life(ctx, card, t)


def _open_far_store(ctx: Ctx, home: Location, t: int) -> tuple[int, Location]:
    """A store 1,000+ km away that is open soon after ``t``: too soon to have travelled."""
    for _ in range(12):
        t += ctx.minutes(15, 45)
        far = [s for s in ctx.stores if _far(s, home)
               and 8 <= ctx.clock.local_hour(s, t) < 21]
        if far:
            return t, ctx.rng.choice(far)
    loc = ctx.far_store(home, 1000.0)
    return ctx.clock.busy_after(loc, t), loc


def _far(a: Location, b: Location) -> bool:
    return distance_km(a, b) >= 1000.0


def dormant_drain(ctx: Ctx, day: int, inc: str) -> list[Script]:
    """Cards found by enumeration: idle for months, then emptied online in one night."""
    web = ctx.web()
    night = ctx.clock.night_time(web, day)
    scripts = []
    for i in range(ctx.rng.randint(1, 6)):
        card = ctx.new_card(ctx.store(), "dormant_drain", inc)
        scripts.append(_dormant(ctx, card, web, night + i * ctx.minutes(1, 12)))
    return scripts


def _dormant(ctx: Ctx, card: Card, web: Location, t: int) -> Script:
    yield from prelude(ctx, card)
    pieces = 1 if ctx.rng.random() < 0.8 else 2
    for i in range(pieces):
        amount = card.balance if i == pieces - 1 else card.balance // 2
        t = yield from ctx.redeem(card, t, web, amount, fraud=True)
        t += ctx.minutes(0.5, 5)


def insider_credit(ctx: Ctx, day: int, inc: str) -> list[Script]:
    """An employee puts value on cheap cards with adjustments and refunds (no sale), then
    spends it: all at one store, over a week or so."""
    store = ctx.store()
    scripts = []
    for _ in range(ctx.rng.randint(3, 8)):
        card = ctx.new_card(store, "insider_credit", inc)
        start = day + ctx.rng.randint(0, 6)
        scripts.append(_insider(ctx, card, store, start))
    return scripts


def _insider(ctx: Ctx, card: Card, store: Location, day: int) -> Script:
    rnd = ctx.rng.random
    t = ctx.clock.busy_time(store, day)
    yield ctx.activate(card, t, store, ctx.rng.choice((500, 1000)), ctx.ids.instrument_id(),
                       fraud=True)
    for _ in range(ctx.rng.randint(1, 3)):
        t = ctx.clock.busy_after(store, t + ctx.minutes(5, 600))
        amount = ctx.rng.randrange(5000, 25000, 500)
        pick = rnd()
        if pick < 0.5:
            reason = "COMPLIMENTARY" if rnd() < 0.6 else "SUPPORT_ISSUE"
            yield ctx.adjust(card, t, store, amount, reason, fraud=True)
        elif pick < 0.8:
            yield ctx.unlinked_refund(card, t, store, amount, fraud=True)
        else:
            yield ctx.refund(card, t, store, amount, None, fraud=True)
    while card.balance > 0:
        pick = rnd()
        loc = ctx.web() if pick < 0.5 else store if pick < 0.8 else ctx.same_city(store)
        t = ctx.clock.busy_after(loc, t + ctx.minutes(30, 2 * 24 * 60))
        amount = card.balance if rnd() < 0.5 else int(card.balance * ctx.rng.uniform(0.3, 0.8))
        t = yield from ctx.redeem(card, t, loc, amount, fraud=True)


def slow_drain(ctx: Ctx, day: int, inc: str) -> list[Script]:
    """A stolen card number drained by many small purchases, each under the per-sale limit."""
    card = ctx.new_card(ctx.store(), "slow_drain", inc)
    return [_slow(ctx, card, day)]


def _slow(ctx: Ctx, card: Card, day: int) -> Script:
    rnd = ctx.rng.random
    t = ctx.clock.busy_time(card.home, day)
    yield ctx.activate(card, t, card.home, ctx.rng.choice((15000, 20000, 25000, 30000)),
                       ctx.instrument())
    t += int(ctx.rng.uniform(0.2, 2.0) * DAY_MS)
    for _ in range(ctx.rng.randint(10, 30)):
        if card.balance < 300:
            break
        loc = ctx.web() if rnd() < 0.8 else ctx.same_city(card.home)
        if not loc.online:
            t = ctx.clock.busy_after(loc, t)
        amount = min(card.balance, ctx.rng.randrange(500, SLOW_DRAIN_LIMIT - 1, 1))
        t = yield from ctx.redeem(card, t, loc, amount, fraud=True)
        t += ctx.minutes(8, 180)


SPAWNERS = {
    "tamper_drain": tamper_drain,
    "bulk_stolen_payment": bulk_stolen_payment,
    "cloned_card": cloned_card,
    "dormant_drain": dormant_drain,
    "insider_credit": insider_credit,
    "slow_drain": slow_drain,
}
