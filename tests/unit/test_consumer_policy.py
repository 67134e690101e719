"""The consumer's rules as a table: every action, and what follows when carrying one out fails."""

from __future__ import annotations

from dataclasses import replace

import pytest

from calculator import Operation
from consumer.policy import (
    BUG,
    COMPLETE,
    DUPLICATE,
    INJECTED,
    REQUEUE,
    STOP,
    Action,
    Fail,
    GiveUp,
    Retry,
    Settle,
    decide,
    recover,
)
from gen import calc_pb2
from messaging import codec
from messaging.errors import (
    ConfigurationError,
    PublishFailed,
    TransientFault,
    Unencodable,
    UnroutableError,
)
from messaging.settings import Settings
from messaging.verdict import MALFORMED, RETRIES_EXHAUSTED, Outcome

SETTINGS = replace(Settings.from_env({"RABBITMQ_URL": "amqp://guest:guest@localhost/"}),
                   max_attempts=4, retry_base_delay=1.0, retry_max_delay=3.0)
REQUEST = codec.build_request(Operation.ADD, (1.0, 2.0), "test", event_id="e-1")
OK = Outcome(REQUEST, "c-1", "add", result=3.0)
BAD = Outcome(REQUEST, "c-1", "add", reason=calc_pb2.FAILURE_REASON_DIVISION_BY_ZERO,
              detail="division by zero")


def _gave_up(reason: int, detail: str, outcome: Outcome = OK) -> GiveUp:
    return GiveUp(Outcome(outcome.request, outcome.correlation_id, outcome.word, reason=reason,
                          detail=detail))


@pytest.mark.parametrize(("outcome", "attempt", "seen", "fault", "stopping", "action"), [
    (OK, 1, False, False, False, COMPLETE),
    (OK, 1, True, False, False, DUPLICATE),
    (OK, 1, True, True, False, DUPLICATE),  # done here before: no fault asked, nothing published
    (BAD, 1, False, False, False, Fail(BAD)),
    (BAD, 1, True, True, False, Fail(BAD)),  # a failure is never a duplicate: done again
    (OK, 1, False, True, False, Retry(1, 1.0, INJECTED)),
    (OK, 2, False, True, False, Retry(2, 2.0, INJECTED)),
    (OK, 3, False, True, False, Retry(3, 3.0, INJECTED)),  # the delay grows, up to the cap
    (OK, 4, False, True, False, _gave_up(RETRIES_EXHAUSTED, f"gave up after 4 attempts: {INJECTED}")),
    (OK, 9, False, True, False, _gave_up(RETRIES_EXHAUSTED, f"gave up after 9 attempts: {INJECTED}")),
    (OK, 1, False, True, True, REQUEUE),  # stopping for a refusal: back to the queue, uncounted
], ids=["complete", "duplicate", "duplicate-no-fault", "fail", "fail-again", "retry-tier-1",
        "retry-tier-2", "retry-capped", "give-up", "give-up-late", "stopping"])
def test_decide(outcome: Outcome, attempt: int, seen: bool, fault: bool, stopping: bool,
                action: Action) -> None:
    assert decide(outcome, attempt, seen, fault, SETTINGS, stopping) == action


RETRY = Retry(2, 2.0, "first failure")
EXHAUSTED = _gave_up(RETRIES_EXHAUSTED, "gave up after 2 attempts: x")
NACKED = PublishFailed("calc.results nacked 'calc.completed.add' (queue full?)")
TOO_BIG = Unencodable("cannot encode the message: header too long")
REFUSED = ConfigurationError("the broker refused publishing to 'calc.results'")


@pytest.mark.parametrize(("action", "error", "attempt", "stopping", "then"), [
    # a result or failure not confirmed: the message may be fine next time
    (COMPLETE, NACKED, 1, False, Retry(1, 1.0, str(NACKED))),
    (COMPLETE, UnroutableError("no queue"), 1, False, Retry(1, 1.0, "no queue")),
    (COMPLETE, TransientFault("flaky"), 4, False,
     _gave_up(RETRIES_EXHAUSTED, "gave up after 4 attempts: flaky")),
    (Fail(BAD), NACKED, 2, False, Retry(2, 2.0, str(NACKED))),
    (Fail(BAD), NACKED, 4, False,
     _gave_up(RETRIES_EXHAUSTED, f"gave up after 4 attempts: {NACKED}", BAD)),
    (COMPLETE, NACKED, 1, True, REQUEUE),
    # cannot be put on the wire
    (COMPLETE, TOO_BIG, 1, False, Fail(Outcome(REQUEST, "c-1", "add", reason=MALFORMED,
                                               detail=f"the result cannot be encoded: {TOO_BIG}"))),
    (Fail(BAD), TOO_BIG, 1, False,
     Settle("reject", "failure event cannot be encoded; dead-lettered without one")),
    (RETRY, TOO_BIG, 2, False, _gave_up(MALFORMED, f"cannot be retried ({TOO_BIG}) after: first failure")),
    (EXHAUSTED, TOO_BIG, 2, False, Settle("reject-requeue", "could not encode the failure; requeued")),
    # a retry or a give-up not confirmed: back to the queue, uncounted; the delivery limit is the backstop
    (RETRY, NACKED, 2, False, Settle("nack-requeue", "could not schedule retry; requeued")),
    (EXHAUSTED, NACKED, 2, False, Settle("nack-requeue", "could not schedule retry; requeued")),
    # an operator must fix it: requeued uncounted, and the service stops
    (COMPLETE, REFUSED, 1, False, STOP),
    (Fail(BAD), REFUSED, 1, False, STOP),
    (RETRY, REFUSED, 2, False, STOP),
    (EXHAUSTED, REFUSED, 2, False, STOP),
    (None, REFUSED, 1, False, STOP),
    # a bug: requeued, counted towards the delivery limit
    (COMPLETE, RuntimeError("bug"), 1, False, BUG),
    (RETRY, KeyError("bug"), 2, False, BUG),
    (None, ValueError("bug"), 1, False, BUG),
    (None, NACKED, 1, False, BUG),  # a transient error outside any action is ours
], ids=lambda value: type(value).__name__ if isinstance(value, Exception) else None)
def test_recover(action: Action | None, error: Exception, attempt: int, stopping: bool, then: Action) -> None:
    assert recover(action, error, OK, attempt, SETTINGS, stopping) == then


def test_the_settle_kinds_name_their_frames() -> None:
    assert STOP == Settle("nack-requeue", stop=True), "a refusal is not the message's fault: uncounted"
    assert BUG.how == "reject-requeue" and not BUG.stop, "a bug counts towards the delivery limit"
    assert REQUEUE == Settle("nack-requeue")
