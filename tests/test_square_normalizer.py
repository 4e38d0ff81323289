"""Square envelopes to canonical events: every activity type, money, status, privacy."""

from __future__ import annotations

import pytest

from detectors.events import Event, InvalidEvent
from detectors.square import normalize_square, salted_hasher
from tests.square_envelopes import envelope

ALL_TYPES = ["ACTIVATE", "LOAD", "REDEEM", "CLEAR_BALANCE", "DEACTIVATE", "ADJUST_INCREMENT",
             "ADJUST_DECREMENT", "REFUND", "UNLINKED_ACTIVITY_REFUND", "IMPORT", "BLOCK",
             "UNBLOCK", "IMPORT_REVERSAL", "TRANSFER_BALANCE_FROM", "TRANSFER_BALANCE_TO"]
NO_AMOUNT = {"CLEAR_BALANCE", "DEACTIVATE", "BLOCK", "UNBLOCK"}


@pytest.mark.parametrize("kind", ALL_TYPES)
def test_every_square_activity_type_normalizes(kind: str) -> None:
    amount = None if kind in NO_AMOUNT else 2550
    ev = normalize_square(envelope(kind, amount=amount, balance=1234, activity_id="gcact_9"))
    assert ev.event_id == "square:gcact_9"
    assert ev.type == kind.lower()
    assert ev.card_id == "gftc:1" and ev.location_id == "L1"
    assert ev.amount_minor == (0 if amount is None else 2550)
    assert isinstance(ev.amount_minor, int)
    assert ev.balance_after_minor == 1234 and ev.currency == "USD"
    assert ev.occurred_at == "2026-11-21T10:00:00Z" and ev.source == "square"
    assert ev.gan_last4 == "4567"
    # The canonical form round-trips through JSON.
    assert Event.from_json(ev.to_json()) == ev


def test_unknown_activity_type_is_kept_lower_cased() -> None:
    ev = normalize_square(envelope("SOMETHING_NEW", amount=100))
    assert ev.type == "something_new" and ev.amount_minor == 100


def test_redemption_status_and_updates_have_distinct_ids() -> None:
    pending = normalize_square(envelope("REDEEM", status="PENDING"))
    done = normalize_square(envelope("REDEEM", status="COMPLETED",
                                     event_type="gift_card.activity.updated"))
    canceled = normalize_square(envelope("REDEEM", status="CANCELED",
                                         event_type="gift_card.activity.updated"))
    assert pending.status == "pending" and pending.event_id == "square:gcact_1"
    assert done.status == "completed" and done.event_id == "square:gcact_1:completed"
    assert canceled.status == "canceled" and canceled.event_id == "square:gcact_1:canceled"


def test_payment_instruments_are_hashed_never_raw() -> None:
    env = envelope("ACTIVATE", details={"buyer_payment_instrument_ids": ["ccof:RAW123"]})
    ev = normalize_square(env, salted_hasher("pepper"))
    assert ev.payment_ref and "RAW123" not in ev.payment_ref
    assert ev.payment_ref == salted_hasher("pepper")("ccof:RAW123")
    assert ev.payment_ref != salted_hasher("other")("ccof:RAW123")
    assert "7783320001234567" not in ev.to_json().decode()


@pytest.mark.parametrize("mutate, message", [
    (lambda e: e.update(type="payment.created"), "unsupported webhook type"),
    (lambda e: e["data"].update(type="payment"), "data.type"),
    (lambda e: e["data"]["object"].pop("gift_card_activity"), "gift_card_activity"),
    (lambda e: e["data"]["object"]["gift_card_activity"].pop("gift_card_id"), "gift_card_id"),
    (lambda e: e["data"]["object"]["gift_card_activity"].update(created_at="yesterday"),
     "RFC 3339"),
    (lambda e: e["data"]["object"]["gift_card_activity"]["redeem_activity_details"].update(
        amount_money={"amount": "12", "currency": "USD"}), "amount must be an integer"),
])
def test_malformed_envelopes_name_the_problem(mutate, message: str) -> None:
    env = envelope("REDEEM")
    mutate(env)
    with pytest.raises(InvalidEvent, match=message):
        normalize_square(env)


def test_negative_amount_is_refused() -> None:
    with pytest.raises(InvalidEvent, match="amount_minor"):
        normalize_square(envelope("REDEEM", amount=-5))
