"""Events re-keyed for the entity scope, packed many to a record on the internal topic.

The card agent forwards about every second event to the location, payment instrument or
employee it concerns (``loc:…``, ``pi:…``, ``emp:…``). One Kafka record per forwarded event
would cost a whole Faust event on the entity side for a few microseconds of work; instead each
batch sends one record per partition of ``giftguard-entity-events``, holding the (entity key,
event) pairs bound there in order. The partition of a key is fixed
(:class:`streams.partitioning.EntityPlacement`: the known locations round-robin, other keys by
Kafka's default, murmur2), so a key always lands on the same partition and its table partition
with it. The topic is internal: other services read ``giftcard.transactions`` and
``giftcard.alerts``, one event per record.

An everyday sale at a location only counts towards its rates of sales (``Outcome.counts``):
instead of the event, the pair's value is a run of sale times, several sales of a key in one
item (:func:`pack_times`), about half of the forwarded events in the simulated traffic.

>>> packed = pack([(b"loc:NYC", b'{"a":1}'), (b"pi:x", b"{}"), (b"loc:NYC", pack_times([1.5, 2.0]))])
>>> [(k, times_of(v) or v) for k, v in unpack(packed)]
[(b'loc:NYC', b'{"a":1}'), (b'pi:x', b'{}'), (b'loc:NYC', [1.5, 2.0])]
"""

from __future__ import annotations

import struct

_HEAD = struct.Struct(">HI")  # key length, value length
#: First byte of a packed record, so a stray record of another shape is refused, not misread.
MAGIC = b"\x01"


def pack(items: list[tuple[bytes, bytes]]) -> bytes:
    """``[(entity key, event JSON), ...]`` as one record value."""
    parts = [MAGIC]
    for key, value in items:
        parts.append(_HEAD.pack(len(key), len(value)))
        parts.append(key)
        parts.append(value)
    return b"".join(parts)


def unpack(data: bytes) -> list[tuple[bytes, bytes]]:
    """The pairs of a record made by :func:`pack`; ``ValueError`` if it is not one."""
    if data[:1] != MAGIC:
        raise ValueError("not a packed entity record")
    items = []
    pos, end, size = 1, len(data), _HEAD.size
    while pos < end:
        if pos + size > end:
            raise ValueError("truncated entity record")
        klen, vlen = _HEAD.unpack_from(data, pos)
        pos += size
        if pos + klen + vlen > end:
            raise ValueError("truncated entity record")
        items.append((data[pos:pos + klen], data[pos + klen:pos + klen + vlen]))
        pos += klen + vlen
    return items


#: First byte of a pair's value that is a run of sale times, not an event (JSON starts ``{``).
TIMES = b"\x02"


def pack_times(times: list[float]) -> bytes:
    """Sale times (POSIX seconds) as a pair's value."""
    return TIMES + struct.pack(f"<{len(times)}d", *times)


def times_of(value: bytes) -> list[float] | None:
    """The sale times of a value made by :func:`pack_times`; None for an event's JSON."""
    if value[:1] != TIMES:
        return None
    if (len(value) - 1) % 8:
        raise ValueError("truncated run of sale times")
    return list(struct.unpack_from(f"<{(len(value) - 1) // 8}d", value, 1))
