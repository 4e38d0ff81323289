"""Insider credit: value put on cards by adjustments or refunds with no sale, then spent.

An employee adds value with manual adjustments or refunds that no purchase backs (a refund larger
than what the card ever redeemed, an unlinked refund, an increment that does not release a
freeze), on cheap cards, then spends it. Two scopes:

* card scope, :meth:`InsiderCredit.check_credit`: a manual credit of at least
  ``min_credit_minor`` on a card, worth at least ``min_ratio`` times what was ever sold onto it;
  and :meth:`InsiderCredit.check_spend`: a redemption that spends such value;
* entity scope, :meth:`InsiderCredit.check_concentration`: ``min_cards`` or more cards credited
  that way at one location (or by one employee) within ``window_days``; the alert names them all.

A refund of an earlier purchase, or the release of a freeze, is not a manual credit.

>>> from detectors.rules.base import CardContext
>>> from detectors.state import CardState
>>> from detectors.locations import Locations
>>> s = CardState()
>>> s.sold_total, s.balance = 500, 500
>>> ctx = CardContext.make(s, "S1", 1000, 15000, False, Locations())
>>> InsiderCredit().check_credit(ctx, "adjust_increment", Params()).reason
'manual credit of $150 with no sale behind it on a card sold for $5'
>>> rows = [[1000 * i, f"gc{i}", 15000] for i in range(3)]
>>> hit = InsiderCredit().check_concentration("loc", "Store 1", rows, "gc2", Params())
>>> hit.reason, hit.related_card_ids
('3 cards given $450 by manual credits with no sale at Store 1 within 33 minutes', ['gc0', 'gc1'])
"""

from __future__ import annotations

from dataclasses import dataclass

from detectors.rules.base import CardContext, Hit, clamp, duration, money

_KIND = {"adjust_increment": "manual credit", "refund": "refund",
         "unlinked_activity_refund": "unlinked refund"}


@dataclass(frozen=True, slots=True)
class Params:
    """Thresholds for :class:`InsiderCredit` (policy section ``rules.insider_credit``)."""

    enabled: bool = True
    min_credit_minor: int = 3000
    min_ratio: float = 2.0
    credit_score: float = 62.0
    spend_score: float = 66.0
    window_days: float = 7.0
    min_cards: int = 2
    min_total_minor: int = 10000
    concentration_score: float = 82.0
    max_related: int = 50


class InsiderCredit:
    """Manual credits without a sale: on the card, when spent, and concentrated at a place."""

    name = "insider_credit"
    Params = Params

    def check_credit(self, ctx: CardContext, kind: str, p: Params) -> Hit | None:
        """On a manual credit (the engine already decided no sale backs it)."""
        if ctx.amount < p.min_credit_minor:
            return None
        s = ctx.state
        sold_total = max(s.sold_total, 0)
        if sold_total and ctx.amount < p.min_ratio * sold_total:
            return None
        what = _KIND.get(kind, kind)
        on = (f"on a card sold for {money(sold_total, ctx.currency)}" if sold_total
              else "on a card never sold")
        ratio = ctx.amount / max(sold_total, 100)
        return Hit(
            rule=self.name,
            score=clamp(p.credit_score + 2 * min(5.0, ratio / p.min_ratio)),
            reason=f"{what} of {money(ctx.amount, ctx.currency)} with no sale behind it {on}",
            amount_at_risk_minor=s.balance + ctx.amount,
        )

    def check_spend(self, ctx: CardContext, p: Params) -> Hit | None:
        """On a redemption of a card holding unspent manual credit."""
        s = ctx.state
        if s.manual_amt < p.min_credit_minor:
            return None
        spent = min(ctx.amount, s.manual_amt)
        if spent < p.min_credit_minor // 2:
            return None
        return Hit(
            rule=self.name,
            score=clamp(p.spend_score),
            reason=(f"spent {money(spent, ctx.currency)} of value put on by a manual credit "
                    f"{duration(ctx.ts - s.t_manual)} earlier, with no sale behind it"),
            amount_at_risk_minor=max(s.balance, ctx.amount),
        )

    def check_concentration(self, kind: str, where: str, window: list[list], card_id: str,
                            p: Params, currency: str = "USD") -> Hit | None:
        """``window``: ``[ts, card_id, amount]`` manual credits at one place, oldest first."""
        cards: dict[str, int] = {}
        for _, cid, amt in window:
            cards[cid] = cards.get(cid, 0) + amt
        if len(cards) < p.min_cards:
            return None
        total = sum(cards.values())
        if total < p.min_total_minor:
            return None
        span = window[-1][0] - window[0][0]
        place = f"at {where}" if kind == "loc" else "by one employee"
        return Hit(
            rule=self.name,
            score=clamp(p.concentration_score + 3 * (len(cards) - p.min_cards)),
            reason=(f"{len(cards)} cards given {money(total, currency)} by manual credits with "
                    f"no sale {place} within {duration(span)}"),
            amount_at_risk_minor=total,
            related_card_ids=[c for c in cards if c != card_id][-p.max_related:],
        )
