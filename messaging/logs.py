"""Structured logging: one event per line, key=value for people or JSON for machines."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
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
    text = str(value)
    if text == "" or any(c in text for c in ' ="'):
        return json.dumps(text)
    return text


class TextFormatter(logging.Formatter):
    """`2026-01-01T00:00:00.000Z INFO consumer.service completed event_id=... result=3.0`."""

    def format(self, record: logging.LogRecord) -> str:
        moment = datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3]
        parts = [f"{moment}Z", record.levelname, record.name, record.getMessage()]
        parts += [f"{key}={_text(value)}" for key, value in _fields(record).items()]
        line = " ".join(parts)
        if record.exc_info:
            line += " error=" + _text(self.formatException(record.exc_info).replace("\n", " | "))
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, event and the event's fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
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
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter() if settings.log_format == "json" else TextFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(settings.log_level.upper())
    # aio-pika and aiormq are chatty at INFO about reconnect internals; keep their warnings.
    for name in ("aio_pika", "aiormq"):
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))
