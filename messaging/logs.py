"""Structured logging: one event per line, key=value for people or JSON for machines."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Mapping
from typing import Any

from messaging.settings import Settings

_FIELDS = "calc_fields"


def kv(**fields: Any) -> dict[str, Any]:
    """`extra=` for a log call: `log.info("completed", extra=kv(event_id=...))`."""
    return {_FIELDS: fields}


def _fields(record: logging.LogRecord) -> Mapping[str, Any]:
    fields = getattr(record, _FIELDS, None)
    return fields if isinstance(fields, Mapping) else {}


def _text(value: Any) -> str:
    """A value as logfmt: bare, or JSON-quoted when empty or holding a space, `=` or `"`."""
    kind = type(value)
    if kind is float or kind is int:  # never needs quotes; most of the per-message line's fields
        return str(value)
    text = value if kind is str else str(value)
    # not printable: a newline would forge a log line, and bytes that were not UTF-8 (surrogates)
    # cannot be written; JSON's escapes cover both
    if not text or " " in text or "=" in text or '"' in text or not text.isprintable():
        return json.dumps(text)
    return text


_second: tuple[int, str] = (-1, "")


def _utc(created: float) -> str:
    """`2026-01-01T00:00:00.000Z`; the part up to the second is formatted once a second."""
    global _second
    seconds = int(created)
    if _second[0] != seconds:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{int((created - seconds) * 1000):03d}Z"


class TextFormatter(logging.Formatter):
    """`2026-01-01T00:00:00.000Z INFO consumer.service completed event_id=... result=3.0`."""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_utc(record.created)} {record.levelname} {record.name} {record.getMessage()}"
        fields = _fields(record)
        if fields:
            line += " " + " ".join([f"{key}={_text(value)}" for key, value in fields.items()])
        if record.exc_info:
            line += " error=" + _text(self.formatException(record.exc_info).replace("\n", " | "))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "event": record.getMessage(),
        }
        data.update(_fields(record))
        if record.exc_info:
            data["error"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str)


def configure(settings: Settings) -> None:
    """Send every logger to stderr in the configured format and level."""
    # Fields no formatter here prints: the logging HOWTO's "Optimization" switches. Without them
    # every record walks the stack for its caller and looks up thread and process names, a
    # third of the cost of the consumer's line per message.
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # aio-pika and aiormq are chatty at INFO about reconnect internals; keep their warnings.
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
