"""Which reason a message gets: the verdict on a delivered request, and on one given up on.

The consumer publishes these verdicts and the DLQ inspector re-derives them from a dead letter,
so both read this one module; nothing else assigns a FailureReason.
"""

from __future__ import annotations

from dataclasses import dataclass

from calculator import CalculationError, compute
from gen import calc_pb2
from messaging import codec, frames
from messaging.errors import DecodeError
from messaging.topology import word_of_requested_key

MALFORMED = calc_pb2.FAILURE_REASON_MALFORMED_MESSAGE
RETRIES_EXHAUSTED = calc_pb2.FAILURE_REASON_RETRIES_EXHAUSTED


@dataclass(frozen=True)
class Outcome:
    """The verdict on one request; `reason` is 0 when it completed with `result`."""

    request: codec.Requested | None
    correlation_id: str
    word: str
    result: float = 0.0
    reason: int = 0
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.reason == 0

    @property
    def event_id(self) -> str:
        return self.request.event_id if self.request is not None else ""

    @property
    def operation(self) -> int:
        return int(self.request.operation) if self.request is not None else 0

    @property
    def operation_label(self) -> str:
        return codec.operation_label(self.operation) if self.request is not None else ""

    @property
    def operands(self) -> list[float]:
        return list(self.request.operands) if self.request is not None else []


def failure_word(routing_key: str, request: codec.Requested | None) -> str:
    """The `<word>` of `calc.failed.<word>`: the arrival key's word, else the body's, else unknown."""
    word = word_of_requested_key(routing_key)
    if word is not None and codec.fits_short_string(word):  # not octets a decoder had to escape
        return word
    if request is not None:
        label = codec.operation_label(int(request.operation))
        if " " not in label and not label.startswith("OPERATION_"):
            return label
    return "unknown"


def _correlation_id(incoming: codec.Incoming, event_id: str) -> str:
    """The contract's correlation_id of the outcome, or "" where it cannot be carried in one
    (not UTF-8, or an event_id past the 255 bytes of a short string)."""
    for candidate in (incoming.correlation_id, event_id):
        if candidate:
            return candidate if codec.fits_short_string(candidate) else ""
    return ""


def evaluate(incoming: codec.Incoming, max_bytes: int) -> Outcome:
    """Check, decode and compute one request, in the order the contract gives its reasons."""
    word = failure_word(incoming.routing_key, None)
    if len(incoming.body) > max_bytes:
        return Outcome(None, _correlation_id(incoming, ""), word, reason=MALFORMED,
                       detail=f"body of {len(incoming.body)} bytes exceeds the limit of {max_bytes}")
    try:
        request = codec.decode_request(incoming.body)
    except DecodeError as exc:
        detail = str(exc)
        if incoming.undecodable:
            detail = f"undecodable AMQP header: {incoming.undecodable}; {detail}"
        return Outcome(None, _correlation_id(incoming, ""), word, reason=MALFORMED, detail=detail)
    correlation_id = _correlation_id(incoming, request.event_id)
    word = failure_word(incoming.routing_key, request)

    def failed(reason: int, detail: str) -> Outcome:
        return Outcome(request, correlation_id, word, reason=reason, detail=detail)

    if incoming.undecodable:
        return failed(MALFORMED, f"undecodable AMQP header: {incoming.undecodable}")
    try:
        codec.check_properties(incoming)
    except DecodeError as exc:
        return failed(MALFORMED, str(exc))
    if not request.event_id:
        return failed(MALFORMED, "request has no event_id")
    if not correlation_id:
        return failed(MALFORMED, f"correlation_id missing and the event_id of "
                                 f"{len(request.event_id.encode())} bytes cannot stand in for it "
                                 f"(an AMQP short string holds {codec.SHORT_STRING_MAX})")
    try:
        operation = codec.domain_operation(int(request.operation))
    except CalculationError as exc:
        return failed(codec.reason_of(exc), str(exc))
    if word_of_requested_key(incoming.routing_key) != operation.word:
        return failed(MALFORMED, f"routing key '{frames.printable(incoming.routing_key)}' does not match "
                                 f"operation {operation.word}")
    try:
        result = compute(operation, list(request.operands))
    except CalculationError as exc:
        return failed(codec.reason_of(exc), str(exc))
    return Outcome(request, correlation_id, word, result=result)


def result_unencodable(outcome: Outcome, error: Exception) -> Outcome:
    """The request computed, but its result cannot be put on the wire: the request's fault."""
    return Outcome(outcome.request, outcome.correlation_id, outcome.word, reason=MALFORMED,
                   detail=f"the result cannot be encoded: {error}")


def retries_exhausted(outcome: Outcome, attempts: int, error: str) -> Outcome:
    """The last of `attempts` failed transiently (`error`): given up on, whatever it computes to."""
    return Outcome(outcome.request, outcome.correlation_id, outcome.word, reason=RETRIES_EXHAUSTED,
                   detail=f"gave up after {attempts} attempts: {error}")


def cannot_retry(outcome: Outcome, error: Exception, after: str) -> Outcome:
    """The request failed transiently (`after`) and its copy for a retry cannot be encoded."""
    return Outcome(outcome.request, outcome.correlation_id, outcome.word, reason=MALFORMED,
                   detail=f"cannot be retried ({error}) after: {after}")
