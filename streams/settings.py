"""One typed, frozen settings object, read from the environment (and a `.env` file) at start-up.

Every process calls :func:`load_settings` once; a missing or invalid setting stops it with one line
naming the setting (:class:`ConfigError`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

HoldMode = Literal["shadow", "approve", "auto"]
SquareEnvironment = Literal["sandbox", "production"]


class ConfigError(Exception):
    """A setting is missing or invalid; the message is one line that names it."""


class Settings(BaseSettings):
    """GiftGuard's configuration. Field names are the environment variables, lower-cased."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", frozen=True)

    kafka_bootstrap_servers: str = "localhost:9092"
    square_webhook_signature_key: SecretStr | None = None
    square_webhook_url: str | None = None
    square_access_token: SecretStr | None = None
    square_environment: SquareEnvironment = "sandbox"
    square_base_url: str | None = None
    slack_bot_token: SecretStr | None = None
    slack_channel: str | None = None
    slack_signing_secret: SecretStr | None = None
    slack_api_url: str | None = None
    giftguard_hold_mode: HoldMode = "shadow"
    giftguard_policy: Path | None = None
    giftguard_locations: Path | None = None
    # Not in the original contract, each with a safe default:
    giftguard_hash_salt: SecretStr = SecretStr("giftguard-dev-salt")
    giftguard_store: str = "rocksdb://"
    giftguard_data_dir: Path = Path("var/worker")
    giftguard_partitions: int = Field(default=8, ge=1, le=1024)

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _hosts_have_ports(cls, value: str) -> str:
        for host in value.split(","):
            name, _, port = host.strip().rpartition(":")
            if not name or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {value!r}")
        return value

    @field_validator("giftguard_policy", "giftguard_locations")
    @classmethod
    def _file_exists(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"no such file: {value}")
        return value

    @field_validator("giftguard_store")
    @classmethod
    def _known_store(cls, value: str) -> str:
        if not value.startswith(("rocksdb://", "memory://")):
            raise ValueError("expected rocksdb:// or memory://")
        return value

    def require(self, *names: str, why: str) -> None:
        """Stop with a :class:`ConfigError` naming the first of ``names`` that is not set."""
        for name in names:
            value = getattr(self, name)
            if value is None or (isinstance(value, SecretStr) and not value.get_secret_value()):
                raise ConfigError(f"missing setting {name.upper()}: {why}")

    @property
    def bootstrap_servers(self) -> list[str]:
        """The Kafka bootstrap servers as a list."""
        return [h.strip() for h in self.kafka_bootstrap_servers.split(",")]

    def describe(self) -> dict[str, str]:
        """Every setting as text with secrets masked, for start-up logs."""
        return {name.upper(): str(value) for name, value in self}


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment; raise :class:`ConfigError` with one clear line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        name = str(err["loc"][0]).upper() if err["loc"] else "settings"
        message = err["msg"].removeprefix("Value error, ")
        raise ConfigError(f"invalid setting {name}: {message}") from None
