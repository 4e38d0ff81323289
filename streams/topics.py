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
#: Internal, keyed by card: automatic hold decisions and retries of failed holds.
HOLD_COMMANDS = "giftguard.hold-commands"
#: Internal, keyed by Slack channel: what to post, so one worker paces each channel.
SLACK_OUTBOX = "giftguard.slack-outbox"
#: Internal, compacted, keyed by message: the Slack messages posted (ts, thread, alerts shown).
SLACK_MESSAGES = "giftguard.slack-messages"

PUBLIC_TOPICS = (WEBHOOKS_RAW, TRANSACTIONS, DEADLETTER, ALERTS, HOLDS, FEEDBACK, AUDIT)
INTERNAL_TOPICS = (ENTITY_EVENTS, HOLD_COMMANDS, SLACK_OUTBOX, SLACK_MESSAGES)
#: Topic configuration beyond the broker's defaults.
TOPIC_CONFIGS: dict[str, dict[str, str]] = {SLACK_MESSAGES: {"cleanup.policy": "compact"}}

#: Dead-letter record headers: the value is the original bytes; these say why and from where.
DLQ_REASON = "giftguard.reason"
DLQ_ERROR = "giftguard.error"
DLQ_SOURCE = "giftguard.source"
DLQ_TOPIC = "giftguard.topic"
DLQ_PARTITION = "giftguard.partition"
DLQ_OFFSET = "giftguard.offset"
