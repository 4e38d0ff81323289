"""Shopify client against the local fake Admin GraphQL API (tests/fakes/shopify_api.py)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable

import aiohttp
import pytest

from sinks.base import Backoff
from sinks.pos import HoldRequest, PosClient, RetryPolicy, ShopifyPosClient, perform
from sinks.pos.shopify import API_VERSION
from tests.fakes.shopify_api import FakeShopify

TOKEN = "shpat_test"
FAST = RetryPolicy(max_attempts=3, backoff=Backoff(initial=0.5, factor=2.0, cap=4.0, jitter=0.5),
                   max_wait=5.0, budget=10.0)


@pytest.fixture
async def shop() -> AsyncIterator[FakeShopify]:
    async with FakeShopify(access_token=TOKEN) as fake:
        yield fake


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as http:
        yield http


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
def make_client(shop: FakeShopify, session: aiohttp.ClientSession,
                waits: list[float]) -> Callable[..., ShopifyPosClient]:
    async def record(seconds: float) -> None:
        waits.append(seconds)

    def make(**kwargs: object) -> ShopifyPosClient:
        options: dict[str, object] = {"session": session, "shop_url": shop.base_url,
                                      "access_token": TOKEN, "policy": FAST, "sleep": record,
                                      "rng": random.Random(7), "timeout": 5.0}
        options.update(kwargs)
        return ShopifyPosClient(**options)  # type: ignore[arg-type]

    return make


@pytest.fixture
def client(make_client: Callable[..., ShopifyPosClient]) -> ShopifyPosClient:
    return make_client()


def fraud(card_id: str, alert_id: str = "alert-1") -> HoldRequest:
    return HoldRequest(card_id=card_id, alert_id=alert_id, action="confirm_fraud")


async def test_client_satisfies_the_interface(client: ShopifyPosClient) -> None:
    assert isinstance(client, PosClient)


async def test_confirm_fraud_deactivates_the_card(shop: FakeShopify,
                                                  client: ShopifyPosClient) -> None:
    gid = shop.add_card(1001, balance="75.5")
    result = await perform(client, fraud(gid))

    assert result.outcome == "done", result
    assert (result.pos, result.action, result.attempts) == ("shopify", "confirm_fraud", 1)
    assert result.response["enabled"] is False and result.response["deactivated_at"]
    assert result.response["balance"] == {"amount": "75.5", "currencyCode": "USD"}
    assert shop.deactivations[gid] == 1
    [request] = shop.requests
    assert request.path == f"/admin/api/{API_VERSION}/graphql.json"
    assert "giftCardDeactivate" in request.body["query"]
    assert request.body["variables"] == {"id": gid}


async def test_deactivating_twice_is_harmless_and_reported_done(
        shop: FakeShopify, client: ShopifyPosClient) -> None:
    gid = shop.add_card(1002)
    first = await client.confirm_fraud(fraud(gid))
    again = await client.confirm_fraud(fraud(gid))   # a replayed or retried decision

    assert first.outcome == again.outcome == "done"
    assert again.response["deactivated_at"] == first.response["deactivated_at"]
    assert len(shop.requests) == 2 and shop.deactivations[gid] == 1
    assert again.idempotency_key == first.idempotency_key  # recorded for the audit trail


async def test_a_bare_numeric_id_is_turned_into_a_gid(shop: FakeShopify,
                                                      client: ShopifyPosClient) -> None:
    gid = shop.add_card(1003)
    result = await client.confirm_fraud(fraud("1003"))

    assert result.outcome == "done" and shop.deactivations[gid] == 1


async def test_hold_and_release_are_unsupported_and_call_nothing(
        shop: FakeShopify, client: ShopifyPosClient) -> None:
    gid = shop.add_card(1004)
    held = await client.hold(HoldRequest(card_id=gid, alert_id="alert-1"))
    released = await client.release(HoldRequest(card_id=gid, alert_id="alert-1",
                                                action="release", amount_minor=100))

    assert held.outcome == released.outcome == "unsupported"
    assert "idempotency key" in (held.error or "")
    assert held.attempts == released.attempts == 0
    assert shop.requests == [] and shop.cards[gid]["enabled"] is True


async def test_429_then_success_honours_retry_after(shop: FakeShopify, client: ShopifyPosClient,
                                                    waits: list[float]) -> None:
    gid = shop.add_card(1005)
    shop.fail_next(1, status=429, retry_after="1")
    result = await client.confirm_fraud(fraud(gid))

    assert result.outcome == "done" and result.attempts == 2
    assert len(waits) == 1 and 1.0 <= waits[0] <= 1.5
    assert shop.deactivations[gid] == 1


async def test_a_throttled_graphql_answer_waits_for_the_cost_bucket(
        shop: FakeShopify, client: ShopifyPosClient, waits: list[float]) -> None:
    gid = shop.add_card(1006)
    shop.throttle_next(1)
    result = await client.confirm_fraud(fraud(gid))

    assert result.outcome == "done" and result.attempts == 2
    # (10 requested - 5 available) / 100 per second = 0.05 s at least; the backoff may add more.
    assert len(waits) == 1 and waits[0] >= 0.05


async def test_persistent_500_fails_after_the_bound_without_raising(
        shop: FakeShopify, client: ShopifyPosClient, waits: list[float]) -> None:
    gid = shop.add_card(1007)
    shop.fail_next(10, status=500)
    result = await client.confirm_fraud(fraud(gid))

    assert (result.outcome, result.status_code) == ("failed", 500)
    assert result.attempts == FAST.max_attempts == len(shop.requests)
    assert len(waits) == FAST.max_attempts - 1
    assert shop.deactivations[gid] == 0


async def test_an_unknown_card_fails_at_once_with_shopifys_code(
        shop: FakeShopify, client: ShopifyPosClient, waits: list[float]) -> None:
    result = await client.confirm_fraud(fraud("gid://shopify/GiftCard/404"))

    assert (result.outcome, result.error_code, result.attempts) == ("failed",
                                                                    "GIFT_CARD_NOT_FOUND", 1)
    assert waits == []


async def test_a_bad_token_fails_without_retry(shop: FakeShopify,
                                               make_client: Callable[..., ShopifyPosClient]
                                               ) -> None:
    gid = shop.add_card(1008)
    result = await make_client(access_token="wrong").confirm_fraud(fraud(gid))

    assert (result.outcome, result.status_code, result.error_code) == ("failed", 401,
                                                                        "HTTP_401")
    assert result.attempts == 1 and "Invalid API key" in (result.error or "")


async def test_an_unreachable_shop_is_a_failed_result(
        make_client: Callable[..., ShopifyPosClient]) -> None:
    from streams.broker import free_port

    client = make_client(shop_url=f"http://127.0.0.1:{free_port()}")
    result = await client.confirm_fraud(fraud("gid://shopify/GiftCard/1"))

    assert result.outcome == "failed" and result.attempts == FAST.max_attempts


def test_the_endpoint_is_the_versioned_admin_graphql_url(session: aiohttp.ClientSession) -> None:
    client = ShopifyPosClient(session=session, shop_url="example.myshopify.com",
                              access_token=TOKEN, api_version="2025-10")
    assert client.endpoint == "https://example.myshopify.com/admin/api/2025-10/graphql.json"
