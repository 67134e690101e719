"""Encoding and decoding of calc.v1 events and their AMQP properties; the only module touching bytes."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aiormq.abc import DeliveredMessage
from google.protobuf.message import DecodeError as ProtobufDecodeError
from google.protobuf.timestamp_pb2 import Timestamp
from pamqp.commands import Basic

from calculator import Operation
from gen import calc_pb2
from messaging import frames

# `as` re-exports: the consumer reads these as codec.<name>; each lives in the module named for it
from messaging.death_headers import forged_headers as forged_headers
from messaging.enums import domain_operation as domain_operation
from messaging.enums import operation_label as operation_label
from messaging.enums import proto_operation
from messaging.enums import reason_name as reason_name
from messaging.enums import reason_of as reason_of
from messaging.errors import DecodeError

CONTENT_TYPE = "application/x-protobuf"
PACKAGE = "calc.v1"
TYPE_REQUESTED = f"{PACKAGE}.CalculationRequested"
TYPE_COMPLETED = f"{PACKAGE}.CalculationCompleted"
TYPE_FAILED = f"{PACKAGE}.CalculationFailed"
ATTEMPT_HEADER = "attempt"
MAX_ATTEMPT = 2**32 - 1
SHORT_STRING_MAX = 255  # bytes of an AMQP short string (correlation_id, message_id, ...)
PERSISTENT = 2  # AMQP delivery_mode

APP_PRODUCER = "calc-producer"
APP_CONSUMER = "calc-consumer"
APP_INSPECTOR = "calc-dlq-inspector"

FailureReason = calc_pb2.FailureReason
Requested = calc_pb2.CalculationRequested
Completed = calc_pb2.CalculationCompleted
Failed = calc_pb2.CalculationFailed

FORGED_HEADER = "forged-headers"
"""Client header of a dead letter the consumer dead-lettered itself: the `x-` headers it removed."""


def new_event_id() -> str:
    return str(uuid.uuid4())


def _timestamp_now() -> Timestamp:
    # FromNanoseconds, not GetCurrentTime: that goes through a datetime, twice the cost per event
    ts = Timestamp()
    ts.FromNanoseconds(time.time_ns())
    return ts


def to_datetime(ts: Timestamp) -> datetime:
    return ts.ToDatetime(tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class Incoming:
    """What a consumer needs of one delivery: body, routing key and the properties it checks."""

    body: bytes
    routing_key: str
    content_type: str | None = None
    type: str | None = None
    message_id: str | None = None
    correlation_id: str | None = None
    headers: Mapping[str, Any] = field(default_factory=dict)
    redelivered: bool = False
    undecodable: str | None = None
    """What the frame decoder could not decode in the content header (messaging.frames), if anything."""

    @property
    def attempt(self) -> int:
        """The `attempt` header: 1 when absent or unreadable."""
        value = self.headers.get(ATTEMPT_HEADER)
        if isinstance(value, bytes):
            value = value.decode("ascii", "replace")
        try:
            number = int(value) if value is not None else 1
        except (TypeError, ValueError, OverflowError):
            return 1
        # CalculationFailed.attempts is a uint32: a forged huge header must not break encoding
        return min(max(number, 1), MAX_ATTEMPT)


def fits_short_string(value: str) -> bool:
    """Whether `value` can be sent as an AMQP short string: UTF-8 of at most 255 bytes."""
    if value.isascii():
        return len(value) <= SHORT_STRING_MAX
    try:
        return len(value.encode("utf-8")) <= SHORT_STRING_MAX
    except UnicodeEncodeError:  # surrogate-escaped bytes that were not UTF-8 (messaging.frames)
        return False


def decode_request(body: bytes) -> Requested:
    """Parse a CalculationRequested; DecodeError if the bytes are not one."""
    request = Requested()
    try:
        request.ParseFromString(body)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        raise DecodeError(f"body is not a CalculationRequested ({exc})") from None
    return request


def check_properties(incoming: Incoming) -> None:
    """Tolerant check of type and content type: absent, or exactly the contract's values."""
    if incoming.content_type not in (None, "", CONTENT_TYPE):
        raise DecodeError(f"content type {incoming.content_type!r} is not {CONTENT_TYPE}")
    if incoming.type not in (None, "", TYPE_REQUESTED):
        raise DecodeError(f"type {incoming.type!r} is not {TYPE_REQUESTED}")


def build_request(operation: Operation | int, operands: Sequence[float], source: str,
                  event_id: str | None = None) -> Requested:
    number = proto_operation(operation) if isinstance(operation, Operation) else operation
    return Requested(
        event_id=event_id or new_event_id(),
        occurred_at=_timestamp_now(),
        operation=number,  # type: ignore[arg-type]
        operands=list(operands),
        source=source,
    )


@dataclass(frozen=True, slots=True)
class Outgoing:
    """An encoded message and its AMQP properties, ready for `publisher.publish`."""

    body: bytes
    properties: Basic.Properties

    @property
    def message_id(self) -> str | None:
        return self.properties.message_id

    @property
    def correlation_id(self) -> str | None:
        return self.properties.correlation_id


def _expiration(seconds: float | None) -> str | None:
    """AMQP's per-message TTL: milliseconds as a decimal string."""
    return None if seconds is None else str(int(seconds * 1000))


def _message(body: bytes, type_name: str, event_id: str, correlation_id: str, occurred_seconds: int,
             app_id: str, attempt: int) -> Outgoing:
    # The AMQP timestamp has whole seconds; built straight as the wire's properties (no
    # intermediate message object: this runs once per result on the consumer's hot path).
    return Outgoing(body, Basic.Properties(
        content_type=CONTENT_TYPE,
        message_type=type_name,
        message_id=event_id,
        correlation_id=correlation_id or None,
        timestamp=datetime.fromtimestamp(occurred_seconds, UTC),
        delivery_mode=PERSISTENT,
        app_id=app_id,
        headers={ATTEMPT_HEADER: attempt},
    ))


