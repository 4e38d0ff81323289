"""Where Kafka's default partitioner puts a keyed record: murmur2 of the key, made positive,
modulo the partition count, as the Java client and aiokafka's ``DefaultPartitioner`` do. The bridge
picks the partitions of its two records with it and the worker the partition of each forwarded
entity key, so a key always lands on the partition (and table partition) Faust expects;
:class:`EntityPlacement` places a merchant's known locations round-robin instead.

>>> partition_for(b"loc:NYC", 8) == partition_for(b"loc:NYC", 8) < 8
True
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
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


class EntityPlacement:
    """The entity partition of an entity key (``loc:…``, ``pi:…``, ``emp:…``).

    A merchant's locations are few, known (the locations file) and carry most of the entity
    scope's work; placed by hash, a handful of busy stores can land mostly on one worker's
    partitions (in the benchmark's data two thirds of it went to one of two workers, whatever
    the partition count). So the known locations go round-robin in the file's order, and every
    partition holds as many of them as the next; other keys (instruments, employees, locations
    the file does not list) go by :func:`partition_for`. Add new locations at the end of the
    file: a location whose place in the list moves starts its entity windows again.

    >>> place = EntityPlacement(["A", "B", "C"], 2)
    >>> [place(b"loc:A"), place(b"loc:B"), place(b"loc:C")]
    [0, 1, 0]
    >>> place(b"pi:x") == partition_for(b"pi:x", 2)
    True
    """

    def __init__(self, location_ids: Iterable[str], partitions: int) -> None:
        self.partitions = partitions
        self._known: dict[bytes, int] = {}
        for lid in location_ids:
            self._known.setdefault(f"loc:{lid}".encode(), len(self._known) % partitions)

    def __call__(self, key: bytes) -> int:
        p = self._known.get(key)
        return p if p is not None else partition_for(key, self.partitions)
