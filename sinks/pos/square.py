"""Square gift card holds through the official ``squareup`` SDK's async client (``AsyncSquare``).

Square has no "freeze" for apps (BLOCK/UNBLOCK are Square-managed), so:

- **hold** = ``ADJUST_DECREMENT`` of the balance, reason ``SUSPICIOUS_ACTIVITY`` (the balance is
  read with ``GET /v2/gift-cards/{id}`` when the request does not pin ``amount_minor``);
- **release** = ``ADJUST_INCREMENT`` of the amount the hold took, reason ``SUPPORT_ISSUE``;
- **confirm_fraud** = ``DEACTIVATE``, reason ``SUSPICIOUS_ACTIVITY`` (permanent).

Each is one ``POST /v2/gift-cards/activities`` under the request's idempotency key; Square answers
a repeated key with the original activity, so a retry after a timeout or a replayed decision never
creates a second one. 429, 5xx, timeouts and dropped connections are retried by our
:class:`~sinks.pos.retry.RetryPolicy` (honouring ``Retry-After``); other 4xx answers are final and
the result carries Square's error code (``errors[0].code``).

The SDK's own retries are **turned off** (``max_retries=0`` in the request options of every call):
by default it retries 408, 409, 429 and 5xx twice, sleeping up to 60 s, invisibly to us, so the
attempt count, the cap and the jitter would not be ours.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Self, TypeVar

import httpx
from square import AsyncSquare
from square.core.api_error import ApiError
from square.core.request_options import RequestOptions
from square.environment import SquareEnvironment

from sinks.pos.base import (
    HoldRequest,
    HoldResult,
    InvalidHoldRequest,
    PosError,
    PosRejected,
    PosRetryLater,
)
from sinks.pos.retry import OnRetry, Retrier, RetryPolicy, Sleep, parse_retry_after

T = TypeVar("T")

ENVIRONMENTS = {"sandbox": SquareEnvironment.SANDBOX,
                "production": SquareEnvironment.PRODUCTION}

HOLD_REASON = "SUSPICIOUS_ACTIVITY"      # ADJUST_DECREMENT reason
RELEASE_REASON = "SUPPORT_ISSUE"         # ADJUST_INCREMENT reason
DEACTIVATE_REASON = "SUSPICIOUS_ACTIVITY"


class SquarePosClient:
    """Holds, releases and deactivates Square gift cards.

    ``base_url`` (``SQUARE_BASE_URL``) overrides ``environment`` (tests point it at a local fake).
    ``http_client`` is an injected ``httpx.AsyncClient`` (the transport the SDK uses); when None
    the client makes one and closes it in :meth:`close`. ``location_id`` is used for requests
    that carry none (Square requires one on every activity). ``sleep`` and ``rng`` feed the
    retrier, for tests; ``on_retry`` is called with the error before each retried request.
    """

    name = "square"

    def __init__(self, *, access_token: str,
                 environment: Literal["sandbox", "production"] = "sandbox",
                 base_url: str | None = None, location_id: str | None = None,
                 policy: RetryPolicy | None = None, timeout: float = 10.0,
                 http_client: httpx.AsyncClient | None = None, square_version: str | None = None,
                 sleep: Sleep = asyncio.sleep, rng: random.Random | None = None,
                 on_retry: OnRetry | None = None) -> None:
        if not access_token:
            raise ValueError("SQUARE_ACCESS_TOKEN is empty")
        if environment not in ENVIRONMENTS:
            raise ValueError("SQUARE_ENVIRONMENT must be sandbox or production, "
                             f"not {environment!r}")
        self.location_id = location_id
        self._owns_http = http_client is None
        self._http = http_client if http_client is not None else httpx.AsyncClient(timeout=timeout)
        self._square = AsyncSquare(token=access_token, environment=ENVIRONMENTS[environment],
                                   base_url=base_url or None, httpx_client=self._http,
                                   timeout=timeout, version=square_version)
        # Our policy, not the SDK's: see the module docstring.
        self._options: RequestOptions = {"max_retries": 0,
                                         "timeout_in_seconds": timeout}  # type: ignore[typeddict-item]
        self._retrier = Retrier(policy, sleep=sleep, rng=rng, on_retry=on_retry)

    @classmethod
    def from_settings(cls, settings: Any, **kwargs: Any) -> SquarePosClient:
        """A client from :class:`streams.settings.Settings` (``SQUARE_ACCESS_TOKEN``, ...)."""
        token = settings.square_access_token
        if token is None:
            raise ValueError("SQUARE_ACCESS_TOKEN is not set")
        return cls(access_token=token.get_secret_value(),
                   environment=settings.square_environment,
                   base_url=settings.square_base_url, **kwargs)

    async def close(self) -> None:
        """Close the HTTP client if this client made it."""
        if self._owns_http:
            await self._http.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    # -- the three verbs ----------------------------------------------------------------------

    async def hold(self, req: HoldRequest) -> HoldResult:
        """ADJUST_DECREMENT the balance (``req.amount_minor``, or the current balance)."""
        self._expect(req, "hold")
        location_id = self._location(req)
        amount, currency = req.amount_minor, req.currency
        attempts = 0
        if amount is None or currency is None:
            got = await self._retrier.run(lambda: self._get_card(req))
            attempts += got.attempts
            if got.error is not None:
                return HoldResult.from_error(self.name, req, got.error, attempts=attempts)
            balance = got.value.balance_money if got.value is not None else None
            if balance is None:
                return HoldResult.from_error(self.name, req, PosRejected(
                    "square returned a gift card without balance_money", sink=self.name,
                    alert_id=req.alert_id), attempts=attempts)
            amount = balance.amount if amount is None else amount
            currency = currency or balance.currency
        if not amount:
            return self._nothing_to_do(req, currency, attempts, "balance is 0: nothing to freeze")
        details = {"adjust_decrement_activity_details": {
            "amount_money": {"amount": amount, "currency": currency}, "reason": HOLD_REASON}}
        return await self._create(req, "ADJUST_DECREMENT", location_id, details,
                                  amount=amount, currency=currency, attempts=attempts)

    async def release(self, req: HoldRequest) -> HoldResult:
        """ADJUST_INCREMENT by ``req.amount_minor``: what the hold took."""
        self._expect(req, "release")
        if req.amount_minor is None:
            raise InvalidHoldRequest("release needs amount_minor: the amount the hold took",
                                     sink=self.name, alert_id=req.alert_id)
        location_id = self._location(req)
        currency, attempts = req.currency, 0
        if currency is None:
            got = await self._retrier.run(lambda: self._get_card(req))
            attempts += got.attempts
            if got.error is not None:
                return HoldResult.from_error(self.name, req, got.error, attempts=attempts)
            balance = got.value.balance_money if got.value is not None else None
            currency = balance.currency if balance is not None else None
        if not req.amount_minor:
            return self._nothing_to_do(req, currency, attempts, "amount is 0: nothing to give back")
        details = {"adjust_increment_activity_details": {
            "amount_money": {"amount": req.amount_minor, "currency": currency},
            "reason": RELEASE_REASON}}
        return await self._create(req, "ADJUST_INCREMENT", location_id, details,
                                  amount=req.amount_minor, currency=currency, attempts=attempts)

    async def confirm_fraud(self, req: HoldRequest) -> HoldResult:
        """DEACTIVATE the card (permanent)."""
        self._expect(req, "confirm_fraud")
        details = {"deactivate_activity_details": {"reason": DEACTIVATE_REASON}}
        return await self._create(req, "DEACTIVATE", self._location(req), details,
                                  amount=None, currency=req.currency, attempts=0)

    async def read_balance(self, req: HoldRequest) -> HoldResult:
        """The card's current balance (``amount_minor``, ``currency``); creates no activity.

        A caller pins this amount in its hold request *before* calling :meth:`hold`, so that a
        replay sends the same request under the same key (and Square answers the original).
        """
        got = await self._retrier.run(lambda: self._get_card(req))
        if got.error is not None:
            return HoldResult.from_error(self.name, req, got.error, attempts=got.attempts)
        balance = got.value.balance_money if got.value is not None else None
        if balance is None:
            return HoldResult.from_error(self.name, req, PosRejected(
                "square returned a gift card without balance_money", sink=self.name,
                alert_id=req.alert_id), attempts=got.attempts)
        return HoldResult(pos=self.name, action=req.action, outcome="done", card_id=req.card_id,
                          alert_id=req.alert_id, idempotency_key=req.idempotency_key,
                          amount_minor=balance.amount, currency=balance.currency,
                          response={"balance_money": {"amount": balance.amount,
                                                      "currency": balance.currency}},
                          attempts=got.attempts)

    # -- plumbing -----------------------------------------------------------------------------

    def _expect(self, req: HoldRequest, action: str) -> None:
        if req.action != action:
            raise InvalidHoldRequest(f"{action}() was given a {req.action!r} request",
                                     sink=self.name, alert_id=req.alert_id)

    def _location(self, req: HoldRequest) -> str:
        location_id = req.location_id or self.location_id
        if not location_id:
            raise InvalidHoldRequest("Square needs a location_id on every gift card activity",
                                     sink=self.name, alert_id=req.alert_id)
        return location_id

    def _nothing_to_do(self, req: HoldRequest, currency: str | None, attempts: int,
                       note: str) -> HoldResult:
        return HoldResult(pos=self.name, action=req.action, outcome="done", card_id=req.card_id,
                          alert_id=req.alert_id, idempotency_key=req.idempotency_key,
                          amount_minor=0, currency=currency, response={"note": note},
                          attempts=attempts)

    async def _get_card(self, req: HoldRequest) -> Any:
        response = await self._call(req, "get gift card", lambda: self._square.gift_cards.get(
            id=req.card_id, request_options=self._options))
        return response.gift_card

    async def _create(self, req: HoldRequest, activity_type: str, location_id: str,
                      details: dict[str, Any], *, amount: int | None, currency: str | None,
                      attempts: int) -> HoldResult:
        activity = {"type": activity_type, "location_id": location_id,
                    "gift_card_id": req.card_id, **details}

        async def create() -> Any:
            return await self._call(req, f"create {activity_type}",
                                    lambda: self._square.gift_cards.activities.create(
                                        idempotency_key=req.idempotency_key,
                                        gift_card_activity=activity,  # type: ignore[arg-type]
                                        request_options=self._options))

        got = await self._retrier.run(create)
        attempts += got.attempts
        if got.error is not None:
            return HoldResult.from_error(self.name, req, got.error, attempts=attempts,
                                         amount_minor=amount, currency=currency)
        made = got.value.gift_card_activity if got.value is not None else None
        if made is None:
            return HoldResult.from_error(self.name, req, PosRejected(
                "square answered 2xx without a gift_card_activity", sink=self.name,
                alert_id=req.alert_id), attempts=attempts, amount_minor=amount, currency=currency)
        return HoldResult(pos=self.name, action=req.action, outcome="done", card_id=req.card_id,
                          alert_id=req.alert_id, idempotency_key=req.idempotency_key,
                          pos_activity_id=made.id, amount_minor=amount, currency=currency,
                          response=_summary(made), attempts=attempts)

    async def _call(self, req: HoldRequest, what: str, fn: Callable[[], Awaitable[T]]) -> T:
        """One SDK call; SDK and transport errors become :class:`PosError` here."""
        try:
            return await fn()
        except ApiError as exc:
            raise self._convert(exc, req, what) from exc
        except httpx.TimeoutException as exc:
            raise PosRetryLater(f"square {what} timed out", sink=self.name,
                                alert_id=req.alert_id) from exc
        except httpx.TransportError as exc:
            raise PosRetryLater(f"square {what} failed: {exc!r}", sink=self.name,
                                alert_id=req.alert_id) from exc

    def _convert(self, exc: ApiError, req: HoldRequest, what: str) -> PosError:
        status = exc.status_code or 0
        first = exc.errors[0] if exc.errors else None
        code = first.code if first is not None else None
        detail = first.detail if first is not None else None
        body = exc.body if isinstance(exc.body, dict) else {"body": str(exc.body)[:500]}
        if status == 429 or status >= 500 or 200 <= status < 300:
            # 2xx here means a body that is not JSON: ambiguous, and safe to resend under the key.
            retry_after = parse_retry_after((exc.headers or {}).get("retry-after"))
            return PosRetryLater(f"square {what} answered {status}", sink=self.name,
                                 retry_after=retry_after, alert_id=req.alert_id, response=body,
                                 status_code=status, code=code)
        return PosRejected(f"square {what} answered {status} {code}: {detail}", sink=self.name,
                           alert_id=req.alert_id, response=body, status_code=status, code=code)


def _summary(activity: Any) -> dict[str, Any]:
    """The parts of a Square gift card activity worth keeping on the holds and audit topics."""
    balance = activity.gift_card_balance_money
    return {
        "activity_id": activity.id,
        "type": activity.type,
        "gift_card_id": activity.gift_card_id,
        "location_id": activity.location_id,
        "created_at": activity.created_at,
        "gift_card_balance_money": (
            {"amount": balance.amount, "currency": balance.currency} if balance else None),
    }
