"""A local stand-in for Square's gift card API, for tests: ``async with FakeSquare() as square``.

It listens on 127.0.0.1 (a free port; ``square.base_url``) and serves:

- ``POST /v2/gift-cards/activities`` (CreateGiftCardActivity): bearer auth, body shape checked,
  ADJUST_DECREMENT / ADJUST_INCREMENT / DEACTIVATE applied to per-card balances and states.
  **Idempotency** as Square documents it: the same ``idempotency_key`` with the same body answers
  the original response and creates nothing; the same key with a different body is a 400
  ``IDEMPOTENCY_KEY_REUSED``.
- ``GET /v2/gift-cards/{id}`` (RetrieveGiftCard).

Answers have Square's shapes (``{"gift_card_activity": {...}}``, ``{"gift_card": {...}}``,
errors as ``{"errors": [{"category", "code", "detail"}]}``). Failures can be scripted:
``square.fail_next(2, status=429, retry_after="1")`` answers the next two requests with 429, and
``after_commit=True`` applies the activity *then* answers 500 (the ambiguous case a retry with the
same key must survive). Outages for a window of time: ``square.outage(seconds=3, status=REFUSE)``
stops listening (connections refused, as from a process that is down), ``status=500`` / ``503`` /
``429`` (``retry_after="1"``) answers every request so; ``after=`` schedules windows back to back
(tests/fakes/outage.py). Every request is logged in ``square.requests`` with its arrival time and
status; :meth:`FakeSquare.activities_per_key` counts the activities made per idempotency key.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Self

from aiohttp import web

from tests.fakes.outage import REFUSE, Listener, Outages, drop

SUPPORTED_TYPES = {
    "ADJUST_DECREMENT": ("adjust_decrement_activity_details",
                         {"SUSPICIOUS_ACTIVITY", "BALANCE_ACCIDENTALLY_INCREASED", "SUPPORT_ISSUE",
                          "PURCHASE_WAS_REFUNDED"}),
    "ADJUST_INCREMENT": ("adjust_increment_activity_details",
                         {"COMPLIMENTARY", "SUPPORT_ISSUE", "TRANSACTION_VOIDED"}),
    "DEACTIVATE": ("deactivate_activity_details",
                   {"SUSPICIOUS_ACTIVITY", "UNKNOWN_REASON", "CHARGEBACK_DEACTIVATE"}),
}
SQUARE_MANAGED = {"BLOCK", "UNBLOCK"}


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime())


def _error(status: int, category: str, code: str, detail: str,
           headers: dict[str, str] | None = None) -> web.Response:
    body = {"errors": [{"category": category, "code": code, "detail": detail}]}
    return web.json_response(body, status=status, headers=headers)


@dataclass
class Card:
    """One gift card's state at the fake."""

    id: str
    balance: int
    currency: str = "USD"
    state: str = "ACTIVE"
    gan: str = field(default_factory=lambda: "7783" + uuid.uuid4().hex[:12])

    def to_json(self) -> dict[str, Any]:
        return {"id": self.id, "type": "DIGITAL", "gan_source": "SQUARE", "state": self.state,
                "balance_money": {"amount": self.balance, "currency": self.currency},
                "gan": self.gan, "created_at": "2026-01-01T00:00:00.000Z"}


@dataclass
class Scripted:
    """Answer the next request with ``status`` (after applying it, if ``after_commit``)."""

    status: int
    retry_after: str | None = None
    after_commit: bool = False


@dataclass
class Logged:
    method: str
    path: str
    at: float
    status: int = 0
    body: dict[str, Any] | None = None


