"""The journal's one subscription: made at start, made again whenever the broker drops it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

import aiormq
from aio_pika.abc import AbstractRobustChannel
from aiormq.abc import DeliveredMessage

from journal.health import Health
from messaging import topology
from messaging.backoff import Backoff
from messaging.logs import kv

log = logging.getLogger(__name__)

RESUBSCRIBE = Backoff(first=0.5, cap=10.0)
"""Consuming again after the channel was reopened or the subscription cancelled."""

OnMessage = Callable[[DeliveredMessage], Coroutine[Any, Any, None]]


class Subscription:
    """calc.results.journal consumed on `channel`'s aiormq channel, and again after each reopen.

    aio-pika reopens a robust channel after a lost connection but does not know this consumer
    (it is made on the aiormq channel underneath, as the consumer service does, with no aio-pika
    message object per delivery); this puts it back.
    """

    def __init__(self, channel: AbstractRobustChannel, on_message: OnMessage, health: Health,
                 describe: dict[str, Any]) -> None:
        self.channel = channel
        self.on_message = on_message
        self.health = health
        self.describe = describe
        self._current: tuple[aiormq.abc.AbstractChannel, str] | None = None
        self._again: asyncio.Task[None] | None = None
        self._stopping = False
        channel.reopen_callbacks.add(self._on_reopen)

    async def start(self) -> None:
        underlay = await self.channel.get_underlay_channel()
        underlay.on_consumer_cancel_callbacks.add(self._on_cancel)
        ok = await underlay.basic_consume(topology.JOURNAL_QUEUE, self.on_message, no_ack=False)
        assert ok.consumer_tag is not None
        self._current = (underlay, ok.consumer_tag)
        self.health.consuming = True
        log.info("consuming", extra=kv(queue=topology.JOURNAL_QUEUE, **self.describe))

    @property
    def underlay(self) -> aiormq.abc.AbstractChannel | None:
        return None if self._current is None else self._current[0]

    async def _on_reopen(self, _channel: object) -> None:
        self.health.consuming = False
        if not self._stopping:
            self._again_soon("channel reopened")

    def _on_cancel(self, frame: Any) -> None:
        if self._current and frame.consumer_tag == self._current[1] and not self._stopping:
            self.health.consuming = False
            log.warning("subscription cancelled by the broker", extra=kv(consumer_tag=frame.consumer_tag))
            self._again_soon("cancelled by the broker")

    def _again_soon(self, why: str) -> None:
        if self._again is None or self._again.done():
            self._again = asyncio.create_task(self._until_consuming(why))

    async def _until_consuming(self, why: str) -> None:
        failures = 0
        while not self._stopping:
            try:
                await self.start()
                log.info("consuming again", extra=kv(why=why))
                return
            except Exception as exc:
                failures += 1
                log.warning("could not consume again; retrying", extra=kv(
                    why=why, error=repr(exc), retry_in_s=RESUBSCRIBE.delay(failures)))
            await asyncio.sleep(RESUBSCRIBE.delay(failures))

    async def cancel(self) -> None:
        """No more deliveries (those held stay unacked until settled or the channel closes)."""
        self._stopping = True
        self.health.consuming = False
        if self._again is not None:
            self._again.cancel()
        if self._current is not None:
            underlay, tag = self._current
            with contextlib.suppress(Exception):
                await underlay.basic_cancel(tag)
