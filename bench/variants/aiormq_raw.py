"""(b) Minimal raw aiormq consumer with every trick: prefetch 1000, pipelined confirmed publishes,
one `multiple=True` ack per 100 deliveries whose outcomes are confirmed."""

from __future__ import annotations

import asyncio

import aiormq
from aiormq.abc import DeliveredMessage
from pamqp.commands import Basic

from bench import work

ACK_EVERY = 100


async def run(url: str, count: int, prefetch: int | None) -> work.Meter:
    connection = await aiormq.connect(url)
    meter = work.Meter(count)
    done = asyncio.Event()
    try:
        channel = await connection.channel(publisher_confirms=True)
        await channel.basic_qos(prefetch_count=prefetch or 1000)
        last_ack: asyncio.Future[None] | None = None

        def send_ack(tag: int) -> None:
            # Each multiple ack waits for the one before: two puts racing for a slot of aiormq's
            # bounded write queue can swap, and an ack overtaken by a higher one names a tag the
            # broker no longer knows (PRECONDITION_FAILED, seen under py-spy).
            nonlocal last_ack
            previous = last_ack

            async def send() -> None:
                if previous is not None:
                    await previous
                await channel.basic_ack(tag, multiple=True, wait=False)

            last_ack = asyncio.ensure_future(send())

        acker = work.RangeAcker(send_ack, meter, ACK_EVERY)
        in_flight = 0

        async def on_message(message: DeliveredMessage) -> None:
            nonlocal in_flight
            in_flight += 1
            tag = message.delivery.delivery_tag
            out = work.process(message.body, message.delivery.routing_key or "",
                               message.header.properties.correlation_id)
            confirm = await channel.basic_publish(
                out.body, exchange=work.RESULTS_EXCHANGE, routing_key=out.routing_key,
                properties=work.aiormq_properties(out), mandatory=True, wait=False)
            if not isinstance(confirm, Basic.Ack):
                raise RuntimeError(f"result not confirmed: {confirm!r}")
            if not out.ok:
                await channel.basic_reject(tag, requeue=False, wait=False)
            in_flight -= 1
            acker.settle(tag, out.ok)
            if in_flight == 0:
                acker.flush()
            if meter.done:
                done.set()

        meter.start()
        await channel.basic_consume(work.WORK_QUEUE, on_message)
        await done.wait()
        if last_ack is not None:
            await last_ack  # the last acks are written before the connection closes
        await channel.close()  # a round trip: every ack before it has reached the broker
    finally:
        await connection.close()
    return meter
