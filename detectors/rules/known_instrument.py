"""Known fraud instrument: a card bought with a payment instrument analysts confirmed as fraud.

Stolen payment cards are used again. When analysts confirm fraud on a card, the feedback model
(:mod:`detectors.models.feedback_model`) remembers the instrument that paid for it (hashed, with
a decayed count); a later activation or load paid with it fires this rule, with a score that grows
with the number of confirmed cards. It depends only on the global learned state, so it is a
card-scope rule.

>>> hit = KnownFraudInstrument().check(2.0, 20000, Params())
>>> hit.score, hit.reason
(70.0, 'bought with a payment instrument analysts confirmed on 2 fraudulent cards')
>>> KnownFraudInstrument().check(0.2, 20000, Params()) is None
True
"""

from __future__ import annotations

from dataclasses import dataclass

from detectors.rules.base import Hit, clamp


@dataclass(frozen=True, slots=True)
class Params:
    """Thresholds for :class:`KnownFraudInstrument` (policy ``rules.known_fraud_instrument``)."""

    enabled: bool = True
    min_confirmed: float = 0.5   # decayed count of confirmed cards
    score: float = 50.0          # with one confirmed card: evidence, not yet an alert
    step: float = 20.0           # added per further confirmed card


class KnownFraudInstrument:
    """Fires on a sale paid with an instrument confirmed fraudulent on other cards."""

    name = "known_fraud_instrument"
    Params = Params

    def check(self, confirmed: float, amount: int, p: Params) -> Hit | None:
        if confirmed < p.min_confirmed:
            return None
        n = max(1, round(confirmed))
        s = "" if n == 1 else "s"
        return Hit(
            rule=self.name,
            score=clamp(p.score + p.step * (n - 1), 0, 95),
            reason=f"bought with a payment instrument analysts confirmed on {n} fraudulent card{s}",
            amount_at_risk_minor=amount,
        )
