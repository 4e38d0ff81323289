"""Ordinary customers, and the legitimate behaviours that look like fraud (the traps).

Each function returns card scripts: iterators of :class:`Act` in time order, one card each.
"""

from __future__ import annotations

from streams.simulation.context import PENDING_SHARE, ActGen, Ctx, Script
from streams.simulation.model import Card
from streams.simulation.world import DAY_MS, MINUTE_MS, Location

ONLINE_PURCHASE_SHARE = 0.15
SAME_STORE_SHARE = 0.08
RELATIVE_GIFT_SHARE = 0.03


def spend_life(ctx: Ctx, card: Card, t: int, first_gap_days: float = 4.0) -> ActGen:
    """A card's everyday use after activation: purchases mostly near home over days to weeks,
    an occasional reload, a refund or a voided sale put back by staff. Returns the last time."""
    rnd = ctx.rng.random
    home = card.home
    end = ctx.end_ms
    loaded = False
    median = first_gap_days
    for _ in range(12):
        if card.balance <= 0:
            break
        pick = rnd()
        if home.online:
            loc = ctx.web() if pick < 0.5 else ctx.store()
        else:
            loc = home if pick < 0.78 else ctx.same_city(home) if pick < 0.9 else ctx.web()
        t = ctx.clock.busy_after(loc, t + ctx.days_later(median))
        median = 6.0
        if t >= end:
            return t
        if not loaded and rnd() < 0.05:
            loaded = True
            yield ctx.load(card, t, loc, 2500 if rnd() < 0.6 else 5000, ctx.instrument())
            continue
        amount = ctx.purchase(card.balance)
        if loc.online or rnd() >= PENDING_SHARE:
            sale = ctx.redeem_now(card, t, loc, amount)
            yield sale
        else:
            for sale in ctx.redeem(card, t, loc, amount, pos_flow=True):
                yield sale
            t = sale.ts
            if sale.status == "CANCELED":
                continue
        follow = rnd()
        if follow < 0.025 and not loc.online:
            t = ctx.clock.busy_after(loc, t + ctx.days_later(2.0, 0.6))
            back = sale.amount if rnd() < 0.7 else max(100, int(sale.amount * rnd()))
            yield ctx.refund(card, t, loc, back, sale)
        elif follow < 0.035 and not loc.online:
            t += ctx.minutes(2, 25)
            yield ctx.adjust(card, t, loc, sale.amount, "TRANSACTION_VOIDED")
        if 0 < card.balance < 800 and rnd() < 0.35:
            break  # a little left on the card that nobody comes back for
    if 0 < card.balance < 500 and rnd() < 0.03 and not home.online:
        t = ctx.clock.busy_after(home, t + ctx.days_later(10))
        if t < end:
            yield ctx.clear_balance(card, t, home, "REUSE_GIFTCARD")
    return t


def ordinary_card(ctx: Ctx, day: int, trap: str | None = None) -> Script:
    """A card bought by a customer on local day ``day``; some shoppers behave like traps."""
    rnd = ctx.rng.random
    home = ctx.web() if rnd() < ONLINE_PURCHASE_SHARE else ctx.store()
    if trap is None and not home.online:
        pick = rnd()
        if pick < SAME_STORE_SHARE:
            trap = "same_store_spend"
        elif pick < SAME_STORE_SHARE + RELATIVE_GIFT_SHARE:
            trap = "relative_gift"
    card = ctx.new_card(home, trap=trap)
    t = ctx.clock.busy_time(home, day)
    return _ordinary(ctx, card, t)


def _ordinary(ctx: Ctx, card: Card, t: int) -> Script:
    home = card.home
    rnd = ctx.rng.random
    yield ctx.activate(card, t, home, ctx.denomination(), ctx.instrument())
    if card.trap == "same_store_spend":
        # Bought a card and spent part of it at once, at the till where it was sold.
        t += ctx.minutes(1, 15)
        share = 0.2 + 0.4 * rnd()
        t = yield from ctx.redeem(card, t, home, max(300, int(card.balance * share)))
    elif card.trap == "relative_gift":
        # Sent to family in another city: first spend far away, days later, normal amounts.
        card.home = ctx.far_store(home, 500.0)
        t = ctx.clock.busy_after(card.home, t + ctx.days_later(4.0, 0.5) + DAY_MS)
        if t >= ctx.end_ms:
            return
        amount = min(ctx.purchase(card.balance), int(card.balance * (0.2 + 0.4 * rnd())))
        t = yield from ctx.redeem(card, t, card.home, max(300, amount))
    elif rnd() < 0.003:
        # The purchase of the card itself was returned: staff take the value back off.
        t += ctx.days_later(1.0, 0.5)
        yield ctx.adjust(card, t, home, -card.balance, "PURCHASE_WAS_REFUNDED")
        return
    yield from spend_life(ctx, card, t)


def staff_batch(ctx: Ctx, day: int) -> list[Script]:
    """Trap: a local business buys many low-value cards at once for its staff, on one card."""
    rnd = ctx.rng.random
    store = ctx.store()
    value = ctx.rng.choice((1000, 1500, 2000, 2500))
    count = ctx.rng.randint(10, 40)
    instrument = ctx.ids.instrument_id()
    order_id = ctx.ids.order_id()
    t0 = ctx.clock.busy_time(store, day)
    scripts = []
    for i in range(count):
        card = ctx.new_card(store if rnd() < 0.7 else ctx.same_city(store), trap="staff_batch")
        t = t0 + i * int(2_000 + rnd() * 6_000)
        scripts.append(_batch_card(ctx, card, t, store, value, instrument, order_id))
    return scripts


def _batch_card(ctx: Ctx, card: Card, t: int, store: Location, value: int, instrument: str,
                order_id: str) -> Script:
    yield ctx.activate(card, t, store, value, instrument, order_id=order_id)
    yield from spend_life(ctx, card, t, first_gap_days=6.0)


def dormant_legit(ctx: Ctx, day: int) -> Script:
    """Trap: a card bought months ago, found in a drawer and spent in person by its owner."""
    card = ctx.new_card(ctx.store(), trap="dormant_legit")
    return _dormant_legit(ctx, card, day)


def _dormant_legit(ctx: Ctx, card: Card, day: int) -> Script:
    yield from prelude(ctx, card)
    t = ctx.clock.busy_time(card.home, day)
    t = yield from ctx.redeem(card, t, card.home, ctx.purchase(card.balance))
    yield from spend_life(ctx, card, t, first_gap_days=8.0)


def prelude(ctx: Ctx, card: Card) -> ActGen:
    """A card's history months before the run: activated, partly spent, then left idle."""
    rnd = ctx.rng.random
    day = -ctx.rng.randint(60, 240)
    t = ctx.clock.busy_time(card.home, day)
    yield ctx.activate(card, t, card.home, ctx.denomination(), ctx.instrument())
    for _ in range(ctx.rng.randint(0, 2)):
        t = ctx.clock.busy_after(card.home, t + ctx.days_later(3.0))
        if t > ctx.start_ms - 30 * DAY_MS or card.balance < 3000:
            break
        amount = min(ctx.purchase(card.balance), card.balance - 1500)
        t = yield from ctx.redeem(card, t, card.home, amount, pos_flow=False)
    return t + int(rnd() * MINUTE_MS)
