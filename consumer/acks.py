"""Settling deliveries: batched acks that never cover a delivery whose outcome is unconfirmed."""

from __future__ import annotations

import asyncio
import logging

from aiormq.abc import AbstractChannel, DeliveredMessage

from consumer.policy import Settlement
from consumer.transport import CHANNEL_ERRORS
from messaging.logs import kv

log = logging.getLogger("consumer.service")  # one logger for every line of the consumer

SETTLE_GRACE_S = 0.5
"""Shutdown: how long the broker gets to apply the last acks before the channel closes (see
`let_acks_land`; the measurements behind 0.5 s: docs/architecture.md, "A settle grace before
the channel closes")."""


async def let_acks_land(channel: AbstractChannel, prefetch: int, grace: float = SETTLE_GRACE_S) -> None:
    """Give the broker time to apply the acks sent on `channel` before it closes.

    A quorum queue's channel holds settlements back while the queue is behind, and a channel
    that closes drops what it holds: those deliveries are handed out again, done once already
    (rabbitmq-server#10327). Nothing in AMQP confirms an ack, so: a round trip (the broker has
    read every ack before it answers; `prefetch` is the channel's own, so nothing changes), then
    `grace` seconds for the held ones to go out.
    """
    if channel.is_closed:
        return
    try:
        await channel.basic_qos(prefetch_count=prefetch)
    except CHANNEL_ERRORS as exc:  # the channel is gone: the broker has taken its deliveries back
        log.warning("could not reach the broker after the last acks", extra=kv(error=repr(exc)))
        return
    await asyncio.sleep(grace)


class AckLedger:
    """The settlements of the consume channel; a multiple ack never covers an unconfirmed outcome.

    A `multiple=True` ack settles every unacked tag up to it, so it may only name a tag below
    which every delivery of the channel already has a confirmed outcome: the *frontier*. Rejects
    and requeues go out on their own at once (so no later multiple ack covers them) and only
    then count as settled here. A delivery stuck below a full batch of finished ones (a slow
    confirm) does not stall the rest: those are acked one by one instead. Delivery tags are the
    channel's: a new channel (a reopen) starts the ledger over.
    """

    def __init__(self, batch: int) -> None:
        self.batch = batch
        self.settled_count = 0  # deliveries acked, rejected or requeued, on every channel
        self._lock = asyncio.Lock()  # one flush at a time: acks leave in the order taken
        self._begin(None)

    def _begin(self, channel: AbstractChannel | None) -> None:
        self.channel = channel
        self._frontier = 0  # every tag <= this is settled or waiting to be acked
        self._waiting: dict[int, bool] = {}  # above the frontier; True: to ack, False: settled
        self._last: int | None = None  # highest tag <= frontier waiting for an ack
        self._count = 0  # deliveries <= frontier waiting for an ack
        self._stuck = 0  # deliveries above the frontier waiting for an ack

    def ack(self, message: DeliveredMessage) -> None:
        """The outcome of `message` is confirmed: ack it with the next batch."""
        channel = message.channel
        if channel.is_closed:  # the broker has taken the channel's unacked deliveries back
            return
        if channel is not self.channel:
            self._begin(channel)
        tag = message.delivery_tag
        if tag is not None:
            self._add(tag, True)

    async def send(self, message: DeliveredMessage, how: Settlement) -> None:
        """Reject or requeue `message` at once, on its own; only then may a multiple ack pass it."""
        tag = message.delivery_tag
        channel = message.channel
        try:
            assert tag is not None, "a consumed or got delivery has a tag"
            if how == "reject":
                await channel.basic_reject(tag, requeue=False)
            elif how == "reject-requeue":
                # basic.reject: from RabbitMQ 4.3 only a reject counts towards the quorum queue's
                # delivery limit (a nack is "not processed", and would let a bug loop forever)
                await channel.basic_reject(tag, requeue=True)
            else:
                await channel.basic_nack(tag, requeue=True)
            self.settled_count += 1
        except CHANNEL_ERRORS as exc:  # the channel is gone: the broker requeues it itself
            properties = message.header.properties
            log.warning("could not settle delivery", extra=kv(
                message_id=properties.message_id, correlation_id=properties.correlation_id,
                how=how, error=repr(exc)))
        if not channel.is_closed:
            if channel is not self.channel:
                self._begin(channel)
            self.settled(tag)

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

    async def flush(self, everything: bool = False) -> None:
        """Send what `take` gives; `everything` before the channel closes."""
        # a multiple ack overtaken by a later, higher one would name a tag that is no longer
        # unacked, which the broker punishes by closing the channel
        async with self._lock:
            channel = self.channel
            if channel is None:
                return
            last, count, singles = self.take(everything)
            if everything and singles:
                log.info("acking deliveries one by one past an unsettled one", extra=kv(
                    count=len(singles), frontier=self._frontier))
            try:
                for tag in singles:
                    await channel.basic_ack(tag)
                if last is not None:
                    await channel.basic_ack(last, multiple=True)
                self.settled_count += count + len(singles)
            except CHANNEL_ERRORS as exc:  # the channel is gone: the broker requeues these itself
                log.warning("could not ack deliveries", extra=kv(count=count + len(singles), error=repr(exc)))

    async def land(self, prefetch: int, grace: float) -> None:
        """After the last flush: let the acks land before the channel closes (`let_acks_land`)."""
        if self.channel is not None:
            await let_acks_land(self.channel, prefetch, grace)
