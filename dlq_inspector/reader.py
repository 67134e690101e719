"""Reading calc.dlq without taking anything: a scan holds every message unacked, then hands all back.

A scan never acks what it only looks at, and requeues all it holds at the end (`DlqScan.close`),
so no delivery limit counts and any number of scans changes nothing; if the inspector dies, the
broker requeues by itself. It reads in windows of `window` messages, each on its own channel
(a consumer stops receiving at its prefetch), so memory holds one window of bodies, and it reads
as many as the queue had ready when it began, or says that another reader holds some. Why it
consumes rather than basic.get, and what each queue type does to the order: docs/architecture.md.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

from aio_pika.abc import (
    AbstractChannel,
    AbstractConnection,
    AbstractIncomingMessage,
    AbstractQueue,
    ConsumerTag,
)

from dlq_inspector.errors import InspectorError
from dlq_inspector.letters import DeadLetter, from_message, from_record
from messaging.logs import kv
from messaging.topology import DLQ

log = logging.getLogger(__name__)

WINDOW = 1000
MAX_WINDOWS = 1000  # channels one scan may open (RabbitMQ's default channel_max is 2047)
MAX_PREFETCH = 65535  # basic.qos prefetch_count is a short


@dataclass(eq=False)
class _Window:
    channel: AbstractChannel
    queue: AbstractQueue
    buffer: asyncio.Queue[AbstractIncomingMessage | None] = field(default_factory=asyncio.Queue)
    tag: ConsumerTag | None = None
    held: int = 0
    """Messages taken from this window and not acked (they count against its prefetch)."""
    closed_by: BaseException | None = None

    async def stop_consuming(self) -> None:
        """Cancel the consumer. Deliveries it received past what the scan took stay held, and go
        back with the rest of the window: requeued alone, a quorum queue would put them ahead
        of what the scan still holds."""
        if self.tag is None:
            return
        tag, self.tag = self.tag, None
        await self.queue.cancel(tag)
        # Deliveries that preceded the cancel-ok are handed to their callback tasks first.
        for _ in range(3):
            await asyncio.sleep(0)

    @property
    def holding(self) -> int:
        """Messages this window's channel holds unacked (taken, or delivered and not yet taken)."""
        if self.channel.is_closed:
            return 0
        return self.held + self.buffer.qsize()  # a closed channel's sentinel never counts here

    async def hand_back(self) -> None:
        """Cancel the consumer (else the requeued messages come straight back), requeue all, close."""
        if self.channel.is_closed:
            return
        if self.tag is not None:
            tag, self.tag = self.tag, None
            await self.queue.cancel(tag)
        underlay = await self.channel.get_underlay_channel()
        await underlay.basic_nack(delivery_tag=0, multiple=True, requeue=True)  # 0: everything held
        await self.channel.close()


@dataclass(eq=False)
class Delivery:
    """One message held by a scan: its data, and the means to remove it (ack) from the DLQ."""

    letter: DeadLetter
    message: AbstractIncomingMessage
    _window: _Window

    async def ack(self) -> None:
        """Remove the message from the DLQ (after it was replayed, or to purge it)."""
        await self.message.ack()
        self._window.held -= 1


