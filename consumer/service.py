"""The consumer service: deliveries in, results and failures out, ack only after a confirm.

This module wires the chain (transport -> pipeline: verdict, policy, outcomes, ack ledger) and
runs its lifecycle: start, then the drain at stop; consumer/subscribing.py subscribes (again).
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
from consumer.subscribing import Subscriber
from consumer.transport import AiormqTransport, Transport
from messaging import topology
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
        # Acks go out with multiple=True once per batch (or when idle): one frame and one broker
        # settlement instead of one per message. Below the prefetch, or deliveries would stall.
        self.ledger = AckLedger(max(1, min(100, settings.prefetch // 4)))
        self._completed = Completed()
        self._pipeline: Pipeline | None = None
        self._fault = fault or random_fault(settings.fault_rate)
        self._on_request = on_request
        self.failed = asyncio.Event()  # set with `failure`: the service must stop
        self._subscriber = Subscriber(transport, queues, self.ledger, self.readiness, self.failed)
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
        await self._subscriber.start(self._pipeline)

    async def stop(self, timeout: float = DRAIN_TIMEOUT_S) -> None:
        """Stop taking work, let in-flight messages finish, then close the channels."""
        self._subscriber.stop()
        self.readiness.not_ready("stopping")
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
