"""(f) FastStream: a RabbitBroker subscriber and publisher, explicit ack/reject, default logger."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

from faststream import AckPolicy
from faststream.rabbit import (
    ExchangeType,
    RabbitBroker,
    RabbitExchange,
    RabbitMessage,
    RabbitQueue,
)
from faststream.rabbit.schemas import Channel, QueueType

from bench import work
from messaging import codec


async def run(url: str, count: int, prefetch: int | None) -> work.Meter:
    meter = work.Meter(count)
    done = asyncio.Event()
    broker = RabbitBroker(url, default_channel=Channel(prefetch_count=prefetch or 1000,
                                                       publisher_confirms=True, on_return_raises=True))
    queue = RabbitQueue(work.WORK_QUEUE, queue_type=QueueType.QUORUM, declare=False)
    results = RabbitExchange(work.RESULTS_EXCHANGE, type=ExchangeType.TOPIC, declare=False)
    publisher = broker.publisher(exchange=results)

    @broker.subscriber(queue, ack_policy=AckPolicy.MANUAL)
    async def handle(body: bytes, message: RabbitMessage) -> None:
        raw = message.raw_message
        out = work.process(body, raw.routing_key or "", raw.correlation_id)
        await publisher.publish(out.body, routing_key=out.routing_key, persist=True, mandatory=True,
                                message_id=out.event_id, correlation_id=out.correlation_id,
                                content_type=codec.CONTENT_TYPE, message_type=out.type,
                                timestamp=datetime.fromtimestamp(out.timestamp, UTC),
                                headers={codec.ATTEMPT_HEADER: 1})
        if out.ok:
            await message.ack()
        else:
            await message.reject()
        meter.add()
        if meter.done:
            done.set()

    meter.start()
    await broker.start()
    try:
        await done.wait()
    finally:
        await broker.stop()
    return meter
