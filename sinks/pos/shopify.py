"""Shopify gift cards through the Admin GraphQL API: ``confirm_fraud`` only.

**What Shopify offers, and why only one verb.** ``giftCardDeactivate(id)`` is permanent ("a
deactivated gift card cannot be re-enabled"), which is exactly ``confirm_fraud``. There is no
reversible freeze: ``giftCardUpdate`` edits note, expiry, customer and recipient, not whether the
card can be spent. A freeze *could* be imitated with ``giftCardDebit`` then ``giftCardCredit``
(2024-10 and later), but neither takes an idempotency key (Shopify's ``@idempotent`` directive
covers refunds and inventory, not gift card transactions), and we retry exactly the ambiguous
cases (timeouts, 5xx) where the first debit may already have happened: a retried hold could take
the balance twice. So ``hold`` and ``release`` answer ``outcome="unsupported"`` without a request,
and the caller goes to ``confirm_fraud`` (with analyst approval, as policy requires) or alerts only.

**Idempotency.** ``giftCardDeactivate`` needs no key: it sets a state and creates no transaction,
so sending it again (a retry after a timeout, a replayed decision) cannot act twice. An answer
whose ``giftCard.deactivatedAt`` is set counts as ``done``, whether this request or an earlier one
deactivated it. The request's idempotency key still goes in the result, for the audit record.

**Errors and retries.** HTTP 429 and 5xx, timeouts, and GraphQL ``THROTTLED`` errors (Shopify
rate-limits by query cost and may answer 200 with ``errors[].extensions.code == "THROTTLED"``; the
wait is computed from ``extensions.cost.throttleStatus``) are retried under the same
:class:`~sinks.pos.retry.RetryPolicy` as Square. Other HTTP errors (401 bad token, 403 missing
``write_gift_cards`` scope, 404), other GraphQL errors and ``userErrors`` (``GIFT_CARD_NOT_FOUND``)
are final.

The HTTP session is injected (``aiohttp.ClientSession``); the client never owns one.
"""

from __future__ import annotations

import asyncio
import json
import random
from typing import Any

import aiohttp

from sinks.pos.base import HoldRequest, HoldResult, InvalidHoldRequest, PosRejected, PosRetryLater
from sinks.pos.retry import OnRetry, Retrier, RetryPolicy, Sleep, parse_retry_after

API_VERSION = "2025-10"

DEACTIVATE = """
mutation GiftGuardDeactivate($id: ID!) {
  giftCardDeactivate(id: $id) {
    giftCard { id enabled deactivatedAt balance { amount currencyCode } }
    userErrors { field code message }
  }
}
""".strip()

NO_HOLD = ("Shopify has no reversible gift card hold: giftCardDebit/giftCardCredit take no "
           "idempotency key, so a retried hold could debit twice; use confirm_fraud "
           "(giftCardDeactivate, permanent)")
NO_RELEASE = "Shopify holds are not made, and a deactivated gift card cannot be re-enabled"


def gift_card_gid(card_id: str) -> str:
    """Shopify's global id for a gift card, from a gid or a bare numeric id.

    >>> gift_card_gid("12345"), gift_card_gid("gid://shopify/GiftCard/12345")
    ('gid://shopify/GiftCard/12345', 'gid://shopify/GiftCard/12345')
    """
    return card_id if card_id.startswith("gid://") else f"gid://shopify/GiftCard/{card_id}"


def throttle_wait(body: dict[str, Any]) -> float:
    """Seconds until the cost bucket holds what a throttled query asked for (0 if unknown).

    >>> throttle_wait({"extensions": {"cost": {"requestedQueryCost": 10, "throttleStatus":
    ...     {"maximumAvailable": 2000.0, "currentlyAvailable": 4, "restoreRate": 100.0}}}})
    0.06
    """
    cost = (body.get("extensions") or {}).get("cost") or {}
    status = cost.get("throttleStatus") or {}
    try:
        missing = float(cost["requestedQueryCost"]) - float(status["currentlyAvailable"])
        return max(0.0, round(missing / float(status["restoreRate"]), 3))
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return 0.0


