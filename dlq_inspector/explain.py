"""Why a message is in the DLQ: the reason re-derived with the consumer's own checks, or from `x-death`."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from calculator import Operation
from dlq_inspector.letters import DeadLetter, Death
from gen import calc_pb2
from messaging import codec, enums
from messaging.errors import DecodeError
from messaging.topology import RETRY_PREFIX
from messaging.verdict import evaluate

RETRIES_EXHAUSTED = enums.reason_name(calc_pb2.FAILURE_REASON_RETRIES_EXHAUSTED)
MALFORMED = enums.reason_name(calc_pb2.FAILURE_REASON_MALFORMED_MESSAGE)

# Deaths decided by the broker, not by a consumer's verdict: the x-death reason names them.
BROKER_REASONS = {"expired": "EXPIRED", "maxlen": "MAXLEN", "delivery_limit": "DELIVERY_LIMIT"}
_BROKER_DETAIL = {
    "expired": "expired (message or queue TTL) in {queue}",
    "maxlen": "dropped from the head of {queue} at its length limit",
    "delivery_limit": "redelivered past the delivery limit of {queue} (the consumer kept crashing on it?)",
}

FAILURE_REASONS = tuple(
    enums.reason_name(value) for value in calc_pb2.FailureReason.values()
    if value != calc_pb2.FAILURE_REASON_UNSPECIFIED
)
REASONS = FAILURE_REASONS + tuple(BROKER_REASONS.values())
"""Every reason the inspector reports, in a stable order: the contract's, then the broker's."""

UNDECODABLE = "undecodable"
UNKNOWN_OPERATION = "unknown"
OPERATION_CHOICES = (*(op.word for op in Operation), UNKNOWN_OPERATION, UNDECODABLE)
"""What `--operation` accepts: a word, `unknown` (decoded, not an operation we know), `undecodable`."""


def parse_reason(text: str) -> str:
    """`division_by_zero`, `FAILURE_REASON_DIVISION_BY_ZERO` or `delivery-limit` -> the reason name."""
    key = text.strip().upper().replace("-", "_").removeprefix("FAILURE_REASON_")
    if key in REASONS:
        return key
    raise ValueError(f"unknown reason {text!r}; expected one of {', '.join(REASONS)}")


@dataclass(frozen=True)
class Explanation:
    """A dead letter with its reason, and the request it carries when the body decodes."""

    letter: DeadLetter
    event_id: str
    correlation_id: str
    operation: str
    """The operation word, a label like `OPERATION_UNSPECIFIED`, or `undecodable`."""
    operands: tuple[float, ...]
    reason: str
    detail: str
    attempts: int
    original_routing_key: str
    died_in: str
    """The queue that dead-lettered it (last death), e.g. `calc.work.basic`."""
    first_death: datetime | None
    last_death: datetime | None
    deaths: tuple[Death, ...]
    request: codec.Requested | None

    @property
    def operation_group(self) -> str:
        """The word for a known operation, else `unknown` or `undecodable` (what filters match)."""
        if self.request is None:
            return UNDECODABLE
        return self.operation if self.operation in OPERATION_CHOICES else UNKNOWN_OPERATION

    def summary(self) -> dict[str, Any]:
        """The row `list` shows and the machine-readable part of an export line."""
        return {
            "event_id": self.event_id,
            "correlation_id": self.correlation_id,
            "operation": self.operation,
            "operands": list(self.operands),
            "reason": self.reason,
            "detail": self.detail,
            "attempts": self.attempts,
            "original_routing_key": self.original_routing_key,
            "died_in": self.died_in,
            "first_death": self.first_death.isoformat() if self.first_death else None,
            "died_at": self.last_death.isoformat() if self.last_death else None,
        }


def _decoded(body: bytes) -> codec.Requested | None:
    try:
        return codec.decode_request(body)
    except DecodeError:
        return None


def _as_delivered(letter: DeadLetter, last: Death | None) -> codec.Incoming:
    """The delivery the consumer evaluated: the letter with the routing key of its `last` death."""
    return codec.Incoming(
        body=letter.body,
        routing_key=last.routing_keys[0] if last and last.routing_keys else letter.routing_key,
        content_type=letter.text("content_type"),
        type=letter.text("type"),
        message_id=letter.text("message_id"),
        correlation_id=letter.text("correlation_id"),
        headers=letter.client_headers,
        undecodable=letter.undecodable,
    )


def explain(letter: DeadLetter, max_bytes: int, max_attempts: int) -> Explanation:
    """Re-derive why `letter` died.

    A consumer rejection (`rejected`, or no `x-death` at all) gets the verdict of the consumer's
    own `evaluate` (same checks, same order), so the reason is the one its CalculationFailed
    carried. A request that evaluates fine can only have been rejected after its last transient
    failure: RETRIES_EXHAUSTED, with the `attempt` header as the attempt count. A request with a
    permanent verdict that came back from a `calc.retry.*` queue (its failure event could not be
    published) and reached `max_attempts` was given up on the same way: RETRIES_EXHAUSTED too
    (the consumer's CALC_MAX_ATTEMPTS must be the inspector's for that case). `expired`, `maxlen`
    and `delivery_limit` deaths are named after the broker's reason.
    """
    deaths = letter.deaths
    last = deaths[0] if deaths else None
    first = deaths[-1] if deaths else None
    original_key = first.routing_keys[0] if first and first.routing_keys else letter.routing_key
    incoming = _as_delivered(letter, last)
    outcome = evaluate(incoming, max_bytes)
    verdict = enums.reason_name(outcome.reason) if not outcome.ok else ""
    attempts = incoming.attempt
    death = last.reason if last else "rejected"
    if death in BROKER_REASONS:
        reason = BROKER_REASONS[death]
        said = "would complete" if outcome.ok else f"would fail with {verdict}: {outcome.detail}"
        detail = _BROKER_DETAIL[death].format(queue=last.queue if last else "?") + f"; the request {said}"
    elif death != "rejected":
        reason = death.upper()
        detail = f"dead-lettered by {last.queue if last else '?'} for reason {death!r}"
    elif outcome.ok:
        reason = RETRIES_EXHAUSTED
        detail = (f"gave up after {attempts} attempt{'s' if attempts != 1 else ''} of transient "
                  f"failures; the request itself computes to {outcome.result!r}")
    elif attempts >= max_attempts and any(
            d.reason == "expired" and d.queue.startswith(RETRY_PREFIX) for d in deaths):
        reason = RETRIES_EXHAUSTED
        detail = (f"gave up after {attempts} attempts (its failure could not be published); "
                  f"the request itself fails with {verdict}: {outcome.detail}")
    else:
        reason, detail = verdict, outcome.detail
    request = outcome.request if outcome.request is not None else _decoded(letter.body)
    event_id = (request.event_id if request is not None else "") or letter.text("message_id") or ""
    times = [d.time for d in deaths if d.time is not None]
    return Explanation(
        letter=letter,
        event_id=event_id,
        correlation_id=letter.text("correlation_id") or event_id,
        operation=enums.operation_label(int(request.operation)) if request is not None else UNDECODABLE,
        operands=tuple(request.operands) if request is not None else (),
        reason=reason,
        detail=detail,
        attempts=attempts,
        original_routing_key=original_key,
        died_in=last.queue if last else "",
        first_death=min(times) if times else None,
        last_death=last.time if last and last.time else (max(times) if times else None),
        deaths=deaths,
        request=request,
    )
