"""``python -m tests.fakes.lossy_worker worker ...``: the worker, with records lost on their way
to the scoring loops once, as Faust lost them around a rebalance (fetched, then never
delivered).

``GG_LOSE`` lists ``topic:partition:first:last`` ranges (comma-separated, absolute offsets). The
first time a fetch hands one of those records to the worker's delivery it is dropped; when it is
fetched again it goes through. Everything else is the real worker (``streams.cli``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from streams.cli import main
from streams.delivery import Delivery, Record


def _ranges(spec: str) -> dict[tuple[str, int], tuple[int, int]]:
    out = {}
    for part in filter(None, spec.split(",")):
        topic, partition, first, last = part.rsplit(":", 3)
        out[(topic, int(partition))] = (int(first), int(last))
    return out


LOSE = _ranges(os.environ.get("GG_LOSE", ""))
_lost: set[tuple[str, int, int]] = set()
_reported: set[tuple[str, int]] = set()
_records = Delivery.records


def _lossy_records(self: Delivery, tp: Any, fetched: list[Any]) -> list[Record]:
    kept = []
    for record in _records(self, tp, fetched):
        span = LOSE.get((record.topic, record.partition))
        key = (record.topic, record.partition, record.offset)
        if span and span[0] <= record.offset <= span[1] and key not in _lost:
            _lost.add(key)
            if key[:2] not in _reported:
                _reported.add(key[:2])
                print(f"lossy_worker: dropped {record.topic}[{record.partition}] from offset "
                      f"{record.offset}", flush=True)
            continue
        kept.append(record)
    return kept


Delivery.records = _lossy_records  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
