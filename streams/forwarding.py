"""Events re-keyed for the entity scope, packed many to a record on the internal topic.

The card agent forwards about every second event to the location, payment instrument or
employee it concerns (``loc:…``, ``pi:…``, ``emp:…``). One Kafka record per forwarded event
would cost a whole Faust event on the entity side for a few microseconds of work; instead each
batch sends one record per partition of ``giftguard-entity-events``, holding the (entity key,
event) pairs bound there in order. The partition of a key is Kafka's default (murmur2), so a key
always lands on the same partition and its table partition with it. The topic is internal: other
services read ``giftcard.transactions`` and ``giftcard.alerts``, one event per record.

>>> packed = pack([(b"loc:NYC", b'{"a":1}'), (b"pi:x", b"{}")])
>>> unpack(packed)
[(b'loc:NYC', b'{"a":1}'), (b'pi:x', b'{}')]
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
