"""A dead letter as plain data: body, properties and its `x-death` history, from a delivery or a file."""

from __future__ import annotations

import base64
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from aio_pika.abc import AbstractIncomingMessage

from messaging import frames

# The AMQP basic properties a dead letter keeps, in the order `show` prints them.
PROPERTY_NAMES = (
    "content_type", "content_encoding", "type", "message_id", "correlation_id", "timestamp",
    "app_id", "user_id", "reply_to", "expiration", "priority", "delivery_mode",
)


@dataclass(frozen=True)
class Death:
    """One `x-death` entry: the broker's record of a queue dead-lettering the message."""

    queue: str
    reason: str
    count: int = 1
    exchange: str = ""
    routing_keys: tuple[str, ...] = ()
    time: datetime | None = None
    original_expiration: str = ""


@dataclass(frozen=True)
class DeadLetter:
    """One message of the DLQ as read: nothing here talks to a broker."""

    body: bytes
    routing_key: str
    exchange: str = ""
    properties: Mapping[str, Any] = field(default_factory=dict)
    headers: Mapping[str, Any] = field(default_factory=dict)
    position: int = 0
    """0-based place in the queue at the time of the scan (the order of reading)."""

    def prop(self, name: str) -> Any:
        return self.properties.get(name)

    def text(self, name: str) -> str | None:
        value = self.properties.get(name)
        return None if value is None else str(value)

    @property
    def client_headers(self) -> dict[str, Any]:
        """Headers set by clients (`attempt`, ...), without the broker's `x-` ones."""
        return {k: v for k, v in self.headers.items()
                if not k.startswith("x-") and k != frames.UNDECODABLE}

    @property
    def undecodable(self) -> str | None:
        """What the AMQP decoder could not decode in the message's header (messaging.frames)."""
        value = self.headers.get(frames.UNDECODABLE)
        return value if isinstance(value, str) else None

    @property
    def deaths(self) -> tuple[Death, ...]:
        """The `x-death` entries, newest first (as RabbitMQ keeps them)."""
        return parse_deaths(self.headers.get("x-death"))


def _text(value: Any) -> str:
    if isinstance(value, bytes):  # a long string that is not UTF-8: kept, escaped for display
        return value.decode("utf-8", "surrogateescape")
    return "" if value is None else str(value)


def _time(value: Any) -> datetime | None:
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float) and not isinstance(value, bool):
        try:
            return datetime.fromtimestamp(value, UTC)
        except (OverflowError, ValueError, OSError):  # a raw timestamp past datetime's range
            return None
    return None


def parse_deaths(raw: Any) -> tuple[Death, ...]:
    """`x-death` as Death records; anything unreadable in it is skipped, never fatal."""
    if not isinstance(raw, Sequence) or isinstance(raw, str | bytes):
        return ()
    deaths = []
    for entry in raw:
        if not isinstance(entry, Mapping):
            continue
        keys = entry.get("routing-keys")
        routing_keys = tuple(_text(k) for k in keys) if isinstance(keys, Sequence) and not isinstance(
            keys, str | bytes) else ()
        try:
            count = int(entry.get("count", 1))
        except (TypeError, ValueError):
            count = 1
        deaths.append(Death(
            queue=_text(entry.get("queue")),
            reason=_text(entry.get("reason")),
            count=count,
            exchange=_text(entry.get("exchange")),
            routing_keys=routing_keys,
            time=_time(entry.get("time")),
            original_expiration=_text(entry.get("original-expiration")),
        ))
    return tuple(deaths)


def from_message(message: AbstractIncomingMessage, position: int) -> DeadLetter:
    """The plain-data copy of a delivery (the delivery itself stays with the scan for settling)."""
    properties = {name: getattr(message, name, None) for name in PROPERTY_NAMES}
    return DeadLetter(
        body=message.body,
        routing_key=message.routing_key or "",
        exchange=message.exchange or "",
        properties={k: v for k, v in properties.items() if v is not None},
        headers=dict(message.headers or {}),
        position=position,
    )


# Header values are AMQP field values: JSON needs tags for the two kinds it has no type for.
_DATETIME = "$datetime"
_BYTES = "$base64"


def to_json_value(value: Any) -> Any:
    """A JSON-ready copy of a header or property value; `from_json_value` restores it."""
    if isinstance(value, datetime):
        moment = value if value.tzinfo else value.replace(tzinfo=UTC)
        return {_DATETIME: moment.isoformat()}
    if isinstance(value, bytes | bytearray):
        return {_BYTES: base64.b64encode(bytes(value)).decode("ascii")}
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): to_json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_json_value(v) for v in value]
    if isinstance(value, bool | int | float | str) or value is None:
        return value
    return str(value)


def from_json_value(value: Any) -> Any:
    if isinstance(value, dict):
        if set(value) == {_DATETIME}:
            return datetime.fromisoformat(value[_DATETIME])
        if set(value) == {_BYTES}:
            return base64.b64decode(value[_BYTES])
        return {k: from_json_value(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_json_value(v) for v in value]
    return value


def to_record(letter: DeadLetter) -> dict[str, Any]:
    """Everything needed to rebuild the letter byte for byte (the raw part of an export line)."""
    return {
        "position": letter.position,
        "exchange": letter.exchange,
        "routing_key": letter.routing_key,
        "properties": to_json_value(dict(letter.properties)),
        "headers": to_json_value(dict(letter.headers)),
        "body_base64": base64.b64encode(letter.body).decode("ascii"),
    }


def from_record(record: Mapping[str, Any]) -> DeadLetter:
    """The letter of an export line; KeyError/ValueError when the line is not one."""
    properties = from_json_value(record.get("properties") or {})
    headers = from_json_value(record.get("headers") or {})
    if not isinstance(properties, dict) or not isinstance(headers, dict):
        raise ValueError("properties and headers must be objects")
    return DeadLetter(
        body=base64.b64decode(record["body_base64"], validate=True),
        routing_key=str(record.get("routing_key") or ""),
        exchange=str(record.get("exchange") or ""),
        properties=properties,
        headers=headers,
        position=int(record.get("position") or 0),
    )
