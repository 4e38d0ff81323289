"""bench.common.measure: a run that starts and ends between two samples, or before the first one,
still has a rate."""

from __future__ import annotations

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
