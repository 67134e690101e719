"""The consumer's rules as pure functions: what a delivery comes to, and what to do when that fails.

`decide` turns the facts about one delivery into an action; `recover` says what follows when
carrying an action out raises. No I/O here, so every rule is a row of a table test
(tests/unit/test_consumer_policy.py); the service only gathers the facts and carries out the
answer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from messaging import topology
from messaging.errors import ConfigurationError, Transient, Unencodable
from messaging.settings import Settings
from messaging.verdict import Outcome, cannot_retry, result_unencodable, retries_exhausted

Settlement = Literal["ack", "reject", "reject-requeue", "nack-requeue"]
"""The frame that settles a delivery: basic.ack; basic.reject (to the DLQ); basic.reject with
requeue, which counts towards the quorum queue's delivery limit (a failed delivery); basic.nack
with requeue, which does not (not the message's fault: the broker did not confirm)."""

INJECTED = "injected transient fault (CALC_FAULT_RATE)"


class Complete:
    """Publish the result; ack once it is confirmed."""

    __slots__ = ()


class Duplicate:
    """This process completed the request before: ack, publish nothing."""

    __slots__ = ()


COMPLETE = Complete()
DUPLICATE = Duplicate()


@dataclass(frozen=True, slots=True)
class Fail:
    """Publish `outcome`'s CalculationFailed; reject to the DLQ once it is confirmed."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Retry:
    """Publish a copy to `calc.retry.<tier>` that expires after `delay` s; ack once confirmed."""

    tier: int
    delay: float
    error: str  # the transient failure this retry is for


@dataclass(frozen=True, slots=True)
class GiveUp:
    """Publish the failure of a request no longer retried (`outcome`); reject once confirmed."""

    outcome: Outcome


@dataclass(frozen=True, slots=True)
class Settle:
    """Publish nothing; settle the delivery with `how`, log `why` (if any), stop if `stop`."""

    how: Settlement
    why: str = ""
    stop: bool = False


Action = Complete | Duplicate | Fail | Retry | GiveUp | Settle

REQUEUE = Settle("nack-requeue")
"""Stopping for a refusal: whatever else fails meanwhile goes back, uncounted."""
STOP = Settle("nack-requeue", stop=True)
"""An operator must fix the configuration: no message is at fault, so hand it back uncounted."""
BUG = Settle("reject-requeue", "unexpected error; message requeued")
"""A bug, not a verdict: requeued, counted, so the delivery limit ends a message that keeps hitting it."""


def decide(outcome: Outcome, attempt: int, seen: bool, fault: bool, settings: Settings,
           stopping: bool) -> Action:
    """The action for a delivery: its verdict, whether this process completed it before
    (`seen`), whether a transient fault is injected, and whether the service is stopping."""
    if not outcome.ok:
        return Fail(outcome)
    if seen:
        return DUPLICATE
    if fault:
        return after_transient(outcome, attempt, INJECTED, settings, stopping)
    return COMPLETE


def after_transient(outcome: Outcome, attempt: int, error: str, settings: Settings,
                    stopping: bool) -> Action:
    """Attempt `attempt` failed transiently: retry after a delay growing with the tier, or give up
    with RETRIES_EXHAUSTED after the last one."""
    if stopping:
        return REQUEUE
    if attempt >= settings.max_attempts:
        return GiveUp(retries_exhausted(outcome, attempt, error))
    return Retry(attempt, topology.retry_delay(settings, attempt), error)


def recover(action: Action | None, error: Exception, outcome: Outcome, attempt: int,
            settings: Settings, stopping: bool) -> Action:
    """What follows when carrying out `action` (None: before one was chosen) raised `error`."""
    if isinstance(error, ConfigurationError):
        return STOP
    if isinstance(action, Complete | Fail):
        if isinstance(error, Transient):  # not confirmed: the message may be fine next time
            failed = action.outcome if isinstance(action, Fail) else outcome
            return after_transient(failed, attempt, str(error), settings, stopping)
        if isinstance(error, Unencodable):
            if isinstance(action, Complete):  # the result cannot be sent: the request's fault
                return Fail(result_unencodable(outcome, error))
            return Settle("reject", "failure event cannot be encoded; dead-lettered without one")
    if isinstance(action, Retry | GiveUp):
        if isinstance(error, Transient):  # neither a retry nor a failure confirmed: the delivery
            return Settle("nack-requeue", "could not schedule retry; requeued")  # limit is the backstop
        if isinstance(error, Unencodable):
            if isinstance(action, Retry):  # the request cannot be sent again: it cannot be retried
                return GiveUp(cannot_retry(outcome, error, action.error))
            return Settle("reject-requeue", "could not encode the failure; requeued")  # our bug: counted
    return BUG
