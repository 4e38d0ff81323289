"""Structured logs: JSON lines off a terminal, a readable line on one (streams/logs.py)."""

from __future__ import annotations

import io
import json
import logging
import os
import pty
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from streams.logs import configure_logging, reset_logging

ROOT = Path(__file__).resolve().parents[1]


class Terminal(io.StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    yield
    reset_logging()
    root.setLevel(level)


def lines(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_json_lines_off_a_terminal_carry_ts_level_logger_message_and_ids() -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    log = logging.getLogger("giftguard.worker")
    log.info("alert raised for %s", "gftc:1",
             extra={"event_id": "square:a1", "alert_id": "al-1", "card_id": "gftc:1"})
    log.debug("not shown at INFO")
    log.warning("plain")

    first, second = (json.loads(line) for line in lines(out))
    assert first == {"ts": first["ts"], "level": "info", "logger": "giftguard.worker",
                     "message": "alert raised for gftc:1", "event_id": "square:a1",
                     "alert_id": "al-1", "card_id": "gftc:1"}
    assert first["ts"].endswith("Z") and first["ts"][10] == "T" and len(first["ts"]) == 24
    assert second == {"ts": second["ts"], "level": "warning", "logger": "giftguard.worker",
                      "message": "plain"}


def test_json_lines_keep_the_exception_on_one_line() -> None:
    out = io.StringIO()
    configure_logging("INFO", stream=out)
    try:
        raise ValueError("bad amount")
    except ValueError:
        logging.getLogger("giftguard.bridge").exception("rejected", extra={"card_id": "c9"})
    (line,) = lines(out)
    record = json.loads(line)
    assert record["level"] == "error" and record["card_id"] == "c9"
    assert "ValueError: bad amount" in record["exc"]


def test_a_terminal_gets_a_readable_line_with_the_ids() -> None:
    out = Terminal()
    configure_logging("DEBUG", stream=out)
    logging.getLogger("giftguard.worker").warning("hold failed", extra={"card_id": "gftc:7"})
    (line,) = lines(out)
    assert not line.startswith("{")
    assert "WARNING" in line and "giftguard.worker" in line and "hold failed" in line
    assert line.endswith("card_id=gftc:7")


def test_configuring_twice_replaces_the_handler_and_sets_the_level() -> None:
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", stream=first)
    configure_logging("warning", stream=second)
    logging.getLogger("giftguard").info("dropped")
    logging.getLogger("giftguard").error("kept")
    assert first.getvalue() == ""
    assert [json.loads(x)["message"] for x in lines(second)] == ["kept"]


def test_an_unknown_level_is_refused() -> None:
    with pytest.raises(ValueError, match="verbose"):
        configure_logging("verbose", stream=io.StringIO())


SCRIPT = ("import logging; from streams.logs import configure_logging; configure_logging('INFO');"
          " logging.getLogger('giftguard.x').info('hello', extra={'event_id': 'e1'})")


def test_stderr_of_a_real_process_picks_the_format_by_tty() -> None:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    piped = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True,
                           env=env, timeout=30, check=True)
    assert json.loads(piped.stderr)["event_id"] == "e1"

    leader, follower = pty.openpty()
    try:
        subprocess.run([sys.executable, "-c", SCRIPT], stderr=follower, env=env, timeout=30,
                       check=True)
        shown = os.read(leader, 4096).decode()
    finally:
        os.close(leader)
        os.close(follower)
    assert "INFO" in shown and "giftguard.x  hello  event_id=e1" in shown
    assert not shown.lstrip().startswith("{")
