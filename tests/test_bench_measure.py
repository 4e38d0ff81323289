"""bench.common.measure: a run that starts and ends between two samples, or before the first one,
still has a rate; bench.load's client reads answers however they arrive."""

from __future__ import annotations

import asyncio

import pytest

from bench import common


def test_all_records_between_two_samples(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "POLL", 0.01)
    samples = iter([0, 0, 3000])  # nothing, nothing, everything (a small run on a fast machine)
    rate = common.measure(lambda: next(samples), 3000, timeout=5)
    assert rate.records == 3000 and rate.seconds > 0 and rate.eps > 0


def test_progress_seen_before_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(common, "POLL", 0.01)
    samples = iter([0, 1000, 2000, 3000])
    rate = common.measure(lambda: next(samples), 3000, timeout=5)
    assert rate.records == 2000  # from the first sample that saw progress, as before


def test_all_records_before_the_first_sample_timed_from_the_launch() -> None:
    launched = common.time.monotonic() - 0.5  # the worker started, and was done by the first look
    rate = common.measure(lambda: 3000, 3000, timeout=5, launched=launched)
    assert rate.records == 3000 and rate.seconds >= 0.5 and 0 < rate.eps <= 6000


@pytest.mark.parametrize(("values", "index"), [
    ([1.49], 0),
    ([1.49, 1.71, 1.62], 2),
    ([1.71, 1.49, 1.62, 1.55], 3),  # the lower of the middle two
])
def test_median_index(values: list[float], index: int) -> None:
    assert common.median_index(values) == index


def test_load_connection_reads_answers_split_anywhere() -> None:
    """The load generator's client takes an answer only once its whole body is there, and
    keeps what follows it for the next one."""
    from bench.load import Connection

    class Transport:
        def __init__(self) -> None:
            self.written: list[bytes] = []

        def write(self, data: bytes) -> None:
            self.written.append(data)

    first = b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 22\r\n\r\n'
    first += b'{"status":"accepted"}\n'
    second = b'HTTP/1.1 401 Unauthorized\r\ncontent-length: 2\r\n\r\n{}'

    async def go() -> list[int]:
        conn = Connection()
        conn.connection_made(Transport())  # type: ignore[arg-type]
        statuses = []
        task = asyncio.create_task(conn.request(b"POST 1"))
        await asyncio.sleep(0)
        for piece in (first[:10], first[10:60], first[60:-1]):  # the head, then the body
            conn.data_received(piece)
            await asyncio.sleep(0)
            assert not task.done()
        conn.data_received(first[-1:] + second[:5])
        statuses.append(await task)
        task = asyncio.create_task(conn.request(b"POST 2"))
        await asyncio.sleep(0)
        conn.data_received(second[5:])
        statuses.append(await task)
        assert conn.transport.written == [b"POST 1", b"POST 2"]  # type: ignore[union-attr]
        return statuses

    assert asyncio.run(go()) == [200, 401]
