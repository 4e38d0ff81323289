"""A local stand-in for Shopify's Admin GraphQL API (gift cards), for tests.

``async with FakeShopify() as shop`` listens on 127.0.0.1 (``shop.base_url``) and answers
``POST /admin/api/{version}/graphql.json`` for the ``giftCardDeactivate`` mutation:

- auth by ``X-Shopify-Access-Token`` (a wrong one is a 401 with Shopify's ``{"errors": "..."}``);
- a known card is deactivated once: ``enabled`` false, ``deactivatedAt`` set; deactivating it again
  answers the same card with the *original* ``deactivatedAt`` and changes nothing (the mutation is
  idempotent by nature; Shopify takes no idempotency key for it);
- an unknown id answers ``userErrors: [{code: GIFT_CARD_NOT_FOUND}]`` with ``giftCard: null``;
- every answer carries ``extensions.cost`` like Shopify's.

Failures can be scripted: ``shop.fail_next(2, status=500)``, ``shop.fail_next(1, status=429,
retry_after="1")``, and ``shop.throttle_next(1)`` (HTTP 200 with a ``THROTTLED`` GraphQL error and
a ``throttleStatus``, which is how Shopify usually reports an exhausted cost bucket).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any, Self

from aiohttp import web

QUERY_COST = 10


def _cost(available: float = 1990.0, requested: int = QUERY_COST,
          actual: int | None = QUERY_COST) -> dict[str, Any]:
    return {"cost": {"requestedQueryCost": requested, "actualQueryCost": actual,
                     "throttleStatus": {"maximumAvailable": 2000.0,
                                        "currentlyAvailable": available,
                                        "restoreRate": 100.0}}}


@dataclass
class Scripted:
    status: int
    retry_after: str | None = None
    throttled: bool = False


@dataclass
class Logged:
    path: str
    at: float
    status: int = 0
    body: Any = None


class FakeShopify:
    """The fake server and its state; see the module docstring."""

    def __init__(self, *, access_token: str = "shpat_test") -> None:
        self.access_token = access_token
        self.cards: dict[str, dict[str, Any]] = {}
        self.deactivations: dict[str, int] = {}   # state changes per card: 0 or 1
        self.requests: list[Logged] = []
        self._script: list[Scripted] = []
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def add_card(self, numeric_id: int, balance: str = "50.0", currency: str = "USD") -> str:
        gid = f"gid://shopify/GiftCard/{numeric_id}"
        self.cards[gid] = {"id": gid, "enabled": True, "deactivatedAt": None,
                           "balance": {"amount": balance, "currencyCode": currency}}
        self.deactivations[gid] = 0
        return gid

    def fail_next(self, n: int, *, status: int = 500, retry_after: str | None = None) -> None:
        self._script.extend(Scripted(status, retry_after) for _ in range(n))

    def throttle_next(self, n: int) -> None:
        self._script.extend(Scripted(200, throttled=True) for _ in range(n))

    async def __aenter__(self) -> Self:
        app = web.Application()
        app.router.add_post("/admin/api/{version}/graphql.json", self._graphql)
        self._runner = web.AppRunner(app)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def _graphql(self, request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except json.JSONDecodeError:
            body = None
        entry = Logged(request.path, time.monotonic(), body=body)
        self.requests.append(entry)
        response = self._answer(request, body)
        entry.status = response.status
        return response

    def _answer(self, request: web.Request, body: Any) -> web.Response:
        if request.headers.get("X-Shopify-Access-Token") != self.access_token:
            return web.json_response({"errors": "[API] Invalid API key or access token "
                                                "(unrecognized login or wrong password)"},
                                     status=401)
        if self._script:
            step = self._script.pop(0)
            if step.throttled:
                return web.json_response({
                    "errors": [{"message": "Throttled",
                                "extensions": {"code": "THROTTLED",
                                               "documentation":
                                                   "https://shopify.dev/api/usage/rate-limits"}}],
                    "extensions": _cost(available=5.0, actual=None)})
            headers = {"Retry-After": step.retry_after} if step.retry_after else None
            return web.json_response({"errors": "Internal Server Error" if step.status >= 500
                                      else "Exceeded 2 calls per second for api client."},
                                     status=step.status, headers=headers)
        if (not isinstance(body, dict) or "giftCardDeactivate" not in str(body.get("query"))
                or not isinstance(body.get("variables"), dict)):
            return web.json_response({"errors": [{"message": "this fake only knows "
                                                             "giftCardDeactivate($id)"}]})
        gid = body["variables"].get("id")
        card = self.cards.get(gid)
        if card is None:
            payload = {"giftCard": None, "userErrors": [
                {"field": ["id"], "code": "GIFT_CARD_NOT_FOUND",
                 "message": "The gift card could not be found."}]}
        else:
            if card["deactivatedAt"] is None:
                card["enabled"] = False
                card["deactivatedAt"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
                self.deactivations[gid] += 1
            payload = {"giftCard": dict(card), "userErrors": []}
        return web.json_response({"data": {"giftCardDeactivate": payload},
                                  "extensions": _cost()})
