"""Per-card state in a few hundred bytes: what the card-scope rules and models remember.

A Faust table stores the state raw, so it is ``bytes``: a fixed ``struct`` header (balances,
times as unsigned 32-bit POSIX seconds, locations as 32-bit hashes, running statistics as 32-bit
floats), then a ring of recent event-id hashes (idempotency), then a short list of open pending
redemptions. Everything is bounded; the worst case is :data:`MAX_CARD_STATE_BYTES`.

>>> s = CardState()
>>> s.balance = 10_000
>>> s.remember("square:a1")
>>> raw = s.encode()
>>> len(raw) <= MAX_CARD_STATE_BYTES
True
>>> t = CardState.decode(raw)
>>> t.balance, t.seen("square:a1"), t.seen("square:a2")
(10000, True, False)
"""

from __future__ import annotations

import struct
import zlib

VERSION = 1

# Flags (one byte).
F_ACTIVATED = 1       # an activation was seen
F_CREDIT_ONLINE = 2   # the last credit happened online
F_DEACTIVATED = 4     # deactivated / cleared
F_LAST_ACTIVATE = 8   # the last credit was the activation (not a load)

_HEADER = struct.Struct(
    "<BBH"      # version, flags, n_events
    "i"         # balance (minor units)
    "III"       # t_first, t_last (last value movement), t_credit (last activation/load)
    "iii"       # credit_amt, credit_base (balance after the credit), drained (debits since)
    "I"         # credit_loc (hash)
    "II"        # t_phys, phys_loc: last in-store event (impossible travel)
    "ii"        # redeemed_total, sold_total (activations and loads)
    "ffffH"     # EW mean/var of log redemption amount, of log gap seconds; n_redeem
    "ffI"       # slow drain: decayed count and sum of small redemptions, reference time
    "fI"        # probes: decayed count of balance checks / declines, reference time
    "iII"       # manual credit not yet spent, its time, its location hash
    "i"         # last adjust_decrement amount (a freeze, released by an increment)
    "IHB"       # t_alert, alert rule mask, highest alert score
    "BB"        # event-id ring index, number of pending entries
)
_EID = struct.Struct("<8I")
_FIXED = struct.Struct(_HEADER.format + "8I")   # header and event-id ring in one go
_PENDING = struct.Struct("<IiB")
N_EIDS = 8
MAX_PENDING = 4
MAX_CARD_STATE_BYTES = _HEADER.size + _EID.size + MAX_PENDING * _PENDING.size

# Pending-redemption entry kinds.
P_PENDING = 0         # original seen as pending; its amount is debited, awaiting the update
P_DONE = 1            # the update came first and was applied: the original is a no-op
P_CANCELED = 2        # canceled before the original arrived: the original debits and gives back

_I32 = 2**31 - 1
_U32 = 2**32 - 1


def h32(text: str) -> int:
    """A 32-bit hash (CRC-32) of a string, e.g. an event id."""
    return zlib.crc32(text.encode())


def i32(x: int) -> int:
    return -_I32 if x < -_I32 else min(x, _I32)


def u32(ts: float) -> int:
    x = int(ts)
    return 0 if x < 0 else min(x, _U32)


