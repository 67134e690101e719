"""calc.dlq's queue type follows the broker (quorum from 4.0), and peeking it still changes nothing.

On 4.0 and later calc.dlq is a quorum queue: the inspector's scans hold and requeue every message,
so these tests check, on whichever broker the session runs, that no peek removes, reorders or
dead-letters anything (more peeks than RabbitMQ 4.0's default delivery limit of 20), that a
partial scan and a letter arriving mid-scan keep the order, and that a replay removes only what
was confirmed.
"""

from __future__ import annotations

import logging
from typing import Any

import aio_pika
import aiormq
import pytest

from calculator import Operation
from dlq_inspector.reader import DlqScan
from messaging import topology
from tests.integration.pipeline import declare, publish_raw, queue_depth
from tests.integration.test_inspector_commands import (
    consumer,
    drain,
    inspector_json,
    peek,
    send,
    settings_of,
    wait_depth,
)

PEEKS = 25  # past the 20 deliveries RabbitMQ 4.0 allows a quorum queue's message by default


async def broker_version(url: str) -> tuple[int, ...]:
    connection = await aiormq.connect(url)
    try:
        version = topology.parse_version(connection.server_properties.get("version"))
    finally:
        await connection.close()
    assert version is not None
    return version


async def declares_as(url: str, queue: str, arguments: dict[str, Any]) -> bool:
    """True when `queue` may be declared with `arguments` (it has that type and those bounds)."""
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        await channel.declare_queue(queue, durable=True, arguments=arguments)
        return True
    except aiormq.exceptions.ChannelPreconditionFailed:
        return False
    finally:
        await connection.close()


async def fill(url: str, count: int) -> list[str]:
    """`count` requests that fail (division by zero), dead-lettered by the real consumer, in order."""
    async with consumer(url):
        ids: list[str] = []
        for i in range(count):  # one at a time: the DLQ order is the sending order
            ids += await send(url, [(Operation.DIVIDE, (float(i), 0.0))])
            await wait_depth(url, topology.DLQ, i + 1)
    return ids


async def test_the_dlq_and_audit_queue_are_quorum_queues_from_rabbitmq_4(vhost_url: str) -> None:
    settings = settings_of(vhost_url)
    await declare(settings)
    version = await broker_version(vhost_url)
    table = {q.name: q for q in topology.build(settings, version).queues}
    kind = "quorum" if version >= topology.REPLICATED_SINCE else "classic"
    for name in (topology.DLQ, topology.AUDIT_QUEUE):
        assert table[name].arguments["x-queue-type"] == kind
        assert await declares_as(vhost_url, name, dict(table[name].arguments)), f"{name} is not {kind}"
    if kind == "quorum":
        assert not await declares_as(vhost_url, topology.DLQ, {"x-queue-type": "classic"})


async def test_peeks_never_remove_reorder_or_dead_letter_anything(vhost_url: str) -> None:
    ids = await fill(vhost_url, 12)
    first = await peek(vhost_url, window=5)  # three windows: more than one channel hands back
    assert [s.event_id for s in first] == ids
    for _ in range(PEEKS - 1):
        assert await peek(vhost_url, window=5) == first
    report = inspector_json(vhost_url, "report")
    assert report["total"] == len(ids) and report["complete"]
    assert await peek(vhost_url, window=5) == first
    bodies = await drain(vhost_url)  # the independent check: every body, byte for byte, in order
    assert bodies == [s.body for s in first]


async def test_a_partial_scan_and_a_letter_arriving_mid_scan_keep_the_order(vhost_url: str) -> None:
    ids = await fill(vhost_url, 10)
    connection = await aio_pika.connect(vhost_url)
    try:
        async with DlqScan(connection, window=4) as scan:
            read = 0
            async for _delivery in scan.deliveries():
                read += 1
                if read == 2:  # a dead letter arrives while the scan holds the head
                    await publish_raw(vhost_url, b"late", "calc.requested.add",
                                      exchange=topology.DEAD_LETTER_EXCHANGE)
                if read == 6:  # as `list --limit 6` stops
                    break
    finally:
        await connection.close()
    after = await peek(vhost_url, window=4)
    assert [s.event_id for s in after[:-1]] == ids
    assert after[-1].body == b"late"


async def test_replay_removes_only_the_confirmed_letter_and_the_rest_keep_their_place(
        vhost_url: str) -> None:
    ids = await fill(vhost_url, 6)
    before = await peek(vhost_url)
    # No consumer runs: the replayed request waits in its work queue, where it can be counted.
    done = inspector_json(vhost_url, "replay", "--id", ids[2], "--yes")
    assert done["done"] == 1 and not done["failed"]
    assert await queue_depth(vhost_url, topology.work_queue("basic")) == 1
    assert await peek(vhost_url) == [s for s in before if s.event_id != ids[2]]


async def test_an_existing_classic_dlq_is_kept_with_a_warning_on_rabbitmq_4(
        vhost_url: str, caplog: pytest.LogCaptureFixture) -> None:
    if await broker_version(vhost_url) < topology.REPLICATED_SINCE:
        pytest.skip("before RabbitMQ 4.0 calc.dlq is a classic queue anyway")
    settings = settings_of(vhost_url)
    old = {q.name: q for q in topology.build(settings, (3, 13)).queues}
    connection = await aio_pika.connect(vhost_url)
    try:  # what an older release declared
        channel = await connection.channel()
        for name in (topology.DLQ, topology.AUDIT_QUEUE):
            await channel.declare_queue(name, durable=True, arguments=dict(old[name].arguments))
    finally:
        await connection.close()
    with caplog.at_level(logging.WARNING, logger="messaging.topology"):
        await declare(settings)
    warned = [r for r in caplog.records if "does not replicate" in r.getMessage()]
    assert len(warned) == 2
    assert await declares_as(vhost_url, topology.DLQ, {"x-queue-type": "classic"})
    ids = await fill(vhost_url, 3)  # the pipeline still dead-letters into it, and peeks work
    assert [s.event_id for s in await peek(vhost_url)] == ids