class FakeSquare:
    """The fake server and its state; see the module docstring."""

    def __init__(self, *, access_token: str = "test-token") -> None:
        self.access_token = access_token
        self.cards: dict[str, Card] = {}
        self.activities: list[dict[str, Any]] = []
        # idempotency_key -> (canonical body, status, answer)
        self._by_key: dict[str, tuple[str, int, dict[str, Any]]] = {}
        self._script: list[Scripted] = []
        self.requests: list[Logged] = []
        self.outages = Outages()
        self._runner: web.AppRunner | None = None
        self.listener: Listener | None = None
        self.base_url = ""

    # -- set-up and inspection ------------------------------------------------------------

    def add_card(self, card_id: str, balance: int, *, currency: str = "USD",
                 state: str = "ACTIVE") -> Card:
        card = Card(id=card_id, balance=balance, currency=currency, state=state)
        self.cards[card_id] = card
        return card

    def fail_next(self, n: int, *, status: int = 500, retry_after: str | None = None,
                  after_commit: bool = False) -> None:
        """Answer the next ``n`` requests with ``status`` (and ``Retry-After``)."""
        self._script.extend(Scripted(status, retry_after, after_commit) for _ in range(n))

    def outage(self, *, seconds: float | None = None, calls: int | None = None,
               status: int = 503, retry_after: str | None = None, after: float = 0.0) -> None:
        """Answer every request with ``status`` for ``seconds`` (or the next ``calls``), starting
        ``after`` seconds from now; ``status=REFUSE`` refuses connections for ``seconds``."""
        self.outages.add(status, seconds=seconds, calls=calls, after=after,
                         retry_after=retry_after)

    def end_outage(self) -> None:
        """Answer normally again (scheduled outages too)."""
        self.outages.clear()

    def activities_per_key(self) -> Counter[str]:
        """Idempotency key -> activities created under it (1 each, if all is well)."""
        return Counter(a["_idempotency_key"] for a in self.activities)

    def activities_for(self, card_id: str,
                       activity_type: str | None = None) -> list[dict[str, Any]]:
        return [a for a in self.activities if a["gift_card_id"] == card_id
                and (activity_type is None or a["type"] == activity_type)]

    def activity_count(self, idempotency_key: str) -> int:
        """How many activities were created under ``idempotency_key`` (0 or 1, if all is well)."""
        return sum(1 for a in self.activities if a["_idempotency_key"] == idempotency_key)

    def posts(self) -> list[Logged]:
        return [r for r in self.requests if r.method == "POST"]

    # -- lifecycle ------------------------------------------------------------------------

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/v2/gift-cards/activities", self._create_activity)
        app.router.add_get("/v2/gift-cards/{id}", self._get_card)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        self.listener = Listener(self._runner, self.outages)
        port = await self.listener.start()
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self.listener is not None:
            await self.listener.stop()
        if self._runner is not None:
            await self._runner.cleanup()

    # -- handlers -------------------------------------------------------------------------

    def _authorized(self, request: web.Request) -> bool:
        return request.headers.get("Authorization") == f"Bearer {self.access_token}"

    def _log(self, request: web.Request, body: dict[str, Any] | None = None) -> Logged:
        entry = Logged(request.method, request.path, time.monotonic(), body=body)
        self.requests.append(entry)
        return entry

    @staticmethod
    def _scripted_error(step: Scripted) -> web.Response:
        headers = {"Retry-After": step.retry_after} if step.retry_after is not None else None
        if step.status == 429:
            return _error(429, "RATE_LIMIT_ERROR", "RATE_LIMITED", "Rate limited.", headers)
        return _error(step.status, "API_ERROR", "INTERNAL_SERVER_ERROR",
                      "An internal error has occurred.", headers)

    def _in_outage(self, request: web.Request, entry: Logged) -> web.Response | None:
        window = self.outages.current()
        if window is None:
            return None
        entry.status = window.status
        if window.status == REFUSE:
            return drop(request)
        return self._scripted_error(Scripted(window.status, window.retry_after))

    async def _get_card(self, request: web.Request) -> web.Response:
        entry = self._log(request)
        down = self._in_outage(request, entry)
        if down is not None:
            return down
        response = self._answer_get(request)
        entry.status = response.status
        return response

    def _answer_get(self, request: web.Request) -> web.Response:
        if not self._authorized(request):
            return _error(401, "AUTHENTICATION_ERROR", "UNAUTHORIZED",
                          "This request could not be authorized.")
        if self._script:
            return self._scripted_error(self._script.pop(0))
        card = self.cards.get(request.match_info["id"])
        if card is None:
            return _error(404, "INVALID_REQUEST_ERROR", "NOT_FOUND", "Gift card not found.")
        return web.json_response({"gift_card": card.to_json()})

    async def _create_activity(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        entry = self._log(request, body if isinstance(body, dict) else None)
        down = self._in_outage(request, entry)
        if down is not None:
            return down
        response = self._answer_create(request, body)
        entry.status = response.status
        return response

    def _answer_create(self, request: web.Request, body: Any) -> web.Response:
        if not self._authorized(request):
            return _error(401, "AUTHENTICATION_ERROR", "UNAUTHORIZED",
                          "This request could not be authorized.")
        step = self._script.pop(0) if self._script else None
        if step is not None and not step.after_commit:
            return self._scripted_error(step)
        if not isinstance(body, dict):
            return _error(400, "INVALID_REQUEST_ERROR", "INVALID_BODY", "Body is not JSON.")
        key = body.get("idempotency_key")
        if not isinstance(key, str) or not 1 <= len(key) <= 128:
            return _error(400, "INVALID_REQUEST_ERROR", "INVALID_VALUE",
                          "idempotency_key must be 1-128 characters.")
        canonical = json.dumps(body, sort_keys=True, separators=(",", ":"))
        if key in self._by_key:
            seen_body, status, answer = self._by_key[key]
            if seen_body != canonical:
                return _error(400, "INVALID_REQUEST_ERROR", "IDEMPOTENCY_KEY_REUSED",
                              "The idempotency key was used before with a different request.")
            return web.json_response(answer, status=status)
        problem = self._invalid(body.get("gift_card_activity"))
        if problem is not None:
            return problem
        answer = self._apply(body["gift_card_activity"], key)
        if isinstance(answer, web.Response):
            return answer
        self._by_key[key] = (canonical, 200, answer)
        if step is not None:  # after_commit: the activity exists, the client sees a failure
            return self._scripted_error(step)
        return web.json_response(answer)

    def _invalid(self, activity: Any) -> web.Response | None:
        def bad(code: str, detail: str) -> web.Response:
            return _error(400, "INVALID_REQUEST_ERROR", code, detail)

        if not isinstance(activity, dict):
            return bad("MISSING_REQUIRED_PARAMETER", "Missing gift_card_activity.")
        kind = activity.get("type")
        if kind in SQUARE_MANAGED:
            return bad("INVALID_VALUE", f"{kind} activities are managed by Square.")
        if kind not in SUPPORTED_TYPES:
            return bad("INVALID_VALUE", f"Unsupported activity type {kind!r} at this fake.")
        if not activity.get("location_id"):
            return bad("MISSING_REQUIRED_PARAMETER", "Missing location_id.")
        if not activity.get("gift_card_id") and not activity.get("gift_card_gan"):
            return bad("MISSING_REQUIRED_PARAMETER", "Specify gift_card_id or gift_card_gan.")
        details_name, reasons = SUPPORTED_TYPES[kind]
        details = activity.get(details_name)
        if not isinstance(details, dict):
            return bad("MISSING_REQUIRED_PARAMETER", f"Missing {details_name}.")
        if details.get("reason") not in reasons:
            return bad("INVALID_ENUM_VALUE", f"Invalid reason {details.get('reason')!r}.")
        if kind != "DEACTIVATE":
            money = details.get("amount_money")
            if (not isinstance(money, dict) or not isinstance(money.get("amount"), int)
                    or money["amount"] <= 0 or not money.get("currency")):
                return bad("INVALID_VALUE", "amount_money needs a positive amount and a currency.")
        return None

    def _apply(self, activity: dict[str, Any], key: str) -> dict[str, Any] | web.Response:
        card = self.cards.get(activity.get("gift_card_id") or "")
        if card is None:
            return _error(404, "INVALID_REQUEST_ERROR", "NOT_FOUND", "Gift card not found.")
        kind = activity["type"]
        details_name, _ = SUPPORTED_TYPES[kind]
        details = activity[details_name]
        if card.state != "ACTIVE":
            return _error(400, "INVALID_REQUEST_ERROR", "INVALID_VALUE",
                          f"Gift card is {card.state}.")
        if kind != "DEACTIVATE":
            money = details["amount_money"]
            if money["currency"] != card.currency:
                return _error(400, "INVALID_REQUEST_ERROR", "CURRENCY_MISMATCH",
                              "Currency does not match the gift card.")
            if kind == "ADJUST_DECREMENT":
                if money["amount"] > card.balance:
                    return _error(400, "INVALID_REQUEST_ERROR", "INSUFFICIENT_FUNDS",
                                  "The gift card balance is too low.")
                card.balance -= money["amount"]
            else:
                card.balance += money["amount"]
        else:
            card.state = "DEACTIVATED"
        made = {
            "id": "gcact_" + uuid.uuid4().hex,
            "type": kind,
            "location_id": activity["location_id"],
            "created_at": _now(),
            "gift_card_id": card.id,
            "gift_card_gan": card.gan,
            "gift_card_balance_money": {"amount": card.balance, "currency": card.currency},
            details_name: details,
        }
        self.activities.append({**made, "_idempotency_key": key})
        return {"gift_card_activity": made}
