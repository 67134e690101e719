"""The broker's dead-letter headers (`x-death` and kin): their shape, and which ones a client forged."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

_DEATH_FIELDS: tuple[tuple[str, type | tuple[type, ...]], ...] = (
    ("queue", str), ("reason", str), ("count", int), ("time", datetime), ("exchange", str),
    ("routing-keys", list))
_BROKER_TEXT_HEADERS = frozenset(f"x-{edge}-death-{part}" for edge in ("first", "last")
                                 for part in ("queue", "reason", "exchange"))


def _is_deaths(value: Any) -> bool:
    """Whether `value` has the shape of the broker's own `x-death`: a list of tables of its fields."""
    if not isinstance(value, list):
        return False
    for entry in value:
        if not isinstance(entry, dict):
            return False
        for name, kind in _DEATH_FIELDS:
            item = entry.get(name)
            if not isinstance(item, kind) or isinstance(item, bool):
                return False
        if not all(isinstance(key, str) for key in entry["routing-keys"]):
            return False
        if not isinstance(entry.get("original-expiration", ""), str):
            return False
    return True


def forged_headers(headers: Mapping[str, Any]) -> list[str]:
    """The `x-` headers that dead-lettering reads and that lack the broker's shape: a client's.

    RabbitMQ 3.10's dead-letter worker crashes on a malformed `x-death` (and, restarted on the
    same message, soon stops for good: no queue of the node dead-letters any more), so a message
    carrying one must never be rejected to the broker. Other `x-` headers are left alone.
    """
    forged = []
    for key, value in headers.items():
        if key == "x-death":
            ok = _is_deaths(value)
        elif key in _BROKER_TEXT_HEADERS:
            ok = isinstance(value, str)
        elif key == "x-delivery-count":
            ok = isinstance(value, int) and not isinstance(value, bool)
        else:
            continue
        if not ok:
            forged.append(key)
    return forged
