"""Bulk purchase: many high-value cards sold at one place, or on one payment instrument, in a window.

Stolen payment cards are turned into gift cards in batches: several high-denomination cards at one
store within an hour, on one or a few instruments, drained within hours elsewhere. The rule runs in
*entity scope* over the window of high-value sales (``min_card_amount_minor`` or more each) of the
last ``window_minutes``, and fires on a high-value sale when

* on one payment instrument (key ``pi:<payment_ref>``): at least ``min_cards_instrument`` cards;
* at one location (key ``loc:<id>``): at least ``min_cards_location`` cards, and either they were
  paid with few instruments (``min_cards_per_instrument`` cards per instrument or more), or so
  many is far above the location's normal rate (Poisson tail below ``max_surprise`` against the
  rate baseline of :mod:`detectors.models.location_model`) *and* the window's sales are far
  richer in high-value cards than the location's usual mix (binomial tail below
  ``max_mix_surprise``) — a holiday rush brings more sales of every size and does not fire;

and, in both cases, the cards add up to at least ``min_total_minor``.

Only high-value cards count: a business buying forty $25 cards for its staff is volume, not value,
and does not fire. The alert names the other cards of the batch in ``related_card_ids`` so they
can be held before they are drained — except on the rate evidence alone: with no instrument to
tie them together, the batch cannot be told from honest buyers in the same hour, so each sale in
the surge is alerted on its own, at ``surge_score``.

>>> rule = BulkPurchase()
>>> window = [[1000 + 60 * i, f"gc{i}", 50000, "pay1"] for i in range(4)]
>>> hit = rule.check("loc", "Store 7", window, "gc3", 50000, Params())
>>> hit.reason
'4 cards of $100 or more ($2,000 in total) sold at Store 7 within 3 minutes on 1 payment instrument'
>>> hit.related_card_ids
['gc0', 'gc1', 'gc2']
>>> staff = [[1000 + 10 * i, f"staff{i}", 2500, "pay2"] for i in range(40)]
>>> rule.check("pi", "Store 7", staff, "staff39", 2500, Params()) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass

from detectors.models.rate import binomial_tail, poisson_tail
from detectors.rules.base import Hit, clamp, duration, money


@dataclass(frozen=True, slots=True)
class Params:
    """Thresholds for :class:`BulkPurchase` (policy section ``rules.bulk_purchase``)."""

    enabled: bool = True
    window_minutes: float = 90.0
    min_card_amount_minor: int = 10000
    min_cards_instrument: int = 3
    min_cards_location: int = 4
    min_cards_per_instrument: float = 2.0
    max_surprise: float = 1e-9
    max_mix_surprise: float = 1e-6
    min_total_minor: int = 60000
    score: float = 80.0
    surge_score: float = 60.0
    pair_score: float = 35.0
    max_related: int = 50


class BulkPurchase:
    """Fires on the sale that completes a batch of high-value cards at one place or instrument."""

    name = "bulk_purchase"
    Params = Params

    def check(self, kind: str, where: str, window: list[list], card_id: str, amount: int,
              p: Params, currency: str = "USD", expected: float | None = None,
              usual_share: float = 0.25, sales: int | None = None) -> Hit | None:
        """``window``: ``[ts, card_id, amount, instrument?, ...]`` rows (this sale included),
        oldest first. ``expected``: the location's normal number of high-value sales in a window
        (``None``: no baseline yet); ``usual_share``: the share of its sales that are high-value;
        ``sales``: its sales of every size in the window (default: the rows)."""
        if amount < p.min_card_amount_minor:
            return None
        cards: dict[str, int] = {}
        instruments: dict[str, list[str]] = {}
        first_ts = last_ts = 0
        min_amount = p.min_card_amount_minor
        for row in window:
            amt = row[2]
            if amt < min_amount:
                continue
            cid = row[1]
            cards[cid] = cards.get(cid, 0) + amt
            if len(row) > 3 and row[3]:
                instruments.setdefault(row[3], []).append(cid)
            if not first_ts:
                first_ts = row[0]
            last_ts = row[0]
        n = len(cards)
        minimum = p.min_cards_instrument if kind == "pi" else p.min_cards_location
        if n < minimum:
            if kind == "pi" and n >= 2 and p.pair_score > 0:
                # Early evidence, below any alert level: a second high-value card on the
                # same instrument (many honest buyers do this; batches always do).
                return Hit(
                    rule=self.name, score=p.pair_score,
                    reason=(f"{n} cards of {money(p.min_card_amount_minor, currency)} or more "
                            f"sold on one payment instrument within "
                            f"{duration(last_ts - first_ts)}"),
                    amount_at_risk_minor=sum(cards.values()),
                    related_card_ids=[c for c in cards if c != card_id])
            return None
        total = sum(cards.values())
        if total < p.min_total_minor:
            return None
        how = ""
        strength = 0.0
        if kind == "loc":
            # The batch is the cards on instruments used more than once; other sales in the
            # window are bystanders and are not held.
            # (Most instruments bought one card: skip building their sets.)
            used = [cids for cids in instruments.values()
                    if len(cids) > 1 and len(set(cids)) > 1]
            batch = {c for cids in used for c in cids}
            per_instrument = len(batch) / len(used) if used else 0.0
            surprise = poisson_tail(n, expected) if expected is not None else 1.0
            if (card_id in batch and len(batch) >= minimum
                    and per_instrument >= p.min_cards_per_instrument
                    and sum(cards[c] for c in batch) >= p.min_total_minor):
                cards = {c: a for c, a in cards.items() if c in batch}
                n = len(cards)
                s = "" if len(used) == 1 else "s"
                how = f" on {len(used)} payment instrument{s}"
                strength = min(1.0, per_instrument / (3 * p.min_cards_per_instrument))
            elif (surprise <= p.max_surprise
                  and binomial_tail(n, max(n, sales or len(window)), usual_share)
                  <= p.max_mix_surprise):
                # No instrument ties the cards together, so there is no telling the batch from
                # honest buyers in the same hour: alert on this sale alone, hold nothing else.
                return Hit(
                    rule=self.name,
                    score=clamp(p.surge_score),
                    reason=(f"{n} cards of {money(p.min_card_amount_minor, currency)} or more "
                            f"({money(total, currency)} in total) sold at {where} within "
                            f"{duration(last_ts - first_ts)}, {expected:.1f} expected"),
                    amount_at_risk_minor=amount,
                )
            else:
                return None
        total = sum(cards.values())
        span = last_ts - first_ts
        place = f"at {where}" if kind == "loc" else "on one payment instrument"
        related = [c for c in cards if c != card_id][-p.max_related:]
        return Hit(
            rule=self.name,
            score=clamp(p.score + 2 * (n - minimum) + 6 * strength
                        + 4 * min(1.0, total / (4 * p.min_total_minor))),
            reason=(f"{n} cards of {money(p.min_card_amount_minor, currency)} or more "
                    f"({money(total, currency)} in total) sold {place} within "
                    f"{duration(span)}{how}"),
            amount_at_risk_minor=total,
            related_card_ids=related,
        )
