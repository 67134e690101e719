"""Subscribing the work queues, and subscribing them again when the subscription is lost.

Each time, the redeliveries at the head of each queue are settled one by one first; see
`Subscriber._redeliveries_one_by_one` for why.
"""

from __future__ import annotations

import asyncio
import logging

from consumer.acks import AckLedger
from consumer.pipeline import Pipeline
from consumer.transport import CHANNEL_ERRORS, Transport
from messaging import backoff
from messaging.health import Readiness
from messaging.logs import kv

log = logging.getLogger("consumer.service")  # one logger for every line of the consumer


class Subscriber:
    """The consumer's subscription lifecycle: `start(pipeline)` subscribes, a loss subscribes again
    (retrying with backoff), `stop()` ends both. `readiness` is ready only while subscribed;
    `failed` is set when subscribing again raises what no retry clears.
    """

    def __init__(self, transport: Transport, queues: tuple[str, ...], ledger: AckLedger,
                 readiness: Readiness, failed: asyncio.Event) -> None:
        self._transport = transport
        self._queues = queues
        self._ledger = ledger
        self._readiness = readiness
        self._failed = failed
        self._pipeline: Pipeline | None = None
        self._resubscribing: asyncio.Task[None] | None = None
        self._stopping = False

    @property
    def _work(self) -> Pipeline:
        assert self._pipeline is not None, "start() first"
        return self._pipeline

    async def start(self, pipeline: Pipeline) -> None:
        """The redeliveries one by one, then watch the subscription and subscribe (unless a
        refusal in that pass stopped the work)."""
        self._pipeline = pipeline
        for name in self._queues:
            await self._redeliveries_one_by_one(name)
        self._transport.watch(self._lost)
        if pipeline.failure is None:  # a refusal in the pass above: the service is stopping
            await self._transport.subscribe(pipeline.handler)
            self._readiness.ready()

    def stop(self) -> None:
        """Subscribe no more: a loss from now on is the stop's own, and a retry under way ends."""
        self._stopping = True
        if self._resubscribing is not None:
            self._resubscribing.cancel()

    def _lost(self, why: str) -> None:
        """The subscription is gone (channel reopened, or cancelled by the broker): consume again."""
        if not self._stopping:
            self._readiness.not_ready(f"subscribing again: {why}")
        if not self._stopping and (self._resubscribing is None or self._resubscribing.done()):
            self._resubscribing = asyncio.create_task(self._consume_again(why))
            self._resubscribing.add_done_callback(self._gave_up)

    def _gave_up(self, task: asyncio.Task[None]) -> None:
        """Consuming again raised what no retry clears (a bug): stop rather than idle unseen."""
        if not task.cancelled() and task.exception() is not None:
            log.critical("could not consume again; stopping", exc_info=task.exception())
            self._failed.set()

    async def _consume_again(self, why: str) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self._transport.check_queues()  # a consume of a missing queue would close the channel
                await self._transport.unsubscribe()  # the old subscription, if the broker kept it
                # the window of a lost connection came back: one by one again, as at start
                for name in self._queues:
                    await self._redeliveries_one_by_one(name)
                if self._work.failure is not None:
                    return
                await self._transport.subscribe(self._work.handler)
                self._readiness.ready()
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
        while not self._stopping and self._work.failure is None:
            message = await self._transport.get(queue)
            if message is None:
                return
            # shielded: a stop() that cancels this pass lets the message finish (its drain waits
            # for it) instead of leaving an outcome confirmed and its delivery unsettled
            await asyncio.shield(self._work.handler(message))
            await self._ledger.flush()
            if not getattr(message.delivery, "redelivered", False):
                return
