"""streams.app.FlowControl: a resume while flowing keeps what the stream queues hold.

Faust's recovery resumes the stream partitions, seeks them, then resumes flow control, which
emptied the stream queues: events already fetched were dropped unacknowledged and never fetched
again, and Faust never commits across such a hole. The crash test caught it end to end (after a
restart the worker's lag only grew); these pin the correction.
"""

from __future__ import annotations

import asyncio

from mode.utils.queues import FlowControlQueue

from streams.app import FlowControl, create_app
from streams.settings import Settings


def _queue(flow: FlowControl, *items: int) -> FlowControlQueue:
    queue: FlowControlQueue = FlowControlQueue(flow_control=flow, clear_on_resume=True)
    for item in items:
        queue.put_nowait(item)
    return queue


def test_resume_while_flowing_keeps_queued_events() -> None:
    async def scenario() -> int:
        flow = FlowControl()          # starts suspended, as Faust's does
        flow.resume()                 # recovery: resume to read the changelogs
        queue = _queue(flow, 1, 2, 3)  # stream partitions resumed: events arrive
        flow.resume()                 # end of recovery
        return queue.qsize()

    assert asyncio.run(scenario()) == 3


def test_resume_after_suspend_still_clears() -> None:
    async def scenario() -> tuple[int, int]:
        flow = FlowControl()
        flow.resume()
        queue = _queue(flow, 1, 2)
        flow.suspend()                # a rebalance: what is queued belongs to the old assignment
        flow.resume()
        after_resume = queue.qsize()
        again = _queue(flow, 4)
        flow.clear()                  # what revocation calls
        return after_resume, again.qsize()

    assert asyncio.run(scenario()) == (0, 0)


def test_the_worker_app_uses_it(tmp_path) -> None:
    settings = Settings(kafka_bootstrap_servers="127.0.0.1:9", giftguard_data_dir=tmp_path)
    assert isinstance(create_app(settings).flow_control, FlowControl)
