"""Local stand-ins for the outside services GiftGuard talks to, for tests."""

from .slack_api import CHANNEL_ID, CHANNEL_NAME, TOKEN, Call, FakeSlackApi

__all__ = ["CHANNEL_ID", "CHANNEL_NAME", "TOKEN", "Call", "FakeSlackApi"]