class CardState:
    """What the engine remembers about one card (see the module docstring for the layout)."""

    __slots__ = (
        "alert_mask",
        "alert_score",
        "amt_mean",
        "amt_var",
        "balance",
        "credit_amt",
        "credit_base",
        "credit_loc",
        "drained",
        "eid_idx",
        "eids",
        "flags",
        "gap_mean",
        "gap_var",
        "last_dec",
        "manual_amt",
        "manual_loc",
        "n_events",
        "n_pending",
        "n_redeem",
        "pending",
        "phys_loc",
        "pr_count",
        "redeemed_total",
        "sold_total",
        "sd_count",
        "sd_sum",
        "t_alert",
        "t_credit",
        "t_first",
        "t_last",
        "t_manual",
        "t_phys",
        "t_probe",
        "t_sd",
        "version",
    )

    def __init__(self) -> None:
        self.version = VERSION
        self.flags = 0
        self.n_events = 0
        self.balance = 0
        self.t_first = self.t_last = self.t_credit = 0
        self.credit_amt = self.credit_base = self.drained = 0
        self.credit_loc = 0
        self.t_phys = self.phys_loc = 0
        self.redeemed_total = self.sold_total = 0
        self.amt_mean = self.amt_var = self.gap_mean = self.gap_var = 0.0
        self.n_redeem = 0
        self.sd_count = self.sd_sum = 0.0
        self.t_sd = 0
        self.pr_count = 0.0
        self.t_probe = 0
        self.manual_amt = self.t_manual = self.manual_loc = 0
        self.last_dec = 0
        self.t_alert = self.alert_mask = self.alert_score = 0
        self.eid_idx = self.n_pending = 0
        self.eids = [0] * N_EIDS
        self.pending: list[tuple[int, int, int]] = []

    # -- encoding -----------------------------------------------------------------------------

    @classmethod
    def decode(cls, raw: bytes | None) -> CardState:
        """State from bytes; ``None`` or empty gives a fresh card."""
        if not raw:
            return cls()
        s = cls.__new__(cls)
        if raw[0] != VERSION:
            raise ValueError(f"card state version {raw[0]} is not {VERSION}")
        (s.version, s.flags, s.n_events, s.balance, s.t_first, s.t_last, s.t_credit,
         s.credit_amt, s.credit_base, s.drained, s.credit_loc, s.t_phys, s.phys_loc,
         s.redeemed_total, s.sold_total, s.amt_mean, s.amt_var, s.gap_mean, s.gap_var, s.n_redeem,
         s.sd_count, s.sd_sum, s.t_sd, s.pr_count, s.t_probe, s.manual_amt, s.t_manual,
         s.manual_loc, s.last_dec, s.t_alert, s.alert_mask, s.alert_score, s.eid_idx,
         s.n_pending) = _HEADER.unpack_from(raw, 0)
        s.eids = list(_EID.unpack_from(raw, _HEADER.size))   # (a starred target is slower)
        if s.n_pending:
            off = _FIXED.size
            s.pending = [_PENDING.unpack_from(raw, off + i * _PENDING.size)
                         for i in range(s.n_pending)]
        else:
            s.pending = []
        return s

    def encode(self) -> bytes:
        """The state as compact bytes (at most :data:`MAX_CARD_STATE_BYTES`)."""
        pending = self.pending
        if len(pending) > MAX_PENDING:
            pending = pending[-MAX_PENDING:]
        try:                          # fast path: every field already in range
            out = _FIXED.pack(
                VERSION, self.flags, self.n_events, self.balance, self.t_first, self.t_last,
                self.t_credit, self.credit_amt, self.credit_base, self.drained, self.credit_loc,
                self.t_phys, self.phys_loc, self.redeemed_total, self.sold_total, self.amt_mean,
                self.amt_var, self.gap_mean, self.gap_var, self.n_redeem, self.sd_count,
                self.sd_sum, self.t_sd, self.pr_count, self.t_probe, self.manual_amt,
                self.t_manual, self.manual_loc, self.last_dec, self.t_alert, self.alert_mask,
                self.alert_score, self.eid_idx, len(pending), *self.eids)
        except struct.error:          # a counter, amount or time out of range: clamp
            out = self._pack(pending) + _EID.pack(*self.eids)
        if pending:
            out += b"".join(_PENDING.pack(*p) for p in pending)
        return out

    def _pack(self, pending: list) -> bytes:
        c, u = i32, u32
        return _HEADER.pack(
            VERSION, self.flags, min(self.n_events, 65535), c(self.balance), u(self.t_first),
            u(self.t_last), u(self.t_credit), c(self.credit_amt), c(self.credit_base),
            c(self.drained), self.credit_loc, u(self.t_phys), self.phys_loc,
            c(self.redeemed_total), c(self.sold_total), self.amt_mean, self.amt_var,
            self.gap_mean, self.gap_var, min(self.n_redeem, 65535), self.sd_count, self.sd_sum,
            u(self.t_sd), self.pr_count, u(self.t_probe), c(self.manual_amt), u(self.t_manual),
            self.manual_loc, c(self.last_dec), u(self.t_alert), self.alert_mask,
            min(int(self.alert_score), 255), self.eid_idx, len(pending),
        )

    # -- idempotency --------------------------------------------------------------------------

    def seen(self, event_id: str) -> bool:
        """Whether this event id is among the card's last few (a replayed or duplicate event)."""
        return h32(event_id) in self.eids

    def remember(self, event_id: str) -> None:
        self.remember_hash(h32(event_id))

    def remember_hash(self, h: int) -> None:
        self.eids[self.eid_idx] = h
        self.eid_idx = (self.eid_idx + 1) % N_EIDS

    # -- pending redemptions ------------------------------------------------------------------

    def pending_entry(self, activity: int) -> tuple[int, int, int] | None:
        for p in self.pending:
            if p[0] == activity:
                return p
        return None

    def set_pending(self, activity: int, amount: int, kind: int) -> None:
        self.drop_pending(activity)
        self.pending.append((activity, i32(amount), kind))
        if len(self.pending) > MAX_PENDING:
            del self.pending[0]

    def drop_pending(self, activity: int) -> None:
        self.pending = [p for p in self.pending if p[0] != activity]
