"""POS hold clients behind one small interface: :class:`PosClient` (``hold``, ``release``,
``confirm_fraud``), taking a :class:`HoldRequest` and answering a :class:`HoldResult`.

- :class:`SquarePosClient`: ADJUST_DECREMENT / ADJUST_INCREMENT / DEACTIVATE via ``squareup``.
- :class:`ShopifyPosClient`: ``giftCardDeactivate`` only; hold and release are "unsupported".
- :class:`MemoryPosClient`: records requests, for tests of the callers.
"""

from sinks.pos.base import (
    HoldAction,
    HoldOutcome,
    HoldRequest,
    HoldResult,
    InvalidHoldRequest,
    MemoryPosClient,
    PosClient,
    PosError,
    PosRejected,
    PosRetryLater,
    idempotency_key,
    perform,
    read_balance,
)
from sinks.pos.retry import Retrier, RetryPolicy
from sinks.pos.shopify import ShopifyPosClient
from sinks.pos.square import SquarePosClient

__all__ = [
    "HoldAction",
    "HoldOutcome",
    "HoldRequest",
    "HoldResult",
    "InvalidHoldRequest",
    "MemoryPosClient",
    "PosClient",
    "PosError",
    "PosRejected",
    "PosRetryLater",
    "Retrier",
    "RetryPolicy",
    "ShopifyPosClient",
    "SquarePosClient",
    "idempotency_key",
    "perform",
    "read_balance",
]
