"""Topic names: the public contract (PRODUCT.md) and the worker's internal topics."""

from __future__ import annotations

WEBHOOKS_RAW = "giftcard.webhooks.raw"
TRANSACTIONS = "giftcard.transactions"
DEADLETTER = "giftcard.deadletter"
ALERTS = "giftcard.alerts"
HOLDS = "giftcard.holds"
FEEDBACK = "giftcard.feedback"
AUDIT = "giftcard.audit"

#: Internal: events re-keyed by location or payment instrument for the windowed detectors.
ENTITY_EVENTS = "giftguard.entity-events"

PUBLIC_TOPICS = (WEBHOOKS_RAW, TRANSACTIONS, DEADLETTER, ALERTS, HOLDS, FEEDBACK, AUDIT)

#: Dead-letter record headers: the value is the original bytes; these say why and from where.
DLQ_REASON = "giftguard.reason"
DLQ_ERROR = "giftguard.error"
DLQ_SOURCE = "giftguard.source"
DLQ_TOPIC = "giftguard.topic"
DLQ_PARTITION = "giftguard.partition"
DLQ_OFFSET = "giftguard.offset"
