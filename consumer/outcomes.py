"""Publishing what an action says: results, failures, retry copies and the consumer's own dead
letters, each with its metrics and its log line, through an injected publisher."""

from __future__ import annotations

import logging
import time
from typing import Protocol

from aiormq.abc import DeliveredMessage

from consumer import metrics
from consumer.dedupe import Completed
from consumer.policy import Retry
from messaging import codec, topology, tracing
from messaging.errors import Transient, Unencodable
from messaging.logs import kv
from messaging.metrics import Labels
from messaging.verdict import Outcome

log = logging.getLogger("consumer.service")  # one logger for every line of the consumer


class Publishing(Protocol):
    """What the consumer needs of a publisher: `messaging.publisher.Publisher`, or a fake."""

    async def publish(self, exchange: str, message: codec.Outgoing, routing_key: str) -> None: ...

    async def close(self) -> None: ...


class Outcomes:
    """The events of one consumer: each method returns once the broker confirmed, or raises."""

    def __init__(self, publisher: Publishing, instance_id: str, completed: Completed,
                 traced: bool = False) -> None:
        self.publisher = publisher
        self.instance_id = instance_id
        self.completed = completed
        self.traced = traced  # the verdict goes on the delivery's span too
        self._processed = Labels(metrics.PROCESSED)
        self._failures = Labels(metrics.FAILURES)

    async def complete(self, outcome: Outcome, attempt: int) -> None:
        """Publish the CalculationCompleted; the request is then remembered as done here."""
        request = outcome.request
        assert request is not None
        msg, event = codec.completed_message(request, outcome.result, outcome.correlation_id,
                                             self.instance_id, attempt)
        await self.publisher.publish(topology.RESULTS_EXCHANGE, msg, topology.completed_key(outcome.word))
        self.completed.add(request.event_id)
        operation = outcome.operation_label
        if self.traced:
            tracing.verdict("completed", attempt)
        self._processed(operation, "completed").inc()
        metrics.AGE.observe(max(0.0, time.time() - request.occurred_at.seconds
                                - request.occurred_at.nanos / 1e9))
        if log.isEnabledFor(logging.INFO):
            log.info("completed", extra=kv(
                event_id=request.event_id, correlation_id=outcome.correlation_id,
                operation=operation, operands=list(request.operands),
                result=outcome.result, attempt=attempt, result_event_id=event.event_id))

    def duplicate(self, outcome: Outcome) -> None:
        """A request completed here before: nothing to publish, only to say so."""
        log.info("duplicate", extra=kv(event_id=outcome.event_id, correlation_id=outcome.correlation_id,
                                       operation=outcome.operation_label))
        self._processed(outcome.operation_label, "duplicate").inc()
        if self.traced:
            tracing.verdict("duplicate")

    async def fail(self, outcome: Outcome, attempts: int) -> None:
        """Publish the CalculationFailed of `outcome` (its reason and detail)."""
        msg, event = codec.failed_message(outcome.event_id, outcome.operation, outcome.reason, outcome.detail,
                                          attempts, outcome.correlation_id, self.instance_id)
        await self.publisher.publish(topology.RESULTS_EXCHANGE, msg, topology.failed_key(outcome.word))
        name = codec.reason_name(outcome.reason)
        if self.traced:
            tracing.verdict("failed", attempts, name, outcome.detail)
        self._processed(outcome.operation_label or "undecodable", "failed").inc()
        self._failures(name).inc()
        log.warning("failed", extra=kv(
            event_id=outcome.event_id, correlation_id=outcome.correlation_id,
            operation=outcome.operation_label, operands=outcome.operands, reason=name,
            detail=outcome.detail, attempts=attempts, failure_event_id=event.event_id))

    async def retry(self, message: DeliveredMessage, incoming: codec.Incoming, outcome: Outcome,
                    retry: Retry) -> None:
        """Publish the delivery again to its retry tier, as the next attempt, to expire after the delay."""
        attempt = retry.tier
        copy = codec.copy_message(message.body, message.header.properties, attempt + 1,
                                  expiration=retry.delay)
        await self.publisher.publish(topology.retry_exchange(attempt), copy, incoming.routing_key)
        metrics.RETRIES.inc()
        if self.traced:
            tracing.verdict("retry", attempt, error=f"transient: {retry.error}")
        log.warning("retry scheduled", extra=kv(
            event_id=outcome.event_id or incoming.message_id or "", correlation_id=outcome.correlation_id,
            attempt=attempt, next_attempt=attempt + 1, delay_s=retry.delay, error=retry.error))

    async def dead_letter(self, message: DeliveredMessage, forged: list[str]) -> bool:
        """Publish `message` to calc.dlx without its forged `x-` headers; True once confirmed.

        A client's x-death must never reach the broker's dead-letter worker, so such a message
        is dead-lettered by the consumer instead of rejected.
        """
        incoming = codec.incoming_of(message)
        key = incoming.routing_key if codec.fits_short_string(incoming.routing_key) else "undecodable"
        copy = codec.dead_letter_copy(message.body, message.header.properties, incoming.attempt, forged)
        try:
            try:
                await self.publisher.publish(topology.DEAD_LETTER_EXCHANGE, copy, key)
            except Unencodable as exc:  # another header cannot be sent again: keep the rest
                copy = codec.reduced_dead_letter_copy(message.body, message.header.properties,
                                                      incoming.attempt, forged, str(exc))
                await self.publisher.publish(topology.DEAD_LETTER_EXCHANGE, copy, key)
        except Transient as exc:
            log.error("could not dead-letter a message with forged broker headers; requeued", extra=kv(
                message_id=incoming.message_id, correlation_id=incoming.correlation_id,
                forged=",".join(forged), error=str(exc)))
            return False
        log.warning("dead-lettered by the consumer: forged broker headers removed", extra=kv(
            message_id=incoming.message_id, correlation_id=incoming.correlation_id, forged=",".join(forged)))
        return True