class DlqScan:
    """`async with DlqScan(connection) as scan: async for delivery in scan.deliveries(): ...`

    On exit every message the scan did not ack goes back to calc.dlq, in its place.
    """

    def __init__(self, connection: AbstractConnection, window: int = WINDOW,
                 idle_timeout: float = 5.0, queue: str = DLQ) -> None:
        self.connection = connection
        self.queue_name = queue
        self.window = window
        self.idle_timeout = idle_timeout
        self.expected = 0
        self.consumers = 0
        self.seen = 0
        self.complete = True
        self._windows: list[_Window] = []
        self._lost: BaseException | None = None

    async def __aenter__(self) -> DlqScan:
        async with self.connection.channel(publisher_confirms=False) as channel:
            declared = await channel.declare_queue(self.queue_name, passive=True)
        self.expected = int(declared.declaration_result.message_count or 0)
        self.consumers = int(declared.declaration_result.consumer_count or 0)
        if self.consumers:
            # Most likely another inspector's scan: what it holds is not ready, so not counted.
            self.complete = False
            log.warning("calc.dlq has other consumers; messages they hold are not seen by this scan",
                        extra=kv(queue=self.queue_name, consumers=self.consumers))
        # More messages than windows x prefetch would exhaust the channels: widen the windows.
        self.window = min(MAX_PREFETCH, max(self.window, math.ceil(self.expected / MAX_WINDOWS)))
        log.debug("scan started", extra=kv(queue=self.queue_name, expected=self.expected,
                                           window=self.window))
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        await self.close()

    async def close(self) -> None:
        """Hand every held message back, each to its place, and wait until the queue has them.

        The broker requeues in the background, and on 100,000 messages that takes seconds: a scan
        started meanwhile would find a short queue and take it for the whole. No AMQP call is
        ordered after a requeue (a queue answers the passive declare's `stat` first), so the
        wait is on the ready count: what it was before plus what this scan held.

        One window after the other, first to last: each channel's close-ok comes after its nack,
        so a quorum queue, which puts requeued messages back in the order it gets them, has the
        queue order again (a classic queue restores each message's position by itself).
        """
        windows, self._windows = self._windows, []
        started = time.monotonic()
        holding = sum(w.holding for w in windows)
        before = await self._ready() if holding else None
        for window in windows:
            try:
                await window.hand_back()
            except Exception as exc:
                # The channel or connection is gone: the broker requeues what it held by itself.
                log.debug("handing back a window failed", extra=kv(error=repr(exc)))
                if not window.channel.is_closed:
                    with contextlib.suppress(Exception):
                        await window.channel.close()
        if before is not None:
            await self._wait_ready(before + holding, timeout=self.requeue_timeout(holding))
        log.debug("scan handed back", extra=kv(queue=self.queue_name, messages=holding,
                                               seconds=round(time.monotonic() - started, 3)))

    @staticmethod
    def requeue_timeout(messages: int) -> float:
        return 30.0 + messages / 1000  # RabbitMQ 3.10 requeues a few thousand a second

    async def _ready(self) -> int | None:
        try:
            async with self.connection.channel(publisher_confirms=False) as channel:
                declared = await channel.declare_queue(self.queue_name, passive=True)
            return int(declared.declaration_result.message_count or 0)
        except Exception as exc:  # the connection is gone: nothing left to wait for
            log.debug("cannot read the ready count", extra=kv(error=repr(exc)))
            return None

    async def _wait_ready(self, target: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        ready: int | None = 0
        while time.monotonic() < deadline:
            ready = await self._ready()
            if ready is None or ready >= target:
                return
            await asyncio.sleep(0.05)
        # Someone removed messages meanwhile, or the broker is slow: say so, lose nothing.
        log.warning("the broker is still requeuing what the scan held; a scan started now may read "
                    "fewer messages", extra=kv(queue=self.queue_name, ready=ready, expected=target))

    async def _open_window(self) -> _Window:
        channel = await self.connection.channel(publisher_confirms=False)
        await channel.set_qos(prefetch_count=self.window)
        queue = await channel.get_queue(self.queue_name, ensure=False)
        window = _Window(channel, queue)

        def on_close(_sender: Any, exc: BaseException | None) -> None:
            if exc is not None and window.closed_by is None:
                # e.g. the broker's consumer_timeout (30 min by default) on a window held too long;
                # the broker requeues what it held, so the scan must stop rather than read it twice.
                window.closed_by = exc
                self._lost = self._lost or exc
                window.buffer.put_nowait(None)

        channel.close_callbacks.add(on_close)

        async def on_message(message: AbstractIncomingMessage) -> None:
            window.buffer.put_nowait(message)

        window.tag = await queue.consume(on_message, no_ack=False)
        self._windows.append(window)
        return window

    async def deliveries(self) -> AsyncIterator[Delivery]:
        """The messages in queue order, up to the count at the start; each held until the scan ends."""
        window: _Window | None = None
        while self.seen < self.expected:
            if self._lost is not None:
                raise InspectorError(f"the broker closed a channel of the scan of {self.queue_name} "
                                     f"(consumer_timeout?): {self._lost!r}")
            if window is None or (window.held >= self.window and window.buffer.empty()):
                if window is not None:
                    await window.stop_consuming()
                window = await self._open_window()
            try:
                message = await asyncio.wait_for(window.buffer.get(), self.idle_timeout)
            except TimeoutError:
                self.complete = False
                log.warning("scan ended early: the rest is held by another reader or was removed",
                            extra=kv(queue=self.queue_name, read=self.seen, expected=self.expected,
                                     idle_timeout_s=self.idle_timeout))
                break
            if message is None:
                raise InspectorError(f"the broker closed the channel reading {self.queue_name}: "
                                     f"{window.closed_by!r}")
            window.held += 1
            self.seen += 1
            yield Delivery(from_message(message, self.seen - 1), message, window)
        if window is not None and not window.channel.is_closed:
            await window.stop_consuming()

    async def letters(self) -> AsyncIterator[DeadLetter]:
        async for delivery in self.deliveries():
            yield delivery.letter


def read_export(path: Path) -> Iterator[DeadLetter]:
    """The letters of an `export` file (JSON lines), one at a time; InspectorError on a bad line."""
    try:
        with path.open(encoding="utf-8") as lines:
            for number, line in enumerate(lines, 1):
                if not line.strip():
                    continue
                try:
                    yield from_record(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    raise InspectorError(f"{path}:{number} is not an export line ({exc})") from None
    except OSError as exc:
        raise InspectorError(f"cannot read {path}: {exc.strerror}") from None
