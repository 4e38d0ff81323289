"""One risk score from rule hits and model signals.

Each rule hit says, on its own, how likely the event is fraud (``score`` / 100); each model signal
is a smaller probability-like value. They combine as a *noisy OR*: the event is legitimate only if
every piece of evidence is a false alarm, so

    score = 100 * (1 - prod(1 - w_i * p_i))

where ``w_i`` is the weight feedback has learned for that evidence (1.0 until analysts say
otherwise). Two weak signals add up; one strong rule is enough; a rule analysts keep marking as a
false positive counts for less.

>>> from detectors.rules.base import Hit
>>> round(combine([Hit("rapid_drain", 90, "")], []), 1)
90.0
>>> round(combine([Hit("rapid_drain", 90, "")], [("amount_unusual", 0.2)]), 1)
92.0
>>> round(combine([Hit("rapid_drain", 90, "")], [], {"rapid_drain": 0.5}), 1)
45.0
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from detectors.rules.base import Hit

_EMPTY: Mapping[str, float] = {}


def combine(hits: Iterable[Hit], signals: Iterable[tuple[str, float]],
            weights: Mapping[str, float] = _EMPTY) -> float:
    """Noisy-OR of rule hits (0-100) and model signals (0-1), each scaled by its weight."""
    keep = 1.0
    for h in hits:
        w = weights.get(h.rule, 1.0)
        p = w * h.score / 100.0
        keep *= 1.0 - (p if p < 1.0 else 0.999)
    for name, value in signals:
        w = weights.get(name, 1.0)
        p = w * value
        keep *= 1.0 - (p if p < 1.0 else 0.999)
    return 100.0 * (1.0 - keep)


def level_of(score: float, elevated: float, high: float) -> str | None:
    """``"high"``, ``"elevated"`` or ``None`` for a score and the two thresholds.

    >>> level_of(85, 55, 80), level_of(60, 55, 80), level_of(20, 55, 80)
    ('high', 'elevated', None)
    """
    if score >= high:
        return "high"
    if score >= elevated:
        return "elevated"
    return None
