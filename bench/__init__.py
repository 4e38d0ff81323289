"""GiftGuard's performance benchmark (``make bench`` / ``python -m bench.run``).

Every figure is measured against a baseline taken in the same run, on the same broker and the
same simulated data, because the machine is shared and absolute numbers drift: see
:mod:`bench.run` for the list of measurements and ``bench/RESULTS.md`` for the latest table.
"""
