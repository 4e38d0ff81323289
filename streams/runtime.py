"""Process set-up shared by the long-running commands (``giftguard worker`` and ``bridge``)."""

from __future__ import annotations

import asyncio
import gc


def use_uvloop() -> bool:
    """Run on uvloop when it is installed (a dependency): the benchmark measured about a fifth
    less CPU per event for Faust itself (bench/RESULTS.md). Plain asyncio otherwise. Call it
    before any event loop exists (Faust binds its loop when the app is built)."""
    try:
        import uvloop
    except ImportError:
        return False
    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return True


def tune_gc() -> None:
    """Keep the cyclic garbage collector's full collections short and rare.

    With Python's defaults a worker under load ran a full (generation 2) collection every few
    seconds, each 80-100 ms (it walks every object: Faust, aiokafka, River, the caches) and each
    finding almost nothing. What exists once a process is set up lives as long as the process,
    so it is frozen out of the collector's sight (full collections now take 3-5 ms); young
    collections run every 50,000 allocations instead of 700 (a batch or a request allocates
    objects that are nearly all freed by reference counting first). Measured in
    bench/README.md.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