def request_message(request: Requested, correlation_id: str | None = None,
                    attempt: int = 1, app_id: str = APP_PRODUCER) -> Outgoing:
    """A CalculationRequested as a contract message; correlation_id defaults to its event_id."""
    return _message(request.SerializeToString(), TYPE_REQUESTED, request.event_id,
                    correlation_id or request.event_id, request.occurred_at.seconds, app_id, attempt)


def completed_message(request: Requested, result: float, correlation_id: str, processed_by: str,
                      attempt: int) -> tuple[Outgoing, Completed]:
    event = Completed(
        event_id=new_event_id(),
        request_event_id=request.event_id,
        occurred_at=_timestamp_now(),
        operation=request.operation,
        operands=list(request.operands),
        result=result,
        processed_by=processed_by,
    )
    message = _message(event.SerializeToString(), TYPE_COMPLETED, event.event_id, correlation_id,
                       event.occurred_at.seconds, APP_CONSUMER, attempt)
    return message, event


def failed_message(request_event_id: str, operation: int, reason: int, detail: str,
                   attempts: int, correlation_id: str, processed_by: str) -> tuple[Outgoing, Failed]:
    if not detail.isascii():  # text from the wire: protobuf strings must be valid UTF-8
        detail = frames.escaped(detail)
    event = Failed(
        event_id=new_event_id(),
        request_event_id=request_event_id,
        occurred_at=_timestamp_now(),
        operation=operation,  # type: ignore[arg-type]
        reason=reason,  # type: ignore[arg-type]
        detail=detail,
        attempts=attempts,
        processed_by=processed_by,
    )
    message = _message(event.SerializeToString(), TYPE_FAILED, event.event_id, correlation_id,
                       event.occurred_at.seconds, APP_CONSUMER, attempts)
    return message, event


def copy_message(body: bytes, original: Basic.Properties, attempt: int,
                 expiration: float | None = None, app_id: str | None = None) -> Outgoing:
    """The same body and properties, the next `attempt`, and none of the broker's `x-` headers.

    Used for delayed retries (with `expiration`) and for replays from the DLQ (fresh attempt,
    and the inspector's `app_id`: the contract's app_id names the app that published).
    """
    headers = {k: v for k, v in (original.headers or {}).items()
               if not k.startswith("x-") and k != frames.UNDECODABLE}
    headers[ATTEMPT_HEADER] = attempt
    # the original's octets as they came, even those that are not UTF-8 (a replay of a message
    # whose header could not be decoded is that same message)
    return Outgoing(body, frames.OctetProperties(
        content_type=original.content_type,
        content_encoding=original.content_encoding,
        message_type=original.message_type,
        message_id=original.message_id,
        correlation_id=original.correlation_id,
        timestamp=original.timestamp,
        delivery_mode=PERSISTENT,
        app_id=app_id or original.app_id,
        reply_to=original.reply_to,
        priority=original.priority,
        headers=headers,
        expiration=_expiration(expiration),
    ))


def dead_letter_copy(body: bytes, original: Basic.Properties, attempt: int,
                     forged: Sequence[str]) -> Outgoing:
    """The copy of a message the consumer dead-letters itself: no `x-` headers, and which were forged."""
    copy = copy_message(body, original, attempt)
    assert copy.properties.headers is not None
    copy.properties.headers[FORGED_HEADER] = ", ".join(frames.escaped(name) for name in forged)
    return copy


UNENCODABLE_HEADER = "unencodable"
"""Client header of a reduced dead-letter copy: why the properties could not be sent as they came."""


def reduced_dead_letter_copy(body: bytes, original: Basic.Properties, attempt: int,
                             forged: Sequence[str], error: str) -> Outgoing:
    """The body and only the identifying properties that fit, for a message whose other headers
    cannot be encoded again (a double past a float, bytes that are not UTF-8, nesting too deep)."""
    def kept(value: str | None) -> str | None:
        return value if value and fits_short_string(value) else None

    return Outgoing(body, Basic.Properties(
        content_type=kept(original.content_type),
        message_type=kept(original.message_type),
        message_id=kept(original.message_id),
        correlation_id=kept(original.correlation_id),
        delivery_mode=PERSISTENT,
        headers={ATTEMPT_HEADER: attempt,
                 FORGED_HEADER: ", ".join(frames.escaped(name) for name in forged),
                 UNENCODABLE_HEADER: frames.escaped(error)[:500]},
    ))


def incoming_of(message: DeliveredMessage) -> Incoming:
    """The parts of a delivery (a consumed or a got message) a handler looks at."""
    properties = message.header.properties
    delivery = message.delivery
    headers = properties.headers or {}
    undecodable = headers.get(frames.UNDECODABLE)
    return Incoming(
        body=message.body,
        routing_key=getattr(delivery, "routing_key", None) or "",
        content_type=properties.content_type,
        type=properties.message_type,
        message_id=properties.message_id,
        correlation_id=properties.correlation_id,
        headers=headers,
        redelivered=bool(getattr(delivery, "redelivered", False)),
        undecodable=undecodable if isinstance(undecodable, str) else None,
    )


def decode_completed(body: bytes) -> Completed:
    event = Completed()
    event.ParseFromString(body)
    return event


def decode_failed(body: bytes) -> Failed:
    event = Failed()
    event.ParseFromString(body)
    return event
