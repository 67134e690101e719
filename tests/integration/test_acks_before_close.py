"""Acks sent just before a channel closes must not be lost on a quorum queue.

RabbitMQ can drop them (rabbitmq-server#10327): the consumer's graceful shutdown then leaves
deliveries it finished to be done again by the next consumer. `let_acks_land`, which the
consumer's stop() runs before closing, is what prevents it; this test drives the broker hard
enough to drop acks (single acks, one settlement command each) and checks none are lost with it.
"""

from __future__ import annotations

import asyncio

import aiormq

from consumer.service import let_acks_land

ROUNDS = 15
MESSAGES = 300
QUEUE = "test.acks-before-close"


async def _round(connection: aiormq.abc.AbstractConnection, grace: float | None) -> int:
    """Deliver MESSAGES, ack each alone, close (after let_acks_land unless grace is None);
    return how many the queue still holds."""
    publisher = await connection.channel()
    await publisher.queue_purge(QUEUE)
    for _ in range(MESSAGES):
        await publisher.basic_publish(b"x", routing_key=QUEUE)
    consumer = await connection.channel()
    await consumer.basic_qos(prefetch_count=MESSAGES)
    tags: list[int] = []
    all_in = asyncio.Event()

    async def on_message(message: aiormq.abc.DeliveredMessage) -> None:
        assert message.delivery_tag is not None
        tags.append(message.delivery_tag)
        if len(tags) == MESSAGES:
            all_in.set()

    ok = await consumer.basic_consume(QUEUE, on_message, no_ack=False)
    await asyncio.wait_for(all_in.wait(), 30)
    assert ok.consumer_tag is not None
    await consumer.basic_cancel(ok.consumer_tag)
    for tag in tags:
        await consumer.basic_ack(tag)
    if grace is not None:
        await let_acks_land(consumer, MESSAGES, grace)
    await consumer.close()
    # what the broker hands back after a close arrives at once; give it a moment all the same
    await asyncio.sleep(0.3)
    declared = await publisher.queue_declare(QUEUE, passive=True)
    await publisher.close()
    return int(declared.message_count or 0)


async def test_acks_sent_before_a_close_all_land_with_let_acks_land(vhost_url: str) -> None:
    connection = await aiormq.connect(vhost_url)
    try:
        setup = await connection.channel()
        await setup.queue_declare(QUEUE, durable=True, arguments={"x-queue-type": "quorum"})
        await setup.close()
        without = [await _round(connection, None) for _ in range(ROUNDS)]
        with_it = [await _round(connection, 0.5) for _ in range(ROUNDS)]
    finally:
        await connection.close()
    # The control shows what the broker does on this machine today; it is not asserted: the
    # drop is a race and often does not happen on a quiet machine.
    print(f"acks lost at close: without let_acks_land in {sum(1 for n in without if n)} of {ROUNDS} "
          f"rounds ({sum(without)} deliveries); with it in {sum(1 for n in with_it if n)} of {ROUNDS}")
    assert with_it == [0] * ROUNDS, (
        f"deliveries acked then handed back after the close, per round: {with_it}")
