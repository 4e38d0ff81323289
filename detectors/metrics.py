"""Quality of a backtest against labels: incidents, cards, value, and per-event ranking.

Definitions (the ones ``giftguard backtest`` prints):

* **incident recall** — an incident (the labels' ``incident_id``; else the card) is caught when an
  alert is raised on one of its fraudulent events, or an alert held its card (as ``card_id`` or in
  ``related_card_ids``) before one of its fraudulent events; per pattern too.
* **card precision** — of the cards alerts name (``card_id`` and ``related_card_ids``), the share
  with at least one fraudulent event.
* **legitimate-card false-positive rate** — of the cards with no fraudulent event, the share named.
* **value protected** — of the value of fraudulent redemptions (canceled ones excluded), the share
  redeemed *after* the first alert that named the card: what a hold would have kept. Beside it,
  **value protectable**: the share an oracle could keep that alerts on each card's first
  fraudulent event (a drain that is the card's first fraudulent event cannot be prevented by an
  alert on a webhook that reports it after the fact).
* **ROC AUC** and **average precision** of the per-event score against the per-event label.

>>> roc_auc([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0]), average_precision([0.9, 0.8, 0.3, 0.1], [1, 0, 1, 0])
(0.75, 0.8333333333333333)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


def roc_auc(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Exact area under the ROC curve (ties count half), by ranks."""
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: p[0])
    n_pos = sum(1 for _, y in pairs if y)
    n_neg = len(pairs) - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    rank_sum = 0.0
    i = 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            j += 1
        avg_rank = (i + 1 + j) / 2.0
        rank_sum += avg_rank * sum(1 for k in range(i, j) if pairs[k][1])
        i = j
    return (rank_sum - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg)


def average_precision(scores: Sequence[float], labels: Sequence[int]) -> float:
    """Average precision (area under the precision-recall step curve, ties grouped)."""
    pairs = sorted(zip(scores, labels, strict=True), key=lambda p: -p[0])
    n_pos = sum(1 for _, y in pairs if y)
    if n_pos == 0:
        return float("nan")
    tp = fp = 0
    ap = 0.0
    prev_recall = 0.0
    i = 0
    while i < len(pairs):
        j = i
        while j < len(pairs) and pairs[j][0] == pairs[i][0]:
            tp += pairs[j][1] and 1 or 0
            fp += 0 if pairs[j][1] else 1
            j += 1
        recall = tp / n_pos
        ap += (recall - prev_recall) * (tp / (tp + fp))
        prev_recall = recall
        i = j
    return ap


@dataclass
class Quality:
    """The figures a labelled backtest prints (see the module docstring)."""

    incidents: int = 0
    incidents_caught: int = 0
    per_pattern: dict[str, tuple[int, int]] = field(default_factory=dict)  # caught, total
    cards_flagged: int = 0
    cards_flagged_fraud: int = 0
    fraud_cards: int = 0
    legit_cards: int = 0
    legit_cards_flagged: int = 0
    fraud_value: int = 0
    value_protected: int = 0
    value_protectable: int = 0
    roc_auc: float = float("nan")
    average_precision: float = float("nan")
    events: int = 0
    fraud_events: int = 0

    @property
    def incident_recall(self) -> float:
        return self.incidents_caught / self.incidents if self.incidents else float("nan")

    @property
    def card_precision(self) -> float:
        return self.cards_flagged_fraud / self.cards_flagged if self.cards_flagged else float("nan")

    @property
    def legit_fpr(self) -> float:
        return self.legit_cards_flagged / self.legit_cards if self.legit_cards else float("nan")

    @property
    def value_protected_share(self) -> float:
        return self.value_protected / self.fraud_value if self.fraud_value else float("nan")

    @property
    def value_protectable_share(self) -> float:
        return self.value_protectable / self.fraud_value if self.fraud_value else float("nan")

    def pattern_recall(self) -> dict[str, float]:
        return {k: c / t for k, (c, t) in sorted(self.per_pattern.items()) if t}

    def to_dict(self) -> dict[str, Any]:
        return {
            "incident_recall": self.incident_recall,
            "incidents": self.incidents,
            "incidents_caught": self.incidents_caught,
            "pattern_recall": self.pattern_recall(),
            "pattern_counts": {k: list(v) for k, v in sorted(self.per_pattern.items())},
            "card_precision": self.card_precision,
            "cards_flagged": self.cards_flagged,
            "fraud_cards": self.fraud_cards,
            "legit_cards": self.legit_cards,
            "legit_cards_flagged": self.legit_cards_flagged,
            "legit_fpr": self.legit_fpr,
            "fraud_value_minor": self.fraud_value,
            "value_protected_minor": self.value_protected,
            "value_protected": self.value_protected_share,
            "value_protectable_minor": self.value_protectable,
            "value_protectable": self.value_protectable_share,
            "roc_auc": self.roc_auc,
            "average_precision": self.average_precision,
            "events": self.events,
            "fraud_events": self.fraud_events,
        }

    def lines(self) -> list[str]:
        """Human summary, one figure per line."""
        out = [
            f"incident recall      {self.incident_recall:.3f}  "
            f"({self.incidents_caught}/{self.incidents} incidents)",
        ]
        for name, (caught, total) in sorted(self.per_pattern.items()):
            out.append(f"  {name:<22} {caught / total if total else float('nan'):.3f}  "
                       f"({caught}/{total})")
        out += [
            f"card precision       {self.card_precision:.3f}  "
            f"({self.cards_flagged_fraud}/{self.cards_flagged} cards named by alerts)",
            f"legit-card FPR       {self.legit_fpr:.4%}  "
            f"({self.legit_cards_flagged}/{self.legit_cards} legitimate cards)",
            f"value protected      {self.value_protected_share:.3f}  "
            f"({self.value_protected / 100:,.2f} of {self.fraud_value / 100:,.2f} fraudulent "
            f"redemptions; an oracle alerting on each card's first fraudulent event: "
            f"{self.value_protectable_share:.3f})",
            f"event ROC AUC        {self.roc_auc:.4f}",
            f"event avg precision  {self.average_precision:.4f}  "
            f"({self.fraud_events} fraudulent of {self.events} events)",
        ]
        return out


