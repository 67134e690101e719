"""The consumer service: deliveries in, results and failures out, ack only after a confirm.

This module wires the chain (transport -> pipeline: verdict, policy, outcomes, ack ledger) and
runs its lifecycle: subscribing, subscribing again, the redeliveries one by one, and the drain.
"""

from __future__ import annotations

import asyncio
import logging

from aio_pika.abc import AbstractRobustConnection

from consumer import metrics
from consumer.acks import SETTLE_GRACE_S, AckLedger
from consumer.dedupe import Completed
from consumer.outcomes import Outcomes, Publishing
from consumer.pipeline import Fault, OnRequest, Pipeline, random_fault
from consumer.transport import CHANNEL_ERRORS, AiormqTransport, Transport
from messaging import backoff, topology
from messaging.errors import ConfigurationError
from messaging.health import Readiness
from messaging.logs import kv
from messaging.publisher import confirmed_channel, publisher
from messaging.settings import Settings
from messaging.tracing import Tracing

log = logging.getLogger(__name__)

__all__ = ["DRAIN_TIMEOUT_S", "SETTLE_GRACE_S", "ConsumerService"]

DRAIN_TIMEOUT_S = 30.0
"""Shutdown: how long in-flight deliveries get to finish; what is left then goes back to the
queue. Compose and Kubernetes give the consumer more than this plus SETTLE_GRACE_S."""


