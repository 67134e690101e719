"""The consumer service: deliveries in, results and failures out, ack only after a confirm."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import random
import time
from collections.abc import Callable
from typing import Any, Literal

import aiormq
from aio_pika.abc import AbstractChannel, AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic as spec_basic
from prometheus_client import Counter, Gauge, Histogram

from consumer.handler import MALFORMED, Outcome, evaluate, failure_word
from gen import calc_pb2
from messaging import codec, topology
from messaging.errors import ConfigurationError, Transient, TransientFault, Unencodable
from messaging.logs import kv
from messaging.metrics import labelled
from messaging.publisher import confirmed_channel, publish
from messaging.settings import Settings

log = logging.getLogger(__name__)

RETRIES_EXHAUSTED = calc_pb2.FAILURE_REASON_RETRIES_EXHAUSTED

Settle = Literal["ack", "reject", "requeue", "requeue-failed"]
"""ack; reject to the DLQ; requeue, not the message's fault; requeue as a failed delivery."""

PROCESSED = Counter("calc_consumer_messages_total", "Requests handled, by operation and outcome",
                    ["operation", "outcome"])
FAILURES = Counter("calc_consumer_failures_total", "Requests dead-lettered, by reason", ["reason"])
RETRIES = Counter("calc_consumer_retries_total", "Transient failures scheduled for a delayed retry")
IN_FLIGHT = Gauge("calc_consumer_in_flight", "Deliveries being processed now")
DURATION = Histogram("calc_consumer_processing_seconds", "Time from delivery to ack or reject",
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
AGE = Histogram("calc_consumer_request_age_seconds",
                "Age of a request (its occurred_at) when its result was confirmed",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300))


DRAIN_TIMEOUT_S = 30.0
"""Shutdown: how long in-flight deliveries get to finish; what is left then goes back to the
queue. Compose and Kubernetes give the consumer more than this plus SETTLE_GRACE_S."""

SETTLE_GRACE_S = 0.5
"""Shutdown: how long the broker gets to apply the last acks before the channel closes (see
`let_acks_land`). Single acks of 300 quorum-queue deliveries, then a close, RabbitMQ 3.10:
on a loaded machine acks were lost in 11 of 60 runs with no wait, 4 with a round trip only,
none with a round trip and 0.2 s. With the queue's log held still (tests/chaos/
test_acks_before_close.py), 267 were lost every time with no wait (queue 0.3 s or 2 s behind);
with 0.5 s, none when 0.3 or 0.45 s behind, all 267 again when 1 s behind."""


async def let_acks_land(channel: aiormq.abc.AbstractChannel, prefetch: int,
                        grace: float = SETTLE_GRACE_S) -> None:
    """Give the broker time to apply the acks sent on `channel` before it closes.

    A quorum queue's channel holds settlements back while the queue is behind (more than 32
    commands not yet applied), and a channel that closes drops what it holds: the queue then
    hands those deliveries out again, done once already (rabbitmq-server#10327, open).
    Nothing in AMQP confirms an ack, so: a round trip (the broker has read every ack before it
    answers; `prefetch` is the channel's own, so nothing changes), then `grace` seconds for the
    held ones to go out.
    """
    if channel.is_closed:
        return
    try:
        await channel.basic_qos(prefetch_count=prefetch)
    except Exception as exc:  # the channel is gone: the broker has taken its deliveries back
        log.warning("could not reach the broker after the last acks", extra=kv(error=repr(exc)))
        return
    await asyncio.sleep(grace)


