"""Dead-letter records: the original bytes as the value, why and where from in the headers."""

from __future__ import annotations

from streams import topics


def deadletter_headers(reason: str, error: str, source: str, topic: str | None = None,
                       partition: int | None = None, offset: int | None = None,
                       ) -> list[tuple[str, bytes]]:
    """Kafka headers for a record sent to ``giftcard.deadletter``.

    >>> dict(deadletter_headers("invalid_event", "missing field 'card_id'", "bridge"))[
    ...     "giftguard.reason"]
    b'invalid_event'
    """
    headers = [(topics.DLQ_REASON, reason.encode()), (topics.DLQ_ERROR, error[:2000].encode()),
               (topics.DLQ_SOURCE, source.encode())]
    if topic is not None:
        headers.append((topics.DLQ_TOPIC, topic.encode()))
    if partition is not None:
        headers.append((topics.DLQ_PARTITION, str(partition).encode()))
    if offset is not None:
        headers.append((topics.DLQ_OFFSET, str(offset).encode()))
    return headers
