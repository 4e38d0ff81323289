"""Per-entity state: sliding windows of credits at a location, on a payment instrument, by an employee.

An entity key is ``"loc:<location_id>"``, ``"pi:<payment_ref>"`` or ``"emp:<employee_id>"``. Its
state keeps two bounded windows — high-value sales (activations and loads) and manual credits
(adjustments and refunds without a sale) — as ``[ts, card_id, amount_minor, ...]`` rows, the
few floats of its running statistics, plus the
learned state of the location's anomaly model (:mod:`detectors.models.location_hst`) as raw bytes.

Encoding: one version byte, a 32-bit length, the JSON part (orjson), then the model bytes.

>>> s = EntityState()
>>> _ = s.push(s.sales, 100, "gc1", 5000, window_s=3600, cap=4)
>>> _ = s.push(s.sales, 200, "gc2", 5000, window_s=3600, cap=4)
>>> _ = s.push(s.sales, 3750, "gc3", 5000, window_s=3600, cap=4)
>>> [row[1] for row in EntityState.decode(s.encode()).sales]
['gc2', 'gc3']
"""

from __future__ import annotations

import struct

import orjson

VERSION = 1
_HEAD = struct.Struct("<BI")


class EntityState:
    """Windows of credits for one entity key, and its model bytes (see the module docstring)."""

    __slots__ = ("manual", "manual_json", "model", "sales", "sales_json", "stats", "t_alert")

    def __init__(self) -> None:
        self.sales: list[list] = []
        self.manual: list[list] = []
        self.t_alert = 0
        self.stats: list[float] = []   # small running statistics (per-entity models)
        self.model = b""               # raw model bytes (e.g. half-space-tree masses)
        # The windows as JSON when last encoded (not stored): see ``encode``.
        self.sales_json: bytes | None = None
        self.manual_json: bytes | None = None

    @classmethod
    def decode(cls, raw: bytes | None) -> EntityState:
        s = cls()
        if not raw:
            return s
        version, n = _HEAD.unpack_from(raw, 0)
        if version != VERSION:
            raise ValueError(f"entity state version {version} is not {VERSION}")
        body = orjson.loads(raw[_HEAD.size:_HEAD.size + n])
        s.sales, s.manual, s.t_alert, s.stats = body
        s.model = raw[_HEAD.size + n:]
        return s

    def encode(self, sales_unchanged: bool = False, manual_unchanged: bool = False) -> bytes:
        """The state as bytes. ``sales_unchanged`` / ``manual_unchanged``: the caller vouches that
        this window is as it was when this object was last encoded, so its JSON is reused (the
        windows are the bulk of the state, and most events leave them alone). The bytes are the
        same either way: orjson writes ``[a,b,c,d]`` as ``[``, ``a``, ``,``, ``b``, ``,``, then
        ``[c,d]`` without its ``[``.

        >>> s = EntityState()
        >>> _ = s.push(s.sales, 100, "gc1", 5000, window_s=3600, cap=4)
        >>> _ = s.encode()                      # remembers the windows' JSON
        >>> s.stats = [1.5]                     # the windows untouched
        >>> s.encode(sales_unchanged=True, manual_unchanged=True) == s.encode()
        True
        """
        sales = self.sales_json
        if sales is None or not sales_unchanged:
            sales = self.sales_json = orjson.dumps(self.sales)
        manual = self.manual_json
        if manual is None or not manual_unchanged:
            manual = self.manual_json = orjson.dumps(self.manual)
        rest = orjson.dumps([self.t_alert, self.stats])
        size = len(sales) + len(manual) + len(rest) + 2       # the body: [sales,manual,rest...
        return b"".join((_HEAD.pack(VERSION, size), b"[", sales, b",", manual, b",", rest[1:],
                         self.model))

    @staticmethod
    def push(window: list[list], ts: float, card_id: str, amount: int, *, window_s: float,
             cap: int, extra: list | None = None) -> list[list]:
        """Append a row, drop rows older than ``window_s`` before the newest and beyond ``cap``,
        and return the dropped rows.

        A row is ``[ts, card_id, amount]``, plus ``extra`` (e.g. a payment instrument) if given.
        """
        row = [int(ts), card_id, int(amount)]
        if extra is not None:
            row.extend(extra)
        if window and row[0] < window[-1][0]:   # late arrival: keep the window in time order
            i = len(window)
            while i and window[i - 1][0] > row[0]:
                i -= 1
            window.insert(i, row)
        else:
            window.append(row)
        horizon = window[-1][0] - window_s
        i = 0
        while i < len(window) and window[i][0] < horizon:
            i += 1
        i = max(i, len(window) - cap)
        if i <= 0:
            return []
        dropped = window[:i]
        del window[:i]
        return dropped