class _Completed:
    """Bounded memory of event_ids completed by this process, for duplicate redeliveries.

    Two generations of sets: the newest `capacity / 2` ids at least, `capacity` at most. When
    the current one is full it becomes the previous one and the oldest generation is dropped
    whole: O(1) per id, no per-entry bookkeeping, and memory that stops growing once the first
    generations have filled (an ordered dict evicting one id at a time kept resizing).
    """

    def __init__(self, capacity: int = 100_000) -> None:
        self._generation = max(1, capacity // 2)
        self._current: set[str] = set()
        self._previous: set[str] = set()

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._current or event_id in self._previous

    def add(self, event_id: str) -> None:
        self._current.add(event_id)
        if len(self._current) >= self._generation:
            self._previous, self._current = self._current, set()


class _Acks:
    """Batched acks for one channel that never cover a delivery whose outcome is unconfirmed.

    A `multiple=True` ack settles every unacked tag up to it, so it may only name a tag below
    which every delivery of the channel already has a confirmed outcome: the *frontier*. Rejects
    and requeues go out on their own at once (so no later multiple ack covers them) and only
    then count as settled here. A delivery stuck below a full batch of finished ones (a slow
    confirm) does not stall the rest: those are acked one by one instead.
    """

    def __init__(self, channel: object, batch: int) -> None:
        self.channel = channel  # the aiormq channel whose delivery tags these are
        self.batch = batch
        self._frontier = 0  # every tag <= this is settled or waiting to be acked
        self._waiting: dict[int, bool] = {}  # above the frontier; True: to ack, False: settled
        self._last: int | None = None  # highest tag <= frontier waiting for an ack
        self._count = 0  # deliveries <= frontier waiting for an ack
        self._stuck = 0  # deliveries above the frontier waiting for an ack

    def ready(self, tag: int) -> None:
        """The outcome of delivery `tag` is confirmed: ack it with the next batch."""
        self._add(tag, True)

    def settled(self, tag: int | None) -> None:
        """The delivery was rejected or requeued on its own; the frontier may pass it."""
        self._add(tag, False)

    def _add(self, tag: int | None, to_ack: bool) -> None:
        if tag is None or tag <= self._frontier or tag in self._waiting:
            return  # settled already: nothing may cover a tag twice
        self._waiting[tag] = to_ack
        if to_ack:
            self._stuck += 1
        while self._frontier + 1 in self._waiting:
            self._frontier += 1
            if self._waiting.pop(self._frontier):
                self._stuck -= 1
                self._last = self._frontier
                self._count += 1

    @property
    def frontier(self) -> int:
        return self._frontier

    @property
    def due(self) -> bool:
        return self._count >= self.batch or self._stuck >= self.batch

    def take(self, everything: bool = False) -> tuple[int | None, int, list[int]]:
        """What to send now: a multiple ack (tag, count covered) and single acks past a gap.

        `everything`: the single acks past a gap too, however few (the last flush before the
        channel closes: whatever is not acked then goes back to the queue and is done again).
        """
        last, count = self._last, self._count
        self._last, self._count = None, 0
        singles: list[int] = []
        if everything or self._stuck >= self.batch:
            for tag, to_ack in self._waiting.items():
                if to_ack:
                    singles.append(tag)
                    self._waiting[tag] = False  # acked alone: the frontier passes it later
            self._stuck = 0
        return last, count, singles


class ConsumerService:
    """Consumes the configured work queues until `stop()`; see the contract's failure rules.

    The connection, channels, topology and reconnects are aio-pika's; deliveries are taken from
    the consume channel's aiormq channel as they arrive (no aio-pika message object and no
    second task per delivery: a quarter of the CPU per message), and the subscription is made
    again whenever aio-pika reopens that channel.
    """

    def __init__(self, settings: Settings, connection: AbstractRobustConnection) -> None:
        self.settings = settings
        self.connection = connection
        self._completed = _Completed()
        self._in_flight = 0
        self._settled = 0
        self._acks: _Acks | None = None
        self._ack_lock = asyncio.Lock()  # acks leave in the order they were taken
        # Acks go out with multiple=True once per batch (or when idle): one frame and one broker
        # settlement instead of one per message. Below the prefetch, or deliveries would stall.
        self._ack_batch = max(1, min(100, settings.prefetch // 4))
        self._idle = asyncio.Event()
        self._idle.set()
        self._consume_channel: AbstractRobustChannel | None = None
        self._publish_channel: AbstractChannel | None = None
        self._queues = tuple(topology.work_queue(kind) for kind in settings.queues)
        self._subscriptions: list[tuple[aiormq.abc.AbstractChannel, str]] = []
        self._resubscribing: asyncio.Task[None] | None = None
        self._stopping = False
        self.failure: ConfigurationError | None = None
        """The permanent failure (a refused publish) that stopped the work, if any."""
        self.failed = asyncio.Event()  # set with `failure`: the service must stop
        self.settle_grace = SETTLE_GRACE_S  # at stop, after the last acks: see let_acks_land
        self._random = random.Random()
        # The fault-injection seam: (outcome, attempt) -> inject a transient fault? Tests pass
        # a deterministic one; by default it follows CALC_FAULT_RATE.
        self.inject_fault: Callable[[Outcome, int], bool] = self._random_fault

    async def start(self) -> None:
        self._publish_channel = await confirmed_channel(self.connection)
        await topology.declare(self._publish_channel, self.settings)
        channel = await self.connection.channel()
        assert isinstance(channel, AbstractRobustChannel), "connect(robust=True) for the consumer"
        self._consume_channel = channel
        await channel.set_qos(prefetch_count=self.settings.prefetch)
        await self._check_queues()  # ChannelNotFoundEntity (a configuration error) if one is missing
        for name in self._queues:
            await self._redeliveries_one_by_one(name)
        channel.reopen_callbacks.add(self._on_reopen)
        if self.failure is None:  # a refusal in the pass above: the service is stopping
            await self._subscribe()

    async def _check_queues(self) -> None:
        """Passively declare the work queues on a throwaway channel.

        Not on the consume channel: a missing queue closes the channel it is asked on, and not
        as aio-pika queues: the robust channel would declare them again on every reopen and,
        with one missing, stay closed. Passive needs no configure permission.
        """
        assert self._consume_channel is not None
        underlay = await self._consume_channel.get_underlay_channel()
        probe = await underlay.connection.channel(publisher_confirms=False)
        try:
            for name in self._queues:
                await probe.queue_declare(name, passive=True)
        finally:
            if not probe.is_closed:
                await probe.close()

    async def _subscribe(self) -> None:
        assert self._consume_channel is not None
        channel = await self._consume_channel.get_underlay_channel()
        channel.on_consumer_cancel_callbacks.add(self._on_cancel)
        self._subscriptions = []
        for name in self._queues:
            ok = await channel.basic_consume(name, self._on_message, no_ack=False)
            assert ok.consumer_tag is not None
            self._subscriptions.append((channel, ok.consumer_tag))
            log.info("consuming", extra=kv(queue=name, prefetch=self.settings.prefetch,
                                           instance=self.settings.instance_id))

    async def _on_reopen(self, _channel: object) -> None:
        """aio-pika reopened the consume channel (a reconnect, or a channel error): consume again."""
        if not self._stopping:
            self._resubscribe("channel reopened")

    def _on_cancel(self, frame: Any) -> None:
        """The broker cancelled a subscription (its queue was deleted or moved): consume again."""
        if not self._stopping and any(tag == frame.consumer_tag for _, tag in self._subscriptions):
            log.warning("subscription cancelled by the broker", extra=kv(consumer_tag=frame.consumer_tag))
            self._resubscribe("cancelled by the broker")

    def _resubscribe(self, why: str) -> None:
        if self._resubscribing is None or self._resubscribing.done():
            self._resubscribing = asyncio.create_task(self._resubscribe_until_done(why))

    async def _resubscribe_until_done(self, why: str) -> None:
        delay = 0.5
        while not self._stopping:
            try:
                await self._check_queues()  # a consume of a missing queue would close the channel
                for channel, tag in self._subscriptions:
                    if not channel.is_closed:  # the old subscription, if the broker kept it
                        with contextlib.suppress(Exception):
                            await channel.basic_cancel(tag)
                # the window of a lost connection came back: one by one again, as at start
                for name in self._queues:
                    await self._redeliveries_one_by_one(name)
                if self.failure is not None:
                    return
                await self._subscribe()
                log.info("consuming again", extra=kv(why=why))
                return
            except Exception as exc:
                log.warning("could not consume again; retrying", extra=kv(
                    why=why, error=repr(exc), retry_in_s=delay))
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)

    async def _redeliveries_one_by_one(self, queue: str) -> None:
        """Settle redelivered messages at the head of `queue` one at a time before consuming.

        When a consumer dies, every unacked message of its window returns and (on quorum
        queues) counts one delivery. If a poison message killed it, a restarted consumer that
        took the whole window again would die again and charge every neighbour, until the
        delivery limit dead-letters all of them. Taken singly, each crash charges only the
        message it died on, so the delivery limit isolates exactly the poison.
        """
        assert self._consume_channel is not None
        channel = await self._consume_channel.get_underlay_channel()
        while not self._stopping and self.failure is None:
            message = await channel.basic_get(queue, no_ack=False)
            if not isinstance(message.delivery, spec_basic.GetOk):
                return  # GetEmpty
            # shielded: a stop() that cancels this pass lets the message finish (its drain waits
            # for it) instead of leaving an outcome confirmed and its delivery unsettled
            await asyncio.shield(self._on_message(message))
            await self._flush_acks()
            if not message.delivery.redelivered:
                return

    async def stop(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Stop taking work, let in-flight messages finish, then close the channels."""
        self._stopping = True
        if self._resubscribing is not None:
            self._resubscribing.cancel()
        for channel, tag in self._subscriptions:
            try:
                await channel.basic_cancel(tag)
            except Exception as exc:  # a lost channel has no consumer left to cancel
                log.warning("cancel failed", extra=kv(error=repr(exc)))
        self._subscriptions.clear()
        try:
            await asyncio.wait_for(self._drained(), timeout)
        except TimeoutError:
            log.warning("in-flight messages left unacked at shutdown; the broker redelivers them",
                        extra=kv(in_flight=self._in_flight))
        await self._flush_acks(everything=True)
        if self._acks is not None:
            acked_on = self._acks.channel
            assert isinstance(acked_on, aiormq.abc.AbstractChannel)
            await let_acks_land(acked_on, self.settings.prefetch, self.settle_grace)
        for opened in (self._consume_channel, self._publish_channel):
            if opened is not None and not opened.is_closed:
                await opened.close()
        log.info("stopped", extra=kv(instance=self.settings.instance_id))

    async def _drained(self) -> None:
        """Until no delivery is in flight, including any handed over in the loop pass that
        finished the last one (its task has not started, so it is not counted yet)."""
        while True:
            await self._idle.wait()
            await asyncio.sleep(0)
            if self._in_flight == 0:
                return

    def _random_fault(self, outcome: Outcome, attempt: int) -> bool:
        rate = self.settings.fault_rate
        return bool(rate) and self._random.random() < rate

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def settled(self) -> int:
        """Deliveries acked, rejected or requeued since start."""
        return self._settled

    async def _on_message(self, message: DeliveredMessage) -> None:
        self._in_flight += 1
        self._idle.clear()
        IN_FLIGHT.inc()
        started = time.monotonic()
        incoming = codec.incoming_of(message)
        try:
            await self._handle(message, incoming)
        except ConfigurationError as exc:
            # An operator has to fix this (a permission, the topology): no message is at fault,
            # so hand it back uncounted and stop the service.
            await self._settle(message, "requeue")
            if self.failure is None:
                log.error("permanent failure; stopping", extra=kv(
                    error=str(exc), message_id=incoming.message_id,
                    correlation_id=incoming.correlation_id))
                self.failure = exc
                self.failed.set()
        except Exception:
            # A bug, not a verdict: requeue it; the delivery limit dead-letters a message that
            # keeps failing this way, so nothing loops forever.
            log.exception("unexpected error; message requeued", extra=kv(
                message_id=incoming.message_id, correlation_id=incoming.correlation_id))
            await self._settle(message, "requeue-failed")
        finally:
            DURATION.observe(time.monotonic() - started)
            IN_FLIGHT.dec()
            self._in_flight -= 1
            acks = self._acks
            if acks is not None and (self._in_flight == 0 or acks.due):
                await self._flush_acks()
            if self._in_flight == 0:
                self._idle.set()

    async def _handle(self, message: DeliveredMessage, incoming: codec.Incoming) -> None:
        outcome = evaluate(incoming, self.settings.max_message_bytes)
        crash = self.settings.test_crash_source
        if crash and outcome.request is not None and outcome.request.source == crash:
            log.critical("test crash hook: exiting without settling", extra=kv(
                event_id=outcome.event_id, correlation_id=outcome.correlation_id))
            os._exit(70)
        attempt = incoming.attempt
        if outcome.ok and outcome.event_id in self._completed:
            log.info("duplicate", extra=kv(event_id=outcome.event_id, correlation_id=outcome.correlation_id,
                                           operation=outcome.operation_label))
            labelled(PROCESSED, outcome.operation_label, "duplicate").inc()
            await self._settle(message, "ack")
            return
        try:
            if outcome.ok and self.inject_fault(outcome, attempt):
                raise TransientFault("injected transient fault (CALC_FAULT_RATE)")
            if outcome.ok:
                try:
                    await self._complete(outcome, attempt)
                except Unencodable as exc:  # the result cannot be sent: the request's fault
                    outcome = Outcome(outcome.request, outcome.correlation_id, outcome.word, reason=MALFORMED,
                                      detail=f"the result cannot be encoded: {exc}")
                    await self._fail(outcome, outcome.reason, outcome.detail, attempt)
                    await self._settle(message, "reject")
                    return
                await self._settle(message, "ack")
            else:
                await self._fail(outcome, outcome.reason, outcome.detail, attempt)
                await self._settle(message, "reject")
        except Transient as exc:
            await self._transient(message, incoming, outcome, attempt, str(exc))
        except Unencodable as exc:  # not even its failure can be put on the wire: the DLQ keeps it
            log.error("failure event cannot be encoded; dead-lettered without one", extra=kv(
                event_id=outcome.event_id, correlation_id=outcome.correlation_id, error=str(exc)))
            await self._settle(message, "reject")

    @property
    def _channel(self) -> AbstractChannel:
        assert self._publish_channel is not None, "start() first"
        return self._publish_channel

    async def _complete(self, outcome: Outcome, attempt: int) -> None:
        request = outcome.request
        assert request is not None
        msg, event = codec.completed_message(request, outcome.result, outcome.correlation_id,
                                             self.settings.instance_id, attempt)
        await publish(self._channel, topology.RESULTS_EXCHANGE, msg,
                      topology.completed_key(outcome.word), self.settings.publish_timeout)
        self._completed.add(request.event_id)
        operation = outcome.operation_label
        labelled(PROCESSED, operation, "completed").inc()
        AGE.observe(max(0.0, time.time() - request.occurred_at.seconds - request.occurred_at.nanos / 1e9))
        if log.isEnabledFor(logging.INFO):
            log.info("completed", extra=kv(
                event_id=request.event_id, correlation_id=outcome.correlation_id,
                operation=operation, operands=list(request.operands),
                result=outcome.result, attempt=attempt, result_event_id=event.event_id))

    async def _fail(self, outcome: Outcome, reason: int, detail: str, attempts: int) -> None:
        msg, event = codec.failed_message(outcome.event_id, outcome.operation, reason, detail,
                                          attempts, outcome.correlation_id, self.settings.instance_id)
        await publish(self._channel, topology.RESULTS_EXCHANGE, msg,
                      topology.failed_key(outcome.word), self.settings.publish_timeout)
        name = codec.reason_name(reason)
        labelled(PROCESSED, outcome.operation_label or "undecodable", "failed").inc()
        labelled(FAILURES, name).inc()
        log.warning("failed", extra=kv(
            event_id=outcome.event_id, correlation_id=outcome.correlation_id,
            operation=outcome.operation_label, operands=outcome.operands, reason=name,
            detail=detail, attempts=attempts, failure_event_id=event.event_id))

    async def _transient(self, message: DeliveredMessage, incoming: codec.Incoming,
                         outcome: Outcome, attempt: int, error: str) -> None:
        """Retry after a growing delay, or give up with RETRIES_EXHAUSTED after the last attempt."""
        ids = {"event_id": outcome.event_id or incoming.message_id or "",
               "correlation_id": outcome.correlation_id}
        if self.failure is not None:  # stopping for a refusal: what else failed meanwhile goes back
            await self._settle(message, "requeue")
            return
        try:
            if attempt >= self.settings.max_attempts:
                exhausted = Outcome(outcome.request, outcome.correlation_id,
                                    failure_word(incoming.routing_key, outcome.request))
                await self._fail(exhausted, RETRIES_EXHAUSTED,
                                 f"gave up after {attempt} attempts: {error}", attempt)
                await self._settle(message, "reject")
                return
            delay = topology.retry_delay(self.settings, attempt)
            retry = codec.copy_message(message.body, message.header.properties, attempt + 1,
                                       expiration=delay)
            try:
                await publish(self._channel, topology.retry_exchange(attempt), retry,
                              incoming.routing_key, self.settings.publish_timeout)
            except Unencodable as exc:  # the request cannot be sent again: it cannot be retried
                await self._fail(outcome, MALFORMED, f"cannot be retried ({exc}) after: {error}",
                                 attempt)
                await self._settle(message, "reject")
                return
            RETRIES.inc()
            log.warning("retry scheduled", extra=kv(**ids, attempt=attempt, next_attempt=attempt + 1,
                                                    delay_s=delay, error=error))
            await self._settle(message, "ack")
        except Transient as exc:
            # Neither a retry nor a failure could be confirmed: hand the message back to the
            # broker; its delivery limit is the backstop.
            log.error("could not schedule retry; requeued", extra=kv(**ids, error=str(exc)))
            await self._settle(message, "requeue")
        except Unencodable as exc:  # our own failure event could not be built: a bug, counted
            log.error("could not encode the failure; requeued", extra=kv(**ids, error=str(exc)))
            await self._settle(message, "requeue-failed")

    def _acks_for(self, message: DeliveredMessage) -> _Acks | None:
        """The batch of the delivery's channel; None when that channel is closed (the broker has
        taken its unacked deliveries back)."""
        channel = message.channel
        if channel.is_closed:
            return None
        acks = self._acks
        if acks is None or acks.channel is not channel:
            # A new channel (start, or reopened after a loss): delivery tags start over.
            acks = self._acks = _Acks(channel, self._ack_batch)
        return acks

    async def _settle(self, message: DeliveredMessage, how: Settle) -> None:
        """Called once the outcome is confirmed; an ack waits for the next batch."""
        tag = message.delivery_tag
        if how == "ack":
            acks = self._acks_for(message)
            if acks is not None and tag is not None:
                acks.ready(tag)
            return
        if how == "reject":
            forged = codec.forged_headers(message.header.properties.headers or {})
            if forged:  # a client's x-death: never hand it to the broker's dead-letter worker
                if await self._dead_letter_ourselves(message, forged):
                    await self._settle(message, "ack")
                    return
                how = "requeue"
        try:
            assert tag is not None
            if how == "reject":
                await message.channel.basic_reject(tag, requeue=False)
            elif how == "requeue-failed":
                # basic.reject: from RabbitMQ 4.3 only a reject counts towards the quorum queue's
                # delivery limit (a nack is "not processed", and would let a bug loop forever)
                await message.channel.basic_reject(tag, requeue=True)
            else:  # "requeue": not the message's fault (the broker did not confirm)
                await message.channel.basic_nack(tag, requeue=True)
            self._settled += 1
        except Exception as exc:
            # The channel is gone: the broker requeues the delivery itself.
            properties = message.header.properties
            log.warning("could not settle delivery", extra=kv(
                message_id=properties.message_id, correlation_id=properties.correlation_id,
                how=how, error=repr(exc)))
        # only now, with the reject or requeue sent, may a later multiple ack pass this tag
        acks = self._acks_for(message)
        if acks is not None:
            acks.settled(tag)

    async def _dead_letter_ourselves(self, message: DeliveredMessage, forged: list[str]) -> bool:
        """Publish the message to calc.dlx without its `x-` headers; True once confirmed."""
        incoming = codec.incoming_of(message)
        key = incoming.routing_key if codec.fits_short_string(incoming.routing_key) else "undecodable"
        copy = codec.dead_letter_copy(message.body, message.header.properties, incoming.attempt, forged)
        try:
            try:
                await publish(self._channel, topology.DEAD_LETTER_EXCHANGE, copy, key,
                              self.settings.publish_timeout)
            except Unencodable as exc:  # another header cannot be sent again: keep the rest
                copy = codec.reduced_dead_letter_copy(message.body, message.header.properties,
                                                      incoming.attempt, forged, str(exc))
                await publish(self._channel, topology.DEAD_LETTER_EXCHANGE, copy, key,
                              self.settings.publish_timeout)
        except Transient as exc:
            log.error("could not dead-letter a message with forged broker headers; requeued", extra=kv(
                message_id=incoming.message_id, correlation_id=incoming.correlation_id,
                forged=",".join(forged), error=str(exc)))
            return False
        log.warning("dead-lettered by the consumer: forged broker headers removed", extra=kv(
            message_id=incoming.message_id, correlation_id=incoming.correlation_id, forged=",".join(forged)))
        return True

    async def _flush_acks(self, everything: bool = False) -> None:
        # One flush at a time: a multiple ack overtaken by a later, higher one would name a tag
        # that is no longer unacked, which the broker punishes by closing the channel.
        async with self._ack_lock:
            acks = self._acks
            if acks is None:
                return
            last, count, singles = acks.take(everything)
            if everything and singles:
                log.info("acking deliveries one by one past an unsettled one", extra=kv(
                    count=len(singles), frontier=acks.frontier))
            channel = acks.channel
            assert isinstance(channel, aiormq.abc.AbstractChannel)
            try:
                for tag in singles:
                    await channel.basic_ack(tag)
                if last is not None:
                    await channel.basic_ack(last, multiple=True)
                self._settled += count + len(singles)
            except Exception as exc:
                # The channel is gone: the broker requeues these deliveries itself.
                log.warning("could not ack deliveries",
                            extra=kv(count=count + len(singles), error=repr(exc)))
