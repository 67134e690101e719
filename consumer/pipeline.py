"""One delivery from its verdict to its settlement: gather the facts, ask the policy, carry it out.

The per-delivery path: `on_message` takes aiormq's DeliveredMessage as the transport hands it
over and adds no task, no await and no object of its own to what today's work needs.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Callable, Coroutine
from typing import Any

from aiormq.abc import DeliveredMessage

from calculator import Operation
from consumer import metrics
from consumer.acks import AckLedger
from consumer.dedupe import Completed
from consumer.outcomes import Outcomes
from consumer.policy import (
    COMPLETE,
    DUPLICATE,
    Action,
    Fail,
    GiveUp,
    Retry,
    Settle,
    Settlement,
    decide,
    recover,
)
from messaging import codec, topology, tracing
from messaging.errors import CalcEventsError, ConfigurationError
from messaging.logs import kv
from messaging.settings import Settings
from messaging.verdict import Outcome, evaluate

log = logging.getLogger("consumer.service")  # one logger for every line of the consumer

Fault = Callable[[Outcome, int], bool]
"""(outcome, attempt) -> inject a transient fault into this attempt? Asked only of a request that
would complete. Tests pass a deterministic one; by default it follows CALC_FAULT_RATE."""
OnRequest = Callable[[Outcome], None]
"""Called with every verdict before anything is published (the test crash hook of `__main__`)."""


def no_fault(outcome: Outcome, attempt: int) -> bool:
    return False


def random_fault(rate: float, rng: random.Random | None = None) -> Fault:
    """A fault in `rate` of the attempts (CALC_FAULT_RATE)."""
    if not rate:
        return no_fault
    draw = (rng or random.Random()).random
    return lambda outcome, attempt: draw() < rate


class Pipeline:
    """Verdict, policy, outcomes and ledger for every delivery; counts what is in flight."""

    def __init__(self, settings: Settings, outcomes: Outcomes, ledger: AckLedger, completed: Completed,
                 fault: Fault, on_request: OnRequest | None = None,
                 failed: asyncio.Event | None = None, traces: tracing.Tracing | None = None) -> None:
        self.settings = settings
        self.outcomes = outcomes
        self.ledger = ledger
        self.completed = completed
        self.fault = fault
        self.on_request = on_request
        self.in_flight = 0
        self.idle = asyncio.Event()  # set while nothing is in flight
        self.idle.set()
        self.failure: ConfigurationError | None = None
        """The permanent failure (a refused publish) that stopped the work, if any."""
        self.failed = failed or asyncio.Event()  # set with `failure`: the service must stop
        self.traces = traces
        self._queue_names: dict[str, str] = {}

    @property
    def handler(self) -> Callable[[DeliveredMessage], Coroutine[Any, Any, None]]:
        """What the transport hands deliveries to: `on_message`, in a span when tracing is on."""
        return self.on_message if self.traces is None else self.on_traced_message

    async def on_traced_message(self, message: DeliveredMessage) -> None:
        """`on_message` in a CONSUMER span that continues the trace the delivery carries."""
        assert self.traces is not None
        key = message.routing_key or ""
        properties = message.header.properties
        with self.traces.processing(self._queue_of(key), message.exchange or "", key, properties.headers,
                                    message_id=properties.message_id or "",
                                    correlation_id=properties.correlation_id or "",
                                    delivery_tag=message.delivery_tag):
            await self.on_message(message)

    def _queue_of(self, routing_key: str) -> str:
        """The work queue a delivery came from, by its routing key (the span's name)."""
        name = self._queue_names.get(routing_key)
        if name is None:
            word = topology.word_of_requested_key(routing_key)
            try:
                kind = topology.work_queue_kind(Operation(word))
            except ValueError:  # a key no binding routes: only one queue can have it
                kind = self.settings.queues[0] if len(self.settings.queues) == 1 else "unknown"
            name = topology.work_queue(kind)
            if len(self._queue_names) < 64:
                self._queue_names[routing_key] = name
        return name

    async def on_message(self, message: DeliveredMessage) -> None:
        self.in_flight += 1
        self.idle.clear()
        metrics.IN_FLIGHT.inc()
        started = time.monotonic()
        incoming = codec.incoming_of(message)
        try:
            await self._handle(message, incoming)
        except Exception as exc:  # raised past the rules of `_carry_out`: a refusal, or a bug
            action = recover(None, exc, _UNKNOWN, incoming.attempt, self.settings, self.failure is not None)
            assert isinstance(action, Settle)
            if action.stop and isinstance(exc, ConfigurationError):
                self._stop_for(exc, incoming)
            else:
                log.exception(action.why, extra=kv(message_id=incoming.message_id,
                                                   correlation_id=incoming.correlation_id))
            await self.ledger.send(message, action.how)
        finally:
            metrics.DURATION.observe(time.monotonic() - started)
            metrics.IN_FLIGHT.dec()
            self.in_flight -= 1
            ledger = self.ledger
            if self.in_flight == 0 or ledger.due:
                await ledger.flush()
            if self.in_flight == 0:
                self.idle.set()

    async def _handle(self, message: DeliveredMessage, incoming: codec.Incoming) -> None:
        outcome = evaluate(incoming, self.settings.max_message_bytes)
        if self.on_request is not None:
            self.on_request(outcome)
        attempt = incoming.attempt
        seen = outcome.ok and outcome.event_id in self.completed
        action = decide(outcome, attempt, seen, outcome.ok and not seen and self.fault(outcome, attempt),
                        self.settings, self.failure is not None)
        if action is COMPLETE:  # nearly every delivery: straight through
            try:
                await self.outcomes.complete(outcome, attempt)
            except CalcEventsError as exc:
                action = recover(action, exc, outcome, attempt, self.settings, self.failure is not None)
                await self._carry_out(message, incoming, outcome, action, exc)
            else:
                self.ledger.ack(message)
            return
        await self._carry_out(message, incoming, outcome, action)

    async def _carry_out(self, message: DeliveredMessage, incoming: codec.Incoming, outcome: Outcome,
                         action: Action, error: CalcEventsError | None = None) -> None:
        """Publish what `action` says and settle; what it raises, the policy turns into the next action."""
        attempt = incoming.attempt
        while not isinstance(action, Settle):
            try:
                if action is COMPLETE:
                    await self.outcomes.complete(outcome, attempt)
                    how: Settlement = "ack"
                elif action is DUPLICATE:
                    self.outcomes.duplicate(outcome)
                    how = "ack"
                elif isinstance(action, Fail | GiveUp):
                    await self.outcomes.fail(action.outcome, attempt)
                    how = "reject"
                else:
                    assert isinstance(action, Retry)
                    await self.outcomes.retry(message, incoming, outcome, action)
                    how = "ack"
                await self._settle(message, how)
                return
            except CalcEventsError as exc:
                error = exc
                action = recover(action, exc, outcome, attempt, self.settings, self.failure is not None)
        if action.why:
            log.error(action.why, extra=kv(event_id=outcome.event_id or incoming.message_id or "",
                                           correlation_id=outcome.correlation_id,
                                           error=str(error)))
        if action.stop and isinstance(error, ConfigurationError):
            self._stop_for(error, incoming)
        await self._settle(message, action.how)

    async def _settle(self, message: DeliveredMessage, how: Settlement) -> None:
        """Once the outcome is confirmed: an ack waits for the next batch, the rest go out now."""
        if how == "ack":
            self.ledger.ack(message)
            return
        if self.traces is not None:
            tracing.settled(how, topology.DEAD_LETTER_EXCHANGE)
        if how == "reject":
            forged = codec.forged_headers(message.header.properties.headers or {})
            if forged:  # a client's x-death: never hand it to the broker's dead-letter worker
                if await self.outcomes.dead_letter(message, forged):
                    self.ledger.ack(message)
                    return
                how = "nack-requeue"
        await self.ledger.send(message, how)

    def _stop_for(self, exc: ConfigurationError, incoming: codec.Incoming) -> None:
        """An operator has to fix this (a permission, the topology): stop the service."""
        if self.failure is None:
            log.error("permanent failure; stopping", extra=kv(
                error=str(exc), message_id=incoming.message_id, correlation_id=incoming.correlation_id))
            self.failure = exc
            self.failed.set()


_UNKNOWN = Outcome(None, "", "unknown")  # the verdict, where an error came before or around it
