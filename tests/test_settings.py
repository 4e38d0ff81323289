"""Settings: defaults, validation with one line naming the setting, secrets masked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streams.settings import ConfigError, load_settings


def test_defaults(clean_env: Path) -> None:
    s = load_settings()
    assert s.kafka_bootstrap_servers == "localhost:9092"
    assert s.giftguard_hold_mode == "shadow"
    assert s.bootstrap_servers == ["localhost:9092"]


@pytest.mark.parametrize("name, value", [
    ("GIFTGUARD_HOLD_MODE", "yolo"),
    ("KAFKA_BOOTSTRAP_SERVERS", "no-port-here"),
    ("SQUARE_ENVIRONMENT", "staging"),
    ("GIFTGUARD_POLICY", "/does/not/exist.yaml"),
])
def test_invalid_setting_names_itself(clean_env: Path, monkeypatch: pytest.MonkeyPatch,
                                      name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(f"invalid setting {name}:")
    assert "\n" not in str(info.value)


def test_dotenv_file_is_read(clean_env: Path) -> None:
    (clean_env / ".env").write_text("GIFTGUARD_HOLD_MODE=approve\n")
    assert load_settings().giftguard_hold_mode == "approve"


def test_secrets_are_masked(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SLACK_BOT_TOKEN", "xoxb-very-secret")
    s = load_settings()
    assert "xoxb-very-secret" not in str(s.describe()) and "xoxb-very-secret" not in repr(s)
    assert s.slack_bot_token.get_secret_value() == "xoxb-very-secret"


def test_bridge_without_signature_key_stops_with_one_line(clean_env: Path) -> None:
    result = subprocess.run([sys.executable, "-m", "streams.cli", "bridge", "--port", "1"],
                            capture_output=True, text=True, timeout=60,
                            cwd=clean_env, env={"PATH": "/usr/bin:/bin",
                                                "PYTHONPATH": str(Path(__file__).parent.parent)})
    assert result.returncode != 0
    lines = result.stderr.strip().splitlines()
    assert lines == ["giftguard: missing setting SQUARE_WEBHOOK_SIGNATURE_KEY: "
                     "the bridge needs them to verify Square's signatures"]
