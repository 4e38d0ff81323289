"""Square hold client against the local fake Square API (tests/fakes/square_api.py)."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable

import pytest
from pydantic import SecretStr

from sinks.base import Backoff, PermanentFailure, RetryLater, SinkError
from sinks.pos import (
    HoldRequest,
    InvalidHoldRequest,
    PosClient,
    PosError,
    PosRejected,
    PosRetryLater,
    RetryPolicy,
    SquarePosClient,
    idempotency_key,
    perform,
)
from sinks.pos.retry import NO_RETRY
from tests.fakes.square_api import FakeSquare

CARD = "gftc:00000000000000000000000000000001"
LOCATION = "L-MAIN"
TOKEN = "test-token"

# Fast retries: the waits are recorded, not slept, except where a test says otherwise.
FAST = RetryPolicy(max_attempts=3, backoff=Backoff(initial=0.5, factor=2.0, cap=4.0, jitter=0.5),
                   max_wait=5.0, budget=10.0)


@pytest.fixture
async def square() -> AsyncIterator[FakeSquare]:
    async with FakeSquare(access_token=TOKEN) as fake:
        fake.add_card(CARD, 5000)
        yield fake


@pytest.fixture
def waits() -> list[float]:
    return []


@pytest.fixture
async def make_client(square: FakeSquare, waits: list[float]
                      ) -> AsyncIterator[Callable[..., SquarePosClient]]:
    made: list[SquarePosClient] = []

    async def record(seconds: float) -> None:
        waits.append(seconds)

    def make(**kwargs: object) -> SquarePosClient:
        options: dict[str, object] = {"access_token": TOKEN, "base_url": square.base_url,
                                      "location_id": LOCATION, "policy": FAST, "sleep": record,
                                      "rng": random.Random(7), "timeout": 5.0}
        options.update(kwargs)
        client = SquarePosClient(**options)  # type: ignore[arg-type]
        made.append(client)
        return client

    yield make
    for client in made:
        await client.close()


@pytest.fixture
def client(make_client: Callable[..., SquarePosClient]) -> SquarePosClient:
    return make_client()


def hold_request(alert_id: str = "alert-1", **fields: object) -> HoldRequest:
    return HoldRequest(card_id=CARD, alert_id=alert_id, **fields)  # type: ignore[arg-type]


async def test_client_satisfies_the_interface(client: SquarePosClient) -> None:
    assert isinstance(client, PosClient)


async def test_hold_decrements_the_whole_balance_once(square: FakeSquare,
                                                      client: SquarePosClient) -> None:
    result = await client.hold(hold_request())

    assert result.outcome == "done", result
    assert (result.pos, result.action, result.amount_minor, result.currency) == (
        "square", "hold", 5000, "USD")
    assert result.idempotency_key == idempotency_key("alert-1", "hold")
    [activity] = square.activities_for(CARD)
    assert activity["type"] == "ADJUST_DECREMENT"
    assert activity["adjust_decrement_activity_details"] == {
        "amount_money": {"amount": 5000, "currency": "USD"}, "reason": "SUSPICIOUS_ACTIVITY"}
    assert activity["location_id"] == LOCATION
    assert result.pos_activity_id == activity["id"]
    assert square.activity_count(result.idempotency_key) == 1
    assert square.cards[CARD].balance == 0
    assert result.response["gift_card_balance_money"] == {"amount": 0, "currency": "USD"}
    assert result.attempts == 2  # GET the balance, POST the activity


async def test_release_gives_back_exactly_what_the_hold_took(square: FakeSquare,
                                                             client: SquarePosClient) -> None:
    held = await client.hold(hold_request())
    released = await client.release(hold_request(action="release", amount_minor=held.amount_minor,
                                                 currency=held.currency))

    assert released.outcome == "done", released
    assert square.cards[CARD].balance == 5000
    [increment] = square.activities_for(CARD, "ADJUST_INCREMENT")
    assert increment["adjust_increment_activity_details"] == {
        "amount_money": {"amount": 5000, "currency": "USD"}, "reason": "SUPPORT_ISSUE"}
    assert released.pos_activity_id == increment["id"]
    assert square.activity_count(idempotency_key("alert-1", "release")) == 1
    assert released.attempts == 1  # amount and currency given: no GET


async def test_the_same_pinned_hold_twice_is_one_activity(square: FakeSquare,
                                                          client: SquarePosClient) -> None:
    req = hold_request(amount_minor=5000, currency="USD")
    first = await client.hold(req)
    again = await client.hold(req)   # a replay, a retry, a restarted worker

    assert first.outcome == again.outcome == "done"
    assert again.pos_activity_id == first.pos_activity_id
    assert len(square.posts()) == 2
    assert square.activity_count(req.idempotency_key) == 1
    assert len(square.activities) == 1
    assert square.cards[CARD].balance == 0


async def test_the_same_unpinned_hold_twice_does_not_decrement_again(
        square: FakeSquare, client: SquarePosClient) -> None:
    first = await client.hold(hold_request())
    again = await client.hold(hold_request())  # the balance is 0 now: nothing left to freeze

    assert first.amount_minor == 5000
    assert (again.outcome, again.amount_minor, again.pos_activity_id) == ("done", 0, None)
    assert len(square.activities) == 1


async def test_same_key_with_a_different_body_fails_without_retry(
        square: FakeSquare, client: SquarePosClient, waits: list[float]) -> None:
    await client.hold(hold_request(amount_minor=1000, currency="USD"))
    clash = await client.hold(hold_request(amount_minor=2000, currency="USD"))

    assert clash.outcome == "failed"
    assert (clash.status_code, clash.error_code) == (400, "IDEMPOTENCY_KEY_REUSED")
    assert clash.attempts == 1 and waits == []
    assert square.cards[CARD].balance == 4000


async def test_429_then_success_honours_retry_after(square: FakeSquare,
                                                    make_client: Callable[..., SquarePosClient]
                                                    ) -> None:
    import asyncio

    client = make_client(sleep=asyncio.sleep)  # really wait: the fake times the requests
    square.fail_next(1, status=429, retry_after="1")
    result = await client.hold(hold_request(amount_minor=5000, currency="USD"))

    assert result.outcome == "done", result
    assert result.attempts == 2
    first, second = square.posts()
    assert first.status == 429 and second.status == 200
    assert second.at - first.at >= 1.0
    assert square.activity_count(result.idempotency_key) == 1


async def test_persistent_500_fails_after_the_bound_without_raising(
        square: FakeSquare, client: SquarePosClient, waits: list[float]) -> None:
    square.fail_next(10, status=500)
    result = await client.hold(hold_request(amount_minor=5000, currency="USD"))

    assert result.outcome == "failed"
    assert result.attempts == FAST.max_attempts == len(square.posts())
    assert (result.status_code, result.error_code) == (500, "INTERNAL_SERVER_ERROR")
    assert result.response["errors"][0]["code"] == "INTERNAL_SERVER_ERROR"
    assert len(waits) == FAST.max_attempts - 1
    assert 0.5 <= waits[0] <= 0.75 and 1.0 <= waits[1] <= 1.5  # backoff + up to 50 % jitter
    assert square.activities == []
    assert square.cards[CARD].balance == 5000


async def test_a_500_after_the_activity_was_made_is_retried_into_one_activity(
        square: FakeSquare, client: SquarePosClient) -> None:
    square.fail_next(1, status=500, after_commit=True)
    result = await client.hold(hold_request(amount_minor=5000, currency="USD"))

    assert result.outcome == "done" and result.attempts == 2
    assert square.activity_count(result.idempotency_key) == 1
    assert square.cards[CARD].balance == 0


async def test_a_retry_after_longer_than_we_block_ends_the_retries(
        square: FakeSquare, client: SquarePosClient, waits: list[float]) -> None:
    square.fail_next(1, status=429, retry_after="120")
    result = await client.hold(hold_request(amount_minor=5000, currency="USD"))

    assert (result.outcome, result.status_code, result.error_code) == ("failed", 429,
                                                                        "RATE_LIMITED")
    assert result.retry_after == 120.0 and result.attempts == 1 and waits == []


async def test_the_sdk_does_not_retry_behind_our_back(
        square: FakeSquare, make_client: Callable[..., SquarePosClient]) -> None:
    client = make_client(policy=NO_RETRY)
    square.fail_next(5, status=503)
    result = await client.confirm_fraud(hold_request(action="confirm_fraud"))

    assert result.outcome == "failed" and result.attempts == 1
    assert len(square.requests) == 1


async def test_refusals_fail_at_once_with_squares_code(
        square: FakeSquare, client: SquarePosClient, waits: list[float]) -> None:
    unknown = await client.hold(HoldRequest(card_id="gftc:nope", alert_id="alert-2"))
    too_much = await client.hold(hold_request(amount_minor=9999, currency="USD"))

    assert (unknown.outcome, unknown.status_code, unknown.error_code) == ("failed", 404,
                                                                          "NOT_FOUND")
    assert (too_much.outcome, too_much.error_code) == ("failed", "INSUFFICIENT_FUNDS")
    assert unknown.attempts == too_much.attempts == 1 and waits == []
    assert square.activities == []


async def test_a_bad_token_is_unauthorized_not_retried(
        square: FakeSquare, make_client: Callable[..., SquarePosClient]) -> None:
    client = make_client(access_token="wrong")
    result = await client.hold(hold_request(amount_minor=5000, currency="USD"))

    assert (result.outcome, result.status_code, result.error_code) == ("failed", 401,
                                                                        "UNAUTHORIZED")
    assert result.attempts == 1


async def test_confirm_fraud_deactivates_once(square: FakeSquare,
                                              client: SquarePosClient) -> None:
    req = hold_request(action="confirm_fraud")
    result = await perform(client, req)
    again = await perform(client, req)

    assert result.outcome == again.outcome == "done"
    [activity] = square.activities_for(CARD)
    assert activity["type"] == "DEACTIVATE"
    assert activity["deactivate_activity_details"] == {"reason": "SUSPICIOUS_ACTIVITY"}
    assert again.pos_activity_id == result.pos_activity_id == activity["id"]
    assert square.cards[CARD].state == "DEACTIVATED"


async def test_an_unreachable_square_is_a_failed_result(
        make_client: Callable[..., SquarePosClient], waits: list[float]) -> None:
    from streams.broker import free_port

    client = make_client(base_url=f"http://127.0.0.1:{free_port()}")
    result = await client.confirm_fraud(hold_request(action="confirm_fraud"))

    assert result.outcome == "failed" and result.attempts == FAST.max_attempts
    assert result.status_code is None and "failed" in (result.error or "")


async def test_malformed_requests_raise(client: SquarePosClient) -> None:
    with pytest.raises(InvalidHoldRequest):
        await client.release(hold_request(action="release"))  # no amount: what to give back?
    with pytest.raises(InvalidHoldRequest):
        await client.hold(hold_request(action="release", amount_minor=1))
    with pytest.raises(InvalidHoldRequest):
        HoldRequest(card_id=CARD, alert_id="a", amount_minor=-1)
    with pytest.raises(InvalidHoldRequest):
        HoldRequest(card_id=CARD, alert_id="a", action="freeze")  # type: ignore[arg-type]


async def test_a_request_without_a_location_raises(
        make_client: Callable[..., SquarePosClient]) -> None:
    client = make_client(location_id=None)
    with pytest.raises(InvalidHoldRequest):
        await client.confirm_fraud(hold_request(action="confirm_fraud"))


def test_idempotency_keys_are_deterministic_short_and_distinct() -> None:
    key = idempotency_key("alert-1", "hold")
    assert key == idempotency_key("alert-1", "hold") == HoldRequest(CARD, "alert-1").idempotency_key
    assert key.startswith("gg-") and len(key) <= 128
    keys = {idempotency_key(a, act) for a in ("alert-1", "alert-2")
            for act in ("hold", "release", "confirm_fraud")}
    assert len(keys) == 6


def test_errors_share_the_sinks_hierarchy() -> None:
    assert issubclass(PosError, SinkError)
    assert issubclass(PosRetryLater, RetryLater) and issubclass(PosRetryLater, PosError)
    assert issubclass(PosRejected, PermanentFailure) and issubclass(PosRejected, PosError)
    assert issubclass(InvalidHoldRequest, PosError)
    err = PosRetryLater("square answered 429", sink="square", retry_after=2, status_code=429,
                        code="RATE_LIMITED")
    assert err.retry_after == 2.0
    assert "sink=square" in str(err) and "status=429" in str(err) and "RATE_LIMITED" in str(err)


async def test_from_settings_uses_the_base_url(square: FakeSquare) -> None:
    class Settings:
        square_access_token = SecretStr(TOKEN)
        square_environment = "sandbox"
        square_base_url = square.base_url

    async with SquarePosClient.from_settings(Settings(), location_id=LOCATION) as client:
        result = await client.hold(hold_request())
    assert result.outcome == "done"
