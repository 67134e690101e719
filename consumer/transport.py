"""Where deliveries come from: the `Transport` protocol, and its aiormq adapter over aio-pika.

The consumer takes deliveries as aiormq `DeliveredMessage`s and settles each on its own
`message.channel` (an aiormq channel, or the fake's registered as one), so the per-delivery
path holds no object of ours and starts no task.
tests/support/fake_transport.py is the other implementation: the same rules run in memory.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine, Sequence
from typing import Any, Protocol

import aiormq
from aio_pika.abc import AbstractRobustChannel, AbstractRobustConnection
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from messaging.logs import kv

log = logging.getLogger("consumer.service")  # one logger for every line of the consumer

CHANNEL_ERRORS = (aiormq.exceptions.AMQPError, ConnectionError, RuntimeError, asyncio.InvalidStateError)
"""What a lost channel or connection raises: retried (consuming again) or left to the broker
(settling: it requeues what a closed channel held)."""

OnMessage = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]


class Transport(Protocol):
    """Deliveries of the work queues, and the signal to subscribe again when a subscription is lost."""

    async def open(self) -> None:
        """Ready to consume with the prefetch; raises if a work queue does not exist."""

    async def check_queues(self) -> None:
        """Raise if a work queue does not exist (before consuming it again)."""

    async def get(self, queue: str) -> DeliveredMessage | None:
        """The message at the head of `queue`, unacked (basic.get), or None when it is empty."""

    async def subscribe(self, on_message: OnMessage) -> None:
        """Hand every delivery of the work queues to `on_message`."""

    async def unsubscribe(self) -> None:
        """Cancel the subscriptions (failures are logged: a lost channel has none left)."""

    def watch(self, lost: Callable[[str], None]) -> None:
        """Call `lost(why)` whenever the subscription is gone: channel reopened, or cancelled."""

    async def close(self) -> None:
        """Close the consume channel (its unacked deliveries go back to the queue)."""


class AiormqTransport:
    """aio-pika's robust connection and channel (reconnects, reopens) with aiormq's consume path.

    Deliveries come from the consume channel's aiormq channel as they arrive: no aio-pika
    message object and no second task per delivery (a quarter of the CPU per message).
    """

    def __init__(self, connection: AbstractRobustConnection, queues: Sequence[str], prefetch: int,
                 instance: str = "") -> None:
        self.connection = connection
        self.queues = tuple(queues)
        self.prefetch = prefetch
        self.instance = instance  # for the log lines
        self._channel: AbstractRobustChannel | None = None
        self._subscriptions: list[tuple[aiormq.abc.AbstractChannel, str]] = []
        self._lost: Callable[[str], None] | None = None

    async def open(self) -> None:
        channel = await self.connection.channel()
        assert isinstance(channel, AbstractRobustChannel), "connect(robust=True) for the consumer"
        self._channel = channel
        await channel.set_qos(prefetch_count=self.prefetch)
        await self.check_queues()  # ChannelNotFoundEntity (a configuration error) if one is missing

    async def _underlay(self) -> aiormq.abc.AbstractChannel:
        assert self._channel is not None, "open() first"
        return await self._channel.get_underlay_channel()

    async def check_queues(self) -> None:
        """Passively declare the work queues on a throwaway channel.

        Not on the consume channel: a missing queue closes the channel it is asked on, and not
        as aio-pika queues: the robust channel would declare them again on every reopen and,
        with one missing, stay closed. Passive needs no configure permission.
        """
        underlay = await self._underlay()
        probe = await underlay.connection.channel(publisher_confirms=False)
        try:
            for name in self.queues:
                await probe.queue_declare(name, passive=True)
        finally:
            if not probe.is_closed:
                await probe.close()

    async def get(self, queue: str) -> DeliveredMessage | None:
        message = await (await self._underlay()).basic_get(queue, no_ack=False)
        return message if isinstance(message.delivery, Basic.GetOk) else None

    async def subscribe(self, on_message: OnMessage) -> None:
        channel = await self._underlay()
        channel.on_consumer_cancel_callbacks.add(self._on_cancel)
        self._subscriptions = []
        for name in self.queues:
            ok = await channel.basic_consume(name, on_message, no_ack=False)
            assert ok.consumer_tag is not None
            self._subscriptions.append((channel, ok.consumer_tag))
            log.info("consuming", extra=kv(queue=name, prefetch=self.prefetch, instance=self.instance))

    async def unsubscribe(self) -> None:
        for channel, tag in self._subscriptions:
            if channel.is_closed:
                continue  # a lost channel has no consumer left to cancel
            try:
                await channel.basic_cancel(tag)
            except CHANNEL_ERRORS as exc:
                log.warning("cancel failed", extra=kv(error=repr(exc)))
        self._subscriptions = []

    def watch(self, lost: Callable[[str], None]) -> None:
        assert self._channel is not None, "open() first"
        self._lost = lost
        self._channel.reopen_callbacks.add(self._on_reopen)

    async def _on_reopen(self, _channel: object) -> None:
        """aio-pika reopened the consume channel (a reconnect, or a channel error)."""
        if self._lost is not None:
            self._lost("channel reopened")

    def _on_cancel(self, frame: Any) -> None:
        """The broker cancelled a subscription (its queue was deleted or moved)."""
        if self._lost is not None and any(tag == frame.consumer_tag for _, tag in self._subscriptions):
            log.warning("subscription cancelled by the broker", extra=kv(consumer_tag=frame.consumer_tag))
            self._lost("cancelled by the broker")

    async def close(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            await self._channel.close()
