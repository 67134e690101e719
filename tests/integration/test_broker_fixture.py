"""The test broker infrastructure works: vhosts isolate and vanish, private nodes start, crash, cluster."""

from __future__ import annotations

import asyncio
import ssl
import uuid
from pathlib import Path

import aio_pika
import aiormq.exceptions
import pika
import pika.exceptions
import pytest
from aio_pika.abc import AbstractRobustConnection

from tests.support.broker import Broker, temporary_vhost, vhost_name
from tests.support.private_node import ClusterFactory, NodeFactory, PrivateNode
from tests.support.readiness import amqp_handshake_ok
from tests.support.tls import make_server_certificates

RA_REGISTRY_SAVE_SECONDS = 0.5
"""Ra 2.2's auto_save interval for names.dets (RabbitMQ 3.10); Ra 2.14 (4.0) syncs at once."""


class _Boom(Exception):
    """Raised inside a temporary vhost to prove the vhost still goes."""


async def _connect(url: str, ssl_context: ssl.SSLContext | None = None) -> AbstractRobustConnection:
    return await aio_pika.connect_robust(url, timeout=15, ssl_context=ssl_context)


async def test_queue_declared_in_one_vhost_is_absent_from_another(broker: Broker, vhost_url: str) -> None:
    queue_name = f"isolation-{uuid.uuid4().hex[:8]}"
    with temporary_vhost(broker) as other_url:
        async with await _connect(vhost_url) as mine, await _connect(other_url) as theirs:
            channel = await mine.channel()
            await channel.declare_queue(queue_name, durable=True)

            found = await (await mine.channel()).declare_queue(queue_name, passive=True)
            assert found.name == queue_name

            with pytest.raises(aio_pika.exceptions.ChannelNotFoundEntity):
                await (await theirs.channel()).declare_queue(queue_name, passive=True)


def test_vhost_url_points_at_a_fresh_vhost_the_user_may_use(broker: Broker, vhost_url: str) -> None:
    name = vhost_name(vhost_url)
    assert name.startswith("test-") and len(name) == len("test-") + 8
    assert name in broker.admin.list_vhosts()
    assert vhost_url == broker.url_for(name)


def test_temporary_vhost_is_deleted_afterwards_even_when_the_test_fails(broker: Broker) -> None:
    # vhost_url is exactly this context manager around the test's body.
    with pytest.raises(_Boom), temporary_vhost(broker) as url:
        connection = pika.BlockingConnection(pika.URLParameters(url))
        connection.channel().queue_declare("doomed", durable=True)
        connection.close()
        name = vhost_name(url)
        raise _Boom

    assert name not in broker.admin.list_vhosts()
    with pytest.raises(pika.exceptions.ProbableAccessDeniedError, match=r"\(530\).*not found"):
        pika.BlockingConnection(pika.URLParameters(url))


@pytest.mark.chaos
async def test_private_node_accepts_amqp_and_stops(private_node: NodeFactory) -> None:
    node = private_node()
    assert node.admin.version().startswith(("3.", "4."))

    async with await _connect(node.url) as connection:
        queue = await (await connection.channel()).declare_queue("hello", durable=True)
        assert queue.name == "hello"

    await asyncio.to_thread(node.stop)

    assert not node.is_running()
    assert node.beam_pids() == []
    assert not amqp_handshake_ok(node.host, node.amqp_port)


@pytest.mark.chaos
@pytest.mark.slow
async def test_quorum_queue_keeps_confirmed_messages_across_kill_9(
    private_node: NodeFactory,
) -> None:
    node = private_node()
    bodies = [f"message-{i}".encode() for i in range(20)]
    async with await _connect(node.url) as connection:
        channel = await connection.channel(publisher_confirms=True)
        queue = await channel.declare_queue("survivor", durable=True, arguments={"x-queue-type": "quorum"})
        # Services declare their queues long before a crash. RabbitMQ 3.10 (Ra 2.2) writes a new
        # queue's Raft registration to disk only after 0.5 s; a kill inside that window brings
        # the queue back empty and leaderless. The messages below are what this test is about.
        await asyncio.sleep(RA_REGISTRY_SAVE_SECONDS * 3)
        for body in bodies:
            # Returns once the broker confirmed the message, i.e. it is fsynced.
            await channel.default_exchange.publish(
                aio_pika.Message(body, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                routing_key=queue.name,
                mandatory=True,
            )

    old_pids = node.beam_pids()
    assert old_pids
    await asyncio.to_thread(node.kill)
    assert not node.is_running()
    assert not set(old_pids) & set(node.beam_pids())

    await asyncio.to_thread(node.restart)

    assert await _drain(node, "survivor") == bodies


async def _drain(node: PrivateNode, queue_name: str) -> list[bytes]:
    """Take every message off a queue, in order."""
    received: list[bytes] = []
    async with await _connect(node.url) as connection:
        queue = await (await connection.channel()).declare_queue(queue_name, passive=True)
        # A recovering quorum queue answers once its Raft member has elected itself.
        while (message := await queue.get(no_ack=False, fail=False, timeout=30)) is not None:
            received.append(message.body)
            await message.ack()
    return received


@pytest.mark.chaos
@pytest.mark.slow
def test_three_private_nodes_form_one_cluster(private_cluster: ClusterFactory) -> None:
    nodes = private_cluster(3)

    expected = sorted(node.nodename for node in nodes)
    for node in nodes:
        assert node.running_nodes() == expected
    assert len({node.amqp_port for node in nodes}) == 3


@pytest.mark.chaos
async def test_private_node_serves_amqps_with_the_given_certificate(
    private_node: NodeFactory, tmp_path: Path
) -> None:
    files = make_server_certificates(tmp_path / "tls")
    node = private_node(tls=files)
    context = ssl.create_default_context(cafile=str(files.ca))

    async with await _connect(node.tls_url, ssl_context=context) as connection:
        queue = await (await connection.channel()).declare_queue("over-tls", durable=True)
        assert queue.name == "over-tls"

    untrusted = ssl.create_default_context()  # system CAs only: must reject the test CA
    with pytest.raises(aiormq.exceptions.AMQPConnectionError, match="CERTIFICATE_VERIFY_FAILED"):
        await aio_pika.connect(node.tls_url, ssl_context=untrusted, timeout=15)
