"""(c) The idiomatic aio-pika loop: queue.iterator(), message.process(), await publish."""

from __future__ import annotations

import aio_pika

from bench import work


async def run(url: str, count: int, prefetch: int | None) -> work.Meter:
    connection = await aio_pika.connect_robust(url)
    meter = work.Meter(count)
    async with connection:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        await channel.set_qos(prefetch_count=prefetch or 100)
        exchange = await channel.get_exchange(work.RESULTS_EXCHANGE, ensure=False)
        queue = await channel.get_queue(work.WORK_QUEUE, ensure=False)
        meter.start()
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process(requeue=False, ignore_processed=True):
                    out = work.process(message.body, message.routing_key or "", message.correlation_id)
                    await exchange.publish(work.aio_pika_message(out), out.routing_key, mandatory=True)
                    if not out.ok:
                        await message.reject(requeue=False)
                meter.add()
                if meter.done:
                    break
        await channel.close()  # a round trip: every ack before it has reached the broker
    return meter