class ConsumerService:
    """Consumes the configured work queues until `stop()`; see the contract's failure rules.

    `publisher` and `transport` default to the real ones, made in `start()` on `connection`
    (a confirmed channel that also declares the topology; aio-pika's robust consume channel);
    the tests pass fakes. `fault` and `on_request`: see consumer/pipeline.py. `tracing`: None
    when off (docs/operations.md, "Tracing"). `readiness` is ready while every work queue is
    subscribed, not while subscribing (again) or stopping.
    """

    def __init__(self, settings: Settings, connection: AbstractRobustConnection | None, *,
                 publisher: Publishing | None = None, transport: Transport | None = None,
                 fault: Fault | None = None, on_request: OnRequest | None = None,
                 tracing: Tracing | None = None, readiness: Readiness | None = None) -> None:
        self.settings = settings
        self.tracing = tracing
        self.readiness = readiness or Readiness()
        self.connection = connection
        self.publisher = publisher
        queues = tuple(topology.work_queue(kind) for kind in settings.queues)
        if transport is None:
            assert connection is not None, "a connection, or a transport"
            transport = AiormqTransport(connection, queues, settings.prefetch, settings.instance_id)
        self.transport = transport
        self._queues = queues
        # Acks go out with multiple=True once per batch (or when idle): one frame and one broker
        # settlement instead of one per message. Below the prefetch, or deliveries would stall.
        self.ledger = AckLedger(max(1, min(100, settings.prefetch // 4)))
        self._completed = Completed()
        self._pipeline: Pipeline | None = None
        self._fault = fault or random_fault(settings.fault_rate)
        self._on_request = on_request
        self._resubscribing: asyncio.Task[None] | None = None
        self._stopping = False
        self.failed = asyncio.Event()  # set with `failure`: the service must stop
        self.settle_grace = SETTLE_GRACE_S  # at stop, after the last acks: see acks.let_acks_land

    @property
    def pipeline(self) -> Pipeline:
        assert self._pipeline is not None, "start() first"
        return self._pipeline

    async def start(self) -> None:
        if self.publisher is None:
            assert self.connection is not None
            channel = await confirmed_channel(self.connection)
            await topology.declare(channel, self.settings)
            self.publisher = publisher(channel, self.settings.publish_timeout, metrics.PUBLISH_OUTCOMES,
                                       self.tracing, metrics.CONFIRMS)
        outcomes = Outcomes(self.publisher, self.settings.instance_id, self._completed,
                            traced=self.tracing is not None)
        self._pipeline = Pipeline(self.settings, outcomes, self.ledger, self._completed, self._fault,
                                  self._on_request, self.failed, self.tracing)
        await self.transport.open()
        for name in self._queues:
            await self._redeliveries_one_by_one(name)
        self.transport.watch(self._lost)
        if self.failure is None:  # a refusal in the pass above: the service is stopping
            await self.transport.subscribe(self.pipeline.handler)
            self.readiness.ready()

    def _lost(self, why: str) -> None:
        """The subscription is gone (channel reopened, or cancelled by the broker): consume again."""
        if not self._stopping:
            self.readiness.not_ready(f"subscribing again: {why}")
        if not self._stopping and (self._resubscribing is None or self._resubscribing.done()):
            self._resubscribing = asyncio.create_task(self._consume_again(why))
            self._resubscribing.add_done_callback(self._gave_up)

    def _gave_up(self, task: asyncio.Task[None]) -> None:
        """Consuming again raised what no retry clears (a bug): stop rather than idle unseen."""
        if not task.cancelled() and task.exception() is not None:
            log.critical("could not consume again; stopping", exc_info=task.exception())
            self.failed.set()

    async def _consume_again(self, why: str) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self.transport.check_queues()  # a consume of a missing queue would close the channel
                await self.transport.unsubscribe()  # the old subscription, if the broker kept it
                # the window of a lost connection came back: one by one again, as at start
                for name in self._queues:
                    await self._redeliveries_one_by_one(name)
                if self.failure is not None:
                    return
                await self.transport.subscribe(self.pipeline.handler)
                self.readiness.ready()
                log.info("consuming again", extra=kv(why=why))
                return
            except CHANNEL_ERRORS as exc:
                failures += 1
                delay = backoff.RESUBSCRIBE.delay(failures)
                log.warning("could not consume again; retrying", extra=kv(
                    why=why, error=repr(exc), retry_in_s=delay))
            await asyncio.sleep(delay)

    async def _redeliveries_one_by_one(self, queue: str) -> None:
        """Settle redelivered messages at the head of `queue` one at a time before consuming.

        When a consumer dies, every unacked message of its window returns and (on quorum
        queues) counts one delivery. If a poison message killed it, a restarted consumer that
        took the whole window again would die again and charge every neighbour, until the
        delivery limit dead-letters all of them. Taken singly, each crash charges only the
        message it died on, so the delivery limit isolates exactly the poison.
        """
        while not self._stopping and self.failure is None:
            message = await self.transport.get(queue)
            if message is None:
                return
            # shielded: a stop() that cancels this pass lets the message finish (its drain waits
            # for it) instead of leaving an outcome confirmed and its delivery unsettled
            await asyncio.shield(self.pipeline.handler(message))
            await self.ledger.flush()
            if not getattr(message.delivery, "redelivered", False):
                return

    async def stop(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Stop taking work, let in-flight messages finish, then close the channels."""
        self._stopping = True
        self.readiness.not_ready("stopping")
        if self._resubscribing is not None:
            self._resubscribing.cancel()
        await self.transport.unsubscribe()
        try:
            await asyncio.wait_for(self._drained(), timeout)
        except TimeoutError:
            log.warning("in-flight messages left unacked at shutdown; the broker redelivers them",
                        extra=kv(in_flight=self.in_flight))
        await self.ledger.flush(everything=True)
        await self.ledger.land(self.settings.prefetch, self.settle_grace)
        await self.transport.close()
        if self.publisher is not None:
            await self.publisher.close()
        log.info("stopped", extra=kv(instance=self.settings.instance_id))

    async def _drained(self) -> None:
        """Until no delivery is in flight, including any handed over in the loop pass that
        finished the last one (its task has not started, so it is not counted yet)."""
        if self._pipeline is None:
            return
        while True:
            await self._pipeline.idle.wait()
            await asyncio.sleep(0)
            if self._pipeline.in_flight == 0:
                return

    @property
    def in_flight(self) -> int:
        return self._pipeline.in_flight if self._pipeline is not None else 0

    @property
    def settled(self) -> int:
        """Deliveries acked, rejected or requeued since start."""
        return self.ledger.settled_count

    @property
    def failure(self) -> ConfigurationError | None:
        """The permanent failure (a refused publish) that stopped the work, if any."""
        return self._pipeline.failure if self._pipeline is not None else None

    @property
    def inject_fault(self) -> Fault:
        """The fault seam (`fault=`), settable while running."""
        return self._pipeline.fault if self._pipeline is not None else self._fault

    @inject_fault.setter
    def inject_fault(self, fault: Fault) -> None:
        self._fault = fault
        if self._pipeline is not None:
            self._pipeline.fault = fault
