"""Logging for every GiftGuard process: JSON lines for machines, a readable line for people.

:func:`configure_logging` sends records to stderr, one JSON object per line when stderr is not a
terminal (a container, a pipe, a file), a short readable line when it is. The JSON carries
``ts`` (RFC 3339, UTC, milliseconds), ``level``, ``logger`` and ``message``, the exception when
there is one, and the identifiers an analyst or engineer searches by, when the call passes them
in ``extra``::

    log.warning("hold failed", extra={"alert_id": alert.alert_id, "card_id": alert.card_id})

>>> import io, json, logging
>>> out = io.StringIO()
>>> _ = configure_logging("INFO", stream=out, json_lines=True)
>>> log = logging.getLogger("giftguard.demo")
>>> log.info("scored %s", "square:1", extra={"event_id": "square:1"})
>>> record = json.loads(out.getvalue())
>>> record["level"], record["logger"], record["message"], record["event_id"]
('info', 'giftguard.demo', 'scored square:1', 'square:1')
>>> reset_logging()
"""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import IO

#: Identifiers copied from ``extra=`` into the JSON line (and shown on a terminal).
CONTEXT_FIELDS = ("event_id", "alert_id", "card_id")

#: Marks the handler this module installed, so a second call replaces it instead of adding one.
_HANDLER_NAME = "giftguard"


def _timestamp(created: float) -> str:
    seconds = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created))
    return f"{seconds}.{int(created % 1 * 1000):03d}Z"


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, context ids, exc."""

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "ts": _timestamp(record.created),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in CONTEXT_FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                line[name] = value
        if record.exc_info:
            line["exc"] = self.formatException(record.exc_info)
        elif record.exc_text:
            line["exc"] = record.exc_text
        if record.stack_info:
            line["stack"] = self.formatStack(record.stack_info)
        return json.dumps(line, ensure_ascii=False, default=str)


class ConsoleFormatter(logging.Formatter):
    """``12:00:01.234 WARNING giftguard.worker  hold failed  card_id=gftc:1``"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s.%(msecs)03d %(levelname)-7s %(name)s  %(message)s",
                         datefmt="%H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        context = [f"{name}={getattr(record, name)}" for name in CONTEXT_FIELDS
                   if getattr(record, name, None) is not None]
        if not context:
            return text
        head, sep, tail = text.partition("\n")  # keep a traceback below the context
        return f"{head}  {' '.join(context)}{sep}{tail}"


def configure_logging(level: int | str = "INFO", *, stream: IO[str] | None = None,
                      json_lines: bool | None = None) -> logging.Handler:
    """Send every log record at ``level`` or above to ``stream`` (stderr by default).

    ``json_lines=None`` chooses by the stream: JSON lines unless it is a terminal. Calling it
    again replaces the handler it installed before. Returns the handler.
    """
    stream = sys.stderr if stream is None else stream
    if json_lines is None:
        isatty = getattr(stream, "isatty", None)
        json_lines = not (callable(isatty) and isatty())
    if isinstance(level, str):
        name = level.upper()
        if name not in logging.getLevelNamesMapping():
            raise ValueError(f"unknown log level {level!r}")
        level = logging.getLevelNamesMapping()[name]
    handler = logging.StreamHandler(stream)
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(JsonFormatter() if json_lines else ConsoleFormatter())
    root = logging.getLogger()
    reset_logging()
    root.addHandler(handler)
    root.setLevel(level)
    return handler


def reset_logging() -> None:
    """Remove the handler :func:`configure_logging` installed (for tests)."""
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.get_name() == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
