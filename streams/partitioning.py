"""Where Kafka's default partitioner puts a keyed record: murmur2 of the key, made positive,
modulo the partition count, as the Java client and aiokafka's ``DefaultPartitioner`` do. The bridge
picks the partitions of its two records with it and the worker the partition of each forwarded
entity key, so a key always lands on the partition (and table partition) Faust expects.

>>> partition_for(b"loc:NYC", 8) == partition_for(b"loc:NYC", 8) < 8
True
"""

from __future__ import annotations

import struct
from functools import lru_cache

_M = 0x5BD1E995
_MASK = 0xFFFFFFFF
_WORDS: dict[int, struct.Struct] = {}


def murmur2(data: bytes) -> int:
    """Kafka's murmur2 of a key, as ``aiokafka.partitioner.murmur2`` computes it (the Java
    client's default partitioner), in fewer Python operations: the bridge hashes two keys per
    request and the worker one per forwarded event.

    >>> from aiokafka.partitioner import murmur2 as reference
    >>> keys = [b"", b"a", b"ab", b"abc", b"gftc:1", b"d121a65f-b460-430a-a372-b47bf7c8bfc2"]
    >>> [murmur2(k) for k in keys] == [reference(k) for k in keys]
    True
    """
    length = len(data)
    h = 0x9747B28C ^ length
    n4 = length >> 2
    words = _WORDS.get(n4)
    if words is None:
        words = _WORDS[n4] = struct.Struct(f"<{n4}I")
    for k in words.unpack_from(data):
        k = (k * _M) & _MASK
        h = ((h * _M) & _MASK) ^ (((k ^ (k >> 24)) * _M) & _MASK)
    extra = length & 3
    if extra:
        i = n4 << 2
        if extra == 3:
            h ^= data[i + 2] << 16
        if extra >= 2:
            h ^= data[i + 1] << 8
        h = ((h ^ data[i]) * _M) & _MASK
    h = ((h ^ (h >> 13)) * _M) & _MASK
    return h ^ (h >> 15)


def partition_of(key_hash: int, partitions: int) -> int:
    """The partition for a key whose :func:`murmur2` is ``key_hash``."""
    return (key_hash & 0x7FFFFFFF) % partitions


@lru_cache(maxsize=65536)
def partition_for(key: bytes, partitions: int) -> int:
    """Kafka's default partition for a keyed record (cached: entity keys come back)."""
    return partition_of(murmur2(key), partitions)
