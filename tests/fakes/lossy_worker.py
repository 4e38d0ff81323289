"""``python -m tests.fakes.lossy_worker worker ...``: the worker, with records lost on their way
to the agents once, as Faust lost them around a rebalance (fetched, then never delivered).

``GG_LOSE`` lists ``topic:partition:first:last`` ranges (comma-separated, absolute offsets). The
first time the consumer hands one of those records to Faust's conductor it is dropped; when it is
fetched again it goes through. Everything else is the real worker (``streams.cli``).
"""

from __future__ import annotations

import os
import sys
from typing import Any

from faust.transport.conductor import Conductor

from streams.cli import main


def _ranges(spec: str) -> dict[tuple[str, int], tuple[int, int]]:
    out = {}
    for part in filter(None, spec.split(",")):
        topic, partition, first, last = part.rsplit(":", 3)
        out[(topic, int(partition))] = (int(first), int(last))
    return out


LOSE = _ranges(os.environ.get("GG_LOSE", ""))
_lost: set[tuple[str, int, int]] = set()
_reported: set[tuple[str, int]] = set()
_compile = Conductor._compile_message_handler


def _lossy_handler(self: Conductor) -> Any:
    deliver = _compile(self)

    async def on_message(message: Any) -> None:
        span = LOSE.get((message.topic, message.partition))
        key = (message.topic, message.partition, message.offset)
        if span and span[0] <= message.offset <= span[1] and key not in _lost:
            _lost.add(key)
            if key[:2] not in _reported:
                _reported.add(key[:2])
                print(f"lossy_worker: dropped {message.topic}[{message.partition}] from offset "
                      f"{message.offset}", flush=True)
            return
        await deliver(message)

    return on_message


Conductor._compile_message_handler = _lossy_handler  # type: ignore[method-assign]

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
