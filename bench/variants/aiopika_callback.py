"""(d) aio-pika with a consume callback: concurrent messages, one confirmed publish and ack each."""

from __future__ import annotations

import asyncio

import aio_pika
from aio_pika.abc import AbstractIncomingMessage

from bench import work


async def run(url: str, count: int, prefetch: int | None) -> work.Meter:
    connection = await aio_pika.connect_robust(url)
    meter = work.Meter(count)
    done = asyncio.Event()
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=prefetch or 1000)
        exchange = await channel.get_exchange(work.RESULTS_EXCHANGE, ensure=False)
        queue = await channel.get_queue(work.WORK_QUEUE, ensure=False)

        async def on_message(message: AbstractIncomingMessage) -> None:
            out = work.process(message.body, message.routing_key or "", message.correlation_id)
            await exchange.publish(work.aio_pika_message(out), out.routing_key, mandatory=True)
            if out.ok:
                await message.ack()
            else:
                await message.reject(requeue=False)
            meter.add()
            if meter.done:
                done.set()

        meter.start()
        await queue.consume(on_message)
        await done.wait()
        # Closing the channel is a round trip: every ack before it has reached the broker.
        await channel.close()
    return meter
