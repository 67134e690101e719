"""From one delivery of calc.results.journal to the row it records, or the reason it cannot (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from google.protobuf.message import DecodeError as ProtobufDecodeError

from gen import calc_pb2
from messaging import codec

ID_MAX = 255
"""Characters of an id the journal keeps (an AMQP short string's bytes; a UUID has 36)."""
ATTEMPTS_MAX = 2**31 - 1
"""PostgreSQL's integer; a forged `attempt` header past it is kept as this, not refused."""
DETAIL_MAX = 2000
"""Characters of a failure's detail the journal keeps; the rest is cut (the DLQ has the whole)."""

COMPLETED = "completed"
FAILED = "failed"

# The reasons an outcome goes to calc.results.journal.dlq (its `reason` header).
UNDECODABLE = "undecodable"
UNEXPECTED_TYPE = "unexpected-type"
NO_REQUEST = "no-request-id"
NO_EVENT_ID = "no-event-id"
UNSTORABLE = "unstorable"
REFUSED = "refused-by-database"
REASONS = (UNDECODABLE, UNEXPECTED_TYPE, NO_REQUEST, NO_EVENT_ID, UNSTORABLE, REFUSED)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One outcome event as the journal records it: a row's worth of fields."""

    request_event_id: str
    event_id: str
    status: str  # COMPLETED or FAILED
    operation: str
    operands: list[float] | None
    """None for a failure: CalculationFailed does not carry the operands."""
    result: float | None
    reason: str | None
    detail: str | None
    attempts: int
    correlation_id: str
    processed_by: str
    occurred_at: datetime


@dataclass(frozen=True, slots=True)
class Rejected:
    """An outcome the journal cannot record: why (one of REASONS), in a word and in a sentence."""

    reason: str
    detail: str


def _epoch(ts: object) -> datetime:
    seconds = getattr(ts, "seconds", 0)
    nanos = getattr(ts, "nanos", 0)
    try:
        return datetime.fromtimestamp(seconds + nanos / 1e9, UTC)
    except (OverflowError, OSError, ValueError):  # a timestamp past year 9999: not a moment we can store
        return datetime.fromtimestamp(0, UTC)


def _storable(*texts: str) -> bool:
    # PostgreSQL's text holds any UTF-8 except NUL; protobuf already guarantees the UTF-8
    return not any("\x00" in text for text in texts)


def read(incoming: codec.Incoming) -> Outcome | Rejected:
    """The row an outcome delivery records, or why it cannot be recorded."""
    if incoming.content_type not in (None, "", codec.CONTENT_TYPE):
        return Rejected(UNEXPECTED_TYPE,
                        f"content type {incoming.content_type!r} is not {codec.CONTENT_TYPE}")
    event: calc_pb2.CalculationCompleted | calc_pb2.CalculationFailed
    if incoming.type == codec.TYPE_COMPLETED:
        event = calc_pb2.CalculationCompleted()
    elif incoming.type == codec.TYPE_FAILED:
        event = calc_pb2.CalculationFailed()
    else:
        return Rejected(UNEXPECTED_TYPE, f"type {incoming.type!r} is neither {codec.TYPE_COMPLETED} "
                                         f"nor {codec.TYPE_FAILED}")
    try:
        event.ParseFromString(incoming.body)
    except (ProtobufDecodeError, RuntimeError, ValueError) as exc:
        return Rejected(UNDECODABLE, f"body is not a {incoming.type} ({exc})")
    request_id = event.request_event_id
    event_id = event.event_id or incoming.message_id or ""
    if not request_id:
        return Rejected(NO_REQUEST, "the outcome names no request (request_event_id is empty: "
                                    "the request itself did not decode)")
    if not event_id:
        return Rejected(NO_EVENT_ID, "the outcome has no event_id (nor message_id): a redelivery "
                                     "could not be told from a second outcome")
    correlation_id = incoming.correlation_id or ""
    too_long = [name for name, value in (("request_event_id", request_id), ("event_id", event_id),
                                         ("correlation_id", correlation_id),
                                         ("processed_by", event.processed_by)) if len(value) > ID_MAX]
    if too_long:
        return Rejected(UNSTORABLE, f"{too_long[0]} is longer than {ID_MAX} characters")
    if not _storable(request_id, event_id, correlation_id, event.processed_by):
        return Rejected(UNSTORABLE, "an id holds a NUL character, which PostgreSQL text cannot")
    occurred_at = _epoch(event.occurred_at)
    operation = codec.operation_label(event.operation)
    if isinstance(event, calc_pb2.CalculationCompleted):
        return Outcome(request_id, event_id, COMPLETED, operation, list(event.operands), event.result,
                       None, None, min(incoming.attempt, ATTEMPTS_MAX), correlation_id, event.processed_by,
                       occurred_at)
    detail = event.detail.replace("\x00", "\\x00")[:DETAIL_MAX]
    return Outcome(request_id, event_id, FAILED, operation, None, None, codec.reason_name(event.reason),
                   detail, min(event.attempts, ATTEMPTS_MAX), correlation_id, event.processed_by,
                   occurred_at)