class Tracker:
    """Collects what :func:`Quality` needs while a backtest runs, one event at a time."""

    def __init__(self, labels: dict[str, dict[str, Any]]) -> None:
        self.labels = labels
        self.pos = 0
        self.scores: list[float] = []
        self.truth: list[int] = []
        self.cards: list[str] = []
        self.held: dict[str, int] = {}            # card -> position of the first alert naming it
        self.alerted_events: set[str] = set()
        self.card_fraud: dict[str, bool] = {}
        # Fraudulent events: (incident, pattern, card, position, event_id)
        self.fraud_events: list[tuple[str, str, str, int, str]] = []
        self.redemptions: list[tuple[str, int, int, str]] = []  # card, position, amount, id
        self.canceled: set[str] = set()

    def event(self, event: Any, score: float, alerts: list[Any]) -> None:
        pos = self.pos
        self.pos += 1
        label = self.labels.get(event.event_id)
        fraud = bool(label and label.get("is_fraud"))
        self.scores.append(score)
        self.truth.append(1 if fraud else 0)
        card = event.card_id
        self.cards.append(card)
        if fraud or card not in self.card_fraud:
            self.card_fraud[card] = fraud or self.card_fraud.get(card, False)
        for a in alerts:
            self.alerted_events.add(a.event_id)
            for c in (a.card_id, *a.related_card_ids):
                self.held.setdefault(c, pos)
        eid = event.event_id
        if fraud:
            incident = label.get("incident_id") or f"card:{card}"
            pattern = label.get("pattern") or "unknown"
            self.fraud_events.append((incident, pattern, card, pos, eid))
            if event.type == "redeem" and not eid.endswith((":completed", ":canceled")):
                if event.status != "canceled":
                    self.redemptions.append((card, pos, event.amount_minor, eid))
        if eid.endswith(":canceled"):
            self.canceled.add(eid.rpartition(":")[0])

    def quality(self) -> Quality:
        q = Quality(events=len(self.truth), fraud_events=sum(self.truth))
        incidents: dict[str, tuple[str, bool]] = {}
        for incident, pattern, card, pos, eid in self.fraud_events:
            caught = eid in self.alerted_events or self.held.get(card, 1 << 62) < pos
            _, before = incidents.get(incident, (pattern, False))
            incidents[incident] = (pattern, before or caught)
        for pattern, caught in incidents.values():
            c, t = q.per_pattern.get(pattern, (0, 0))
            q.per_pattern[pattern] = (c + caught, t + 1)
        q.incidents = len(incidents)
        q.incidents_caught = sum(1 for _, c in incidents.values() if c)
        flagged = set(self.held)
        q.cards_flagged = len(flagged)
        q.cards_flagged_fraud = sum(1 for c in flagged if self.card_fraud.get(c))
        q.fraud_cards = sum(1 for v in self.card_fraud.values() if v)
        q.legit_cards = len(self.card_fraud) - q.fraud_cards
        q.legit_cards_flagged = sum(1 for c in flagged if c in self.card_fraud
                                    and not self.card_fraud[c])
        first_fraud: dict[str, int] = {}
        for _, _, card, pos, _ in self.fraud_events:
            first_fraud.setdefault(card, pos)
        for card, pos, amount, eid in self.redemptions:
            if eid in self.canceled:
                continue
            q.fraud_value += amount
            if self.held.get(card, 1 << 62) < pos:
                q.value_protected += amount
            if first_fraud[card] < pos:
                q.value_protectable += amount
        if q.fraud_events and q.fraud_events < q.events:
            q.roc_auc = roc_auc(self.scores, self.truth)
            q.average_precision = average_precision(self.scores, self.truth)
        return q
