"""Webhook signatures over raw bytes: small pure functions, compared in constant time.

Square signs ``notification URL + raw body`` with HMAC-SHA256 under the subscription's signature
key and sends base64 of the digest in ``x-square-hmacsha256-signature``.

>>> sig = square_signature("key", "https://example.com/webhooks/square", b'{"a":1}')
>>> sig  # openssl dgst -sha256 -hmac key -binary | base64
'M3nB2oQ2NCAsPKZSWBP/Vvf6eGokoJ1w/zeTXoTMPRk='
>>> verify_square("key", "https://example.com/webhooks/square", b'{"a":1}', sig)
True
>>> verify_square("key", "https://example.com/webhooks/square", b'{"a":2}', sig)
False
>>> verifier = SquareVerifier("key", "https://example.com/webhooks/square")
>>> verifier.verify(b'{"a":1}', sig), verifier.verify(b'{"a":2}', sig), verifier.verify(b"", None)
(True, False, False)
"""

from __future__ import annotations

import base64
import hashlib
import hmac

SQUARE_SIGNATURE_HEADER = "x-square-hmacsha256-signature"


def square_signature(key: str, notification_url: str, body: bytes) -> str:
    """The signature Square sends for ``body`` posted to ``notification_url``."""
    digest = hmac.new(key.encode(), notification_url.encode() + body, hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def verify_square(key: str, notification_url: str, body: bytes, signature: str | None) -> bool:
    """True when ``signature`` is Square's signature of ``body``; constant-time comparison."""
    if not signature:
        return False
    expected = square_signature(key, notification_url, body)
    return hmac.compare_digest(expected.encode(), signature.strip().encode())


class SquareVerifier:
    """:func:`verify_square` for one key and notification URL, for a server's hot path.

    The key schedule and the URL prefix are hashed once; each request copies that HMAC state
    and hashes only its body. Same answers as :func:`verify_square`, constant-time comparison.
    """

    __slots__ = ("_prefix",)

    def __init__(self, key: str, notification_url: str) -> None:
        self._prefix = hmac.new(key.encode(), notification_url.encode(), hashlib.sha256)

    def verify(self, body: bytes, signature: str | None) -> bool:
        """True when ``signature`` is Square's signature of ``body``."""
        if not signature:
            return False
        mac = self._prefix.copy()
        mac.update(body)
        expected = base64.b64encode(mac.digest())
        try:
            given = signature.strip().encode("ascii")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(expected, given)
