"""(g) pika AsyncioConnection, fully pipelined: plain callbacks (no task or future per message),
publish without waiting, and per confirmed batch one `multiple=True` ack of the matching contiguous
range of deliveries (a failed one is rejected on its own first)."""

from __future__ import annotations

import asyncio
from collections import deque

import pika
from pika.adapters.asyncio_connection import AsyncioConnection

from bench import work


class Pipelined:
    def __init__(self, url: str, meter: work.Meter, prefetch: int, done: asyncio.Future[None]) -> None:
        self.meter = meter
        self.prefetch = prefetch
        self.done = done
        self.published = 0
        # (publish sequence number, delivery tag, ok) in delivery order: one channel, in-order
        # callbacks, so publish numbers and delivery tags rise together
        self.pending: deque[tuple[int, int, bool]] = deque()
        self.confirmed_through = 0
        self.confirmed_single: set[int] = set()
        self.connection = AsyncioConnection(pika.URLParameters(url), on_open_callback=self.on_open,
                                            on_open_error_callback=self.on_error,
                                            custom_ioloop=asyncio.get_running_loop())

    def on_error(self, _connection: object, error: object) -> None:
        if not self.done.done():
            self.done.set_exception(RuntimeError(f"pika: {error}"))

    def on_open(self, connection: AsyncioConnection) -> None:
        connection.channel(on_open_callback=self.on_channel)

    def on_channel(self, channel) -> None:  # type: ignore[no-untyped-def]
        self.channel = channel
        channel.add_on_close_callback(lambda _ch, reason: self.on_error(None, reason))
        channel.add_on_return_callback(lambda *_: self.on_error(None, "result returned (unroutable)"))
        channel.confirm_delivery(self.on_confirm, callback=lambda _frame: channel.basic_qos(
            prefetch_count=self.prefetch, callback=self.on_qos))

    def on_qos(self, _frame: object) -> None:
        self.meter.start()
        self.channel.basic_consume(work.WORK_QUEUE, self.on_message)

    def on_message(self, channel, method, properties, body) -> None:  # type: ignore[no-untyped-def]
        out = work.process(body, method.routing_key, properties.correlation_id)
        channel.basic_publish(work.RESULTS_EXCHANGE, out.routing_key, out.body, work.pika_properties(out),
                              mandatory=True)
        self.published += 1
        self.pending.append((self.published, method.delivery_tag, out.ok))

    def on_confirm(self, frame) -> None:  # type: ignore[no-untyped-def]
        confirm = frame.method
        if isinstance(confirm, pika.spec.Basic.Nack):
            self.on_error(None, f"result nacked: {confirm}")
            return
        if confirm.multiple:
            self.confirmed_through = max(self.confirmed_through, confirm.delivery_tag)
        else:
            self.confirmed_single.add(confirm.delivery_tag)
        ack_tag = 0
        acked = 0
        while self.pending:
            number, tag, ok = self.pending[0]
            if number <= self.confirmed_through:
                pass
            elif number in self.confirmed_single:
                self.confirmed_single.discard(number)
            else:
                break
            self.pending.popleft()
            if ok:
                ack_tag = tag
                acked += 1
            else:
                self.channel.basic_reject(tag, requeue=False)
                self.meter.add()
        if ack_tag:
            self.channel.basic_ack(ack_tag, multiple=True)
            self.meter.add(acked)
        if self.meter.done and not self.done.done():
            self.done.set_result(None)


async def run(url: str, count: int, prefetch: int | None) -> work.Meter:
    meter = work.Meter(count)
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    consumer = Pipelined(url, meter, prefetch or 1000, done)
    try:
        await done
    finally:
        closed = asyncio.get_running_loop().create_future()
        if consumer.connection.is_open:
            consumer.connection.add_on_close_callback(lambda *_: closed.done() or closed.set_result(None))
            consumer.connection.close()
            await asyncio.wait_for(closed, 10)
    return meter