class ShopifyPosClient:
    """``confirm_fraud`` via ``giftCardDeactivate``; ``hold``/``release`` are unsupported.

    ``shop_url`` is ``https://<shop>.myshopify.com`` (a bare domain gets ``https://``), or a fake's
    base URL in tests. ``session`` is borrowed, not closed.
    """

    name = "shopify"

    def __init__(self, *, session: aiohttp.ClientSession, shop_url: str, access_token: str,
                 api_version: str = API_VERSION, policy: RetryPolicy | None = None,
                 timeout: float = 10.0, sleep: Sleep = asyncio.sleep,
                 rng: random.Random | None = None, on_retry: OnRetry | None = None) -> None:
        if not access_token:
            raise ValueError("the Shopify access token is empty")
        if not shop_url:
            raise ValueError("the Shopify shop URL is empty")
        base = shop_url if "://" in shop_url else f"https://{shop_url}"
        self.endpoint = f"{base.rstrip('/')}/admin/api/{api_version}/graphql.json"
        self._session = session
        self._headers = {"X-Shopify-Access-Token": access_token,
                         "Content-Type": "application/json", "Accept": "application/json"}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._retrier = Retrier(policy, sleep=sleep, rng=rng, on_retry=on_retry)

    async def close(self) -> None:
        """Nothing to release: the session belongs to the caller."""

    async def hold(self, req: HoldRequest) -> HoldResult:
        """Unsupported on Shopify (see the module docstring); no request is made."""
        return HoldResult.unsupported(self.name, req, NO_HOLD)

    async def release(self, req: HoldRequest) -> HoldResult:
        """Unsupported on Shopify; no request is made."""
        return HoldResult.unsupported(self.name, req, NO_RELEASE)

    async def confirm_fraud(self, req: HoldRequest) -> HoldResult:
        """``giftCardDeactivate``: permanent, and idempotent by nature."""
        if req.action != "confirm_fraud":
            raise InvalidHoldRequest(f"confirm_fraud() was given a {req.action!r} request",
                                     sink=self.name, alert_id=req.alert_id)
        got = await self._retrier.run(lambda: self._deactivate(req))
        if got.error is not None:
            return HoldResult.from_error(self.name, req, got.error, attempts=got.attempts)
        card = got.value or {}
        balance = card.get("balance") or {}
        return HoldResult(
            pos=self.name, action=req.action, outcome="done", card_id=req.card_id,
            alert_id=req.alert_id, idempotency_key=req.idempotency_key,
            currency=balance.get("currencyCode"), attempts=got.attempts,
            response={"gift_card_id": card.get("id"), "enabled": card.get("enabled"),
                      "deactivated_at": card.get("deactivatedAt"), "balance": balance or None})

    async def _deactivate(self, req: HoldRequest) -> dict[str, Any]:
        body = await self._post(req, {"query": DEACTIVATE,
                                      "variables": {"id": gift_card_gid(req.card_id)}})
        payload = ((body.get("data") or {}).get("giftCardDeactivate")) or {}
        card = payload.get("giftCard") or {}
        if card.get("deactivatedAt"):
            return card  # deactivated, now or by an earlier identical request
        errors = payload.get("userErrors") or []
        first = errors[0] if errors else {}
        code = first.get("code") or "NOT_DEACTIVATED"
        raise PosRejected(f"shopify giftCardDeactivate: {first.get('message') or code}",
                          sink=self.name, alert_id=req.alert_id, response=body,
                          status_code=200, code=code)

    async def _post(self, req: HoldRequest, payload: dict[str, Any]) -> dict[str, Any]:
        """One GraphQL request; transport, HTTP and GraphQL errors become :class:`PosError`."""
        try:
            async with self._session.post(self.endpoint, json=payload, headers=self._headers,
                                          timeout=self._timeout) as resp:
                status = resp.status
                retry_after = parse_retry_after(resp.headers.get("Retry-After"))
                text = await resp.text()
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise PosRetryLater(f"shopify request failed: {exc!r}", sink=self.name,
                                alert_id=req.alert_id) from exc
        try:
            body = json.loads(text) if text else {}
        except json.JSONDecodeError:
            body = {"body": text[:500]}
        if not isinstance(body, dict):
            body = {"body": body}
        if status == 429 or status >= 500:
            raise PosRetryLater(f"shopify answered {status}", sink=self.name,
                                retry_after=retry_after, alert_id=req.alert_id, response=body,
                                status_code=status, code="THROTTLED" if status == 429 else None)
        if status >= 300:
            raise PosRejected(f"shopify answered {status}: {str(body.get('errors', ''))[:200]}",
                              sink=self.name, alert_id=req.alert_id, response=body,
                              status_code=status, code=f"HTTP_{status}")
        errors = body.get("errors")
        if errors:
            first = errors[0] if isinstance(errors, list) and errors else {}
            code = ((first.get("extensions") or {}).get("code") if isinstance(first, dict)
                    else None) or "GRAPHQL_ERROR"
            message = first.get("message") if isinstance(first, dict) else str(errors)
            if code == "THROTTLED":
                raise PosRetryLater("shopify throttled the query", sink=self.name,
                                    retry_after=max(retry_after, throttle_wait(body)),
                                    alert_id=req.alert_id, response=body, status_code=status,
                                    code=code)
            raise PosRejected(f"shopify GraphQL error: {message}", sink=self.name,
                              alert_id=req.alert_id, response=body, status_code=status,
                              code=code)
        return body
