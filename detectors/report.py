"""``backtest --report FILE.png``: precision, recall and value protected against the threshold.

For every score threshold ``t`` (0-100), as if alerts were raised on events scoring ``t`` or more:
per-event precision and recall, and the share of fraudulent redemption value a hold on each card's
first such event would have protected (holds of a bulk batch's related cards are not counted, so
this curve is a lower bound of the printed figure). The policy's ``elevated`` and ``high``
thresholds are marked. Needs matplotlib (imported only here).
"""

from __future__ import annotations

from pathlib import Path

from detectors.metrics import Tracker


def curves(tracker: Tracker, thresholds: list[float]) -> dict[str, list[float]]:
    """Per-event precision and recall, and value protected, at each threshold."""
    scores, truth, cards = tracker.scores, tracker.truth, tracker.cards
    n_pos = sum(truth)
    redemptions = [r for r in tracker.redemptions if r[3] not in tracker.canceled]
    total_value = sum(r[2] for r in redemptions) or 1
    out: dict[str, list[float]] = {"threshold": [], "precision": [], "recall": [],
                                   "value_protected": []}
    for t in thresholds:
        tp = fp = 0
        first: dict[str, int] = {}
        for pos, (s, y) in enumerate(zip(scores, truth, strict=True)):
            if s >= t:
                if y:
                    tp += 1
                else:
                    fp += 1
                first.setdefault(cards[pos], pos)
        protected = sum(a for card, pos, a, _ in redemptions if first.get(card, 1 << 62) < pos)
        out["threshold"].append(t)
        out["precision"].append(tp / (tp + fp) if tp + fp else 1.0)
        out["recall"].append(tp / n_pos if n_pos else 0.0)
        out["value_protected"].append(protected / total_value)
    return out


def draw_report(tracker: Tracker, path: str | Path, elevated: float = 55.0,
                high: float = 80.0) -> None:
    """Write the PNG (raises ImportError without matplotlib)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    c = curves(tracker, [float(t) for t in range(0, 101, 2)])
    fig, ax = plt.subplots(figsize=(8, 5), dpi=120)
    ax.plot(c["threshold"], c["precision"], label="precision (events)")
    ax.plot(c["threshold"], c["recall"], label="recall (events)")
    ax.plot(c["threshold"], c["value_protected"], label="value protected")
    for x, name in ((elevated, "elevated"), (high, "high")):
        ax.axvline(x, color="grey", linestyle="--", linewidth=0.8)
        ax.text(x + 0.5, 0.02, name, color="grey", fontsize=8)
    ax.set_xlabel("score threshold")
    ax.set_ylabel("share")
    ax.set_ylim(0, 1.02)
    ax.set_xlim(0, 100)
    ax.set_title("GiftGuard backtest: precision, recall and value protected by threshold")
    ax.legend(loc="lower left")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
