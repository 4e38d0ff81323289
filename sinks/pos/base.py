"""The one small interface every POS hold client implements, what goes in, what comes out.

A :class:`PosClient` has three verbs, each taking a :class:`HoldRequest` and answering a
:class:`HoldResult`:

- ``hold``: make the card's value unusable for now, reversibly (Square: ADJUST_DECREMENT of the
  balance). A POS with no reversible freeze answers ``outcome="unsupported"``.
- ``release``: undo a hold (Square: ADJUST_INCREMENT of the amount the hold took).
- ``confirm_fraud``: the permanent action (Square: DEACTIVATE; Shopify: ``giftCardDeactivate``).

The boundary is explicit about what it raises. Rate limits, server errors and network failures are
retried inside the client (see :mod:`sinks.pos.retry`); when the retries run out the client
*returns* ``outcome="failed"`` with the error, the attempt count and ``retry_after``, and the caller
records it, alerts and tries again later. A request the POS refuses (4xx other than 429) is also
``failed``, with the POS's own error code, and is not retried. Only a malformed request (a bug in
the caller, e.g. a release without the amount to give back) raises, as :class:`InvalidHoldRequest`.

Every POS call carries an idempotency key derived from the alert and the action, so a decision
that is retried, replayed from Kafka or re-run after a restart never acts twice:

>>> idempotency_key("alert-1", "hold")
'gg-ba83890720054a53a39d43a164112e1dde2376ad'
>>> HoldRequest(card_id="gftc:1", alert_id="alert-1").idempotency_key == idempotency_key(
...     "alert-1", "hold")
True
>>> idempotency_key("alert-1", "release") != idempotency_key("alert-1", "hold")
True

Errors share the sinks' hierarchy (:mod:`sinks.base`): :class:`PosError` is a
:class:`~sinks.base.SinkError`, :class:`PosRetryLater` a :class:`~sinks.base.RetryLater`,
:class:`PosRejected` and :class:`InvalidHoldRequest` are :class:`~sinks.base.PermanentFailure`.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Any, Literal, Protocol, get_args, runtime_checkable

from sinks.base import PermanentFailure, RetryLater, SinkError

HoldAction = Literal["hold", "release", "confirm_fraud"]
HoldOutcome = Literal["done", "failed", "unsupported"]

HOLD_ACTIONS: tuple[str, ...] = get_args(HoldAction)

#: Square accepts idempotency keys of 1-128 characters; ours are 43.
IDEMPOTENCY_KEY_MAX_LEN = 128


def idempotency_key(alert_id: str, action: HoldAction) -> str:
    """A deterministic POS idempotency key for ``action`` taken because of ``alert_id``.

    ``"gg-"`` and the first 40 hex digits of SHA-256 of ``"<alert_id>:<action>"``: the same
    decision always maps to the same key, different actions on one alert to different keys.
    """
    if action not in HOLD_ACTIONS:
        raise InvalidHoldRequest(f"unknown hold action {action!r}", sink="pos", alert_id=alert_id)
    digest = hashlib.sha256(f"{alert_id}:{action}".encode()).hexdigest()
    return "gg-" + digest[:40]


class PosError(SinkError):
    """Root of the errors a POS client raises (itself a :class:`~sinks.base.SinkError`).

    ``status_code`` is the HTTP status the POS answered and ``code`` its own error code (Square's
    ``errors[0].code``, Shopify's ``userErrors[0].code``), when there was an answer.
    """

    status_code: int | None = None
    code: str | None = None

    def _context(self) -> list[str]:
        parts = super()._context()
        if self.status_code is not None:
            parts.append(f"status={self.status_code}")
        if self.code is not None:
            parts.append(f"code={self.code}")
        return parts


class PosRetryLater(RetryLater, PosError):
    """429, 5xx, a timeout or a dropped connection: the same request may be sent again.

    ``retry_after`` is what the POS asked for (``Retry-After``), or 0 when it did not say.
    """

    def __init__(self, message: str, *, sink: str, retry_after: float = 0.0,
                 alert_id: str | None = None, response: Any = None,
                 status_code: int | None = None, code: str | None = None) -> None:
        super().__init__(message, sink=sink, retry_after=retry_after, alert_id=alert_id,
                         response=response)
        self.status_code = status_code
        self.code = code


class PosRejected(PermanentFailure, PosError):
    """The POS refused the request (4xx other than 429, a GraphQL user error): do not resend it."""

    def __init__(self, message: str, *, sink: str, alert_id: str | None = None,
                 response: Any = None, status_code: int | None = None,
                 code: str | None = None) -> None:
        super().__init__(message, sink=sink, alert_id=alert_id, response=response)
        self.status_code = status_code
        self.code = code


class InvalidHoldRequest(PermanentFailure, PosError):
    """The request itself is malformed (a bug in the caller); raised, never turned into a result."""


@dataclass(frozen=True, slots=True)
class HoldRequest:
    """One action on one card, because of one alert.

    ``amount_minor`` is, for ``hold``, the balance to freeze (Square fetches the current balance
    when it is None) and, for ``release``, the amount the hold took (required). Pin it in the
    hold request you record *before* calling the POS: then a replay sends a byte-identical request
    under the same idempotency key and the POS answers with the original activity.
    ``idempotency_key`` defaults to :func:`idempotency_key` of ``alert_id`` and ``action``.
    """

    card_id: str
    alert_id: str
    action: HoldAction = "hold"
    amount_minor: int | None = None
    currency: str | None = None
    location_id: str | None = None
    idempotency_key: str = ""

    def __post_init__(self) -> None:
        if not self.card_id:
            raise InvalidHoldRequest("card_id is empty", sink="pos", alert_id=self.alert_id)
        if not self.alert_id:
            raise InvalidHoldRequest("alert_id is empty", sink="pos")
        if self.action not in HOLD_ACTIONS:
            raise InvalidHoldRequest(f"action must be one of {HOLD_ACTIONS}, not {self.action!r}",
                                     sink="pos", alert_id=self.alert_id)
        if self.amount_minor is not None and (
                isinstance(self.amount_minor, bool) or not isinstance(self.amount_minor, int)
                or self.amount_minor < 0):
            raise InvalidHoldRequest(
                f"amount_minor must be a non-negative integer, not {self.amount_minor!r}",
                sink="pos", alert_id=self.alert_id)
        if not self.idempotency_key:
            object.__setattr__(self, "idempotency_key", idempotency_key(self.alert_id, self.action))
        elif len(self.idempotency_key) > IDEMPOTENCY_KEY_MAX_LEN:
            raise InvalidHoldRequest(
                f"idempotency_key is longer than {IDEMPOTENCY_KEY_MAX_LEN} characters",
                sink="pos", alert_id=self.alert_id)

    @classmethod
    def for_alert(cls, alert: Any, action: HoldAction = "hold", **fields: Any) -> HoldRequest:
        """The request for ``action`` on ``alert``'s card, at its location (``fields`` override)."""
        values = {"card_id": alert.card_id, "alert_id": alert.alert_id,
                  "location_id": alert.location_id or None, **fields}
        return cls(action=action, **values)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields, for the holds topic."""
        return asdict(self)


@dataclass(frozen=True, slots=True)
class HoldResult:
    """What a POS did with a :class:`HoldRequest`.

    ``outcome`` is ``"done"`` (the POS confirmed it, now or on an earlier identical request),
    ``"failed"`` (``error`` says why; ``error_code`` is the POS's code; ``retry_after`` is set when
    trying again later may work) or ``"unsupported"`` (this POS has no such action).
    ``amount_minor`` is what was frozen or given back (keep the hold's: the release needs it),
    ``response`` a short summary of the POS's answer for the audit topic, ``attempts`` the number
    of HTTP requests made, retries included.
    """

    pos: str
    action: HoldAction
    outcome: HoldOutcome
    card_id: str
    alert_id: str
    idempotency_key: str
    pos_activity_id: str | None = None
    amount_minor: int | None = None
    currency: str | None = None
    response: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    error_code: str | None = None
    status_code: int | None = None
    retry_after: float | None = None
    attempts: int = 0

    @property
    def ok(self) -> bool:
        """True when the POS did what was asked."""
        return self.outcome == "done"

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready fields, for the holds and audit topics."""
        return asdict(self)

    @classmethod
    def unsupported(cls, pos: str, req: HoldRequest, why: str) -> HoldResult:
        """The answer of a POS that cannot do ``req.action``; no request was made."""
        return cls(pos=pos, action=req.action, outcome="unsupported", card_id=req.card_id,
                   alert_id=req.alert_id, idempotency_key=req.idempotency_key, error=why)

    @classmethod
    def from_error(cls, pos: str, req: HoldRequest, exc: PosError, *, attempts: int,
                   amount_minor: int | None = None, currency: str | None = None) -> HoldResult:
        """``outcome="failed"`` from a :class:`PosRetryLater` (retries ran out) or a rejection."""
        retry_after = exc.retry_after if isinstance(exc, RetryLater) else None
        return cls(pos=pos, action=req.action, outcome="failed", card_id=req.card_id,
                   alert_id=req.alert_id, idempotency_key=req.idempotency_key,
                   amount_minor=amount_minor, currency=currency,
                   response=exc.response if isinstance(exc.response, dict) else {},
                   error=exc.message, error_code=exc.code, status_code=exc.status_code,
                   retry_after=retry_after, attempts=attempts)


@runtime_checkable
class PosClient(Protocol):
    """A POS that can hold, release and deactivate gift cards. ``name`` labels results and metrics.

    The three methods never raise for rate limits, server errors or refusals (they answer
    ``outcome="failed"``); they raise :class:`InvalidHoldRequest` for a malformed request.
    """

    name: str

    async def hold(self, req: HoldRequest) -> HoldResult:
        """Freeze the card's value, reversibly."""
        ...

    async def release(self, req: HoldRequest) -> HoldResult:
        """Give back what ``hold`` froze (``req.amount_minor``)."""
        ...

    async def confirm_fraud(self, req: HoldRequest) -> HoldResult:
        """Deactivate the card for good."""
        ...

    async def close(self) -> None:
        """Release connections the client owns (not injected ones)."""
        ...


async def read_balance(client: PosClient, req: HoldRequest) -> HoldResult | None:
    """The card's current balance from ``client`` (``HoldResult.amount_minor``), or None when
    the client cannot tell (then ``hold`` reads it itself, and cannot be pinned in advance)."""
    reader = getattr(client, "read_balance", None)
    return await reader(req) if reader is not None else None


async def perform(client: PosClient, req: HoldRequest) -> HoldResult:
    """Call the verb of ``client`` that ``req.action`` names."""
    if req.action == "hold":
        return await client.hold(req)
    if req.action == "release":
        return await client.release(req)
    return await client.confirm_fraud(req)


class MemoryPosClient:
    """A POS for tests of the callers: records requests, answers ``outcome`` (default "done").

    >>> import asyncio
    >>> pos = MemoryPosClient()
    >>> result = asyncio.run(perform(pos, HoldRequest(card_id="gftc:1", alert_id="a-1",
    ...                                               amount_minor=500)))
    >>> result.outcome, result.amount_minor, [r.action for r in pos.requests]
    ('done', 500, ['hold'])
    """

    name = "memory"

    def __init__(self, *, outcome: HoldOutcome = "done",
                 balances: dict[str, int] | None = None) -> None:
        self.outcome: HoldOutcome = outcome
        self.requests: list[HoldRequest] = []
        self.balances: dict[str, int] = dict(balances or {})

    async def read_balance(self, req: HoldRequest) -> HoldResult:
        """``balances[card_id]`` (0 when unknown), in USD; not recorded as a request."""
        return HoldResult(pos=self.name, action=req.action, outcome="done", card_id=req.card_id,
                          alert_id=req.alert_id, idempotency_key=req.idempotency_key,
                          amount_minor=self.balances.get(req.card_id, 0), currency="USD",
                          attempts=1)

    async def _answer(self, req: HoldRequest) -> HoldResult:
        self.requests.append(req)
        return HoldResult(pos=self.name, action=req.action, outcome=self.outcome,
                          card_id=req.card_id, alert_id=req.alert_id,
                          idempotency_key=req.idempotency_key, amount_minor=req.amount_minor,
                          currency=req.currency, attempts=1)

    async def hold(self, req: HoldRequest) -> HoldResult:
        return await self._answer(req)

    async def release(self, req: HoldRequest) -> HoldResult:
        return await self._answer(req)

    async def confirm_fraud(self, req: HoldRequest) -> HoldResult:
        return await self._answer(req)

    async def close(self) -> None:
        """Nothing to release."""
