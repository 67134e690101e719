"""A request that takes the consumer's connection down every time it is processed (the process
lives on, aio-pika reconnects): after every reconnect the returned window is settled one by one, so
the delivery limit dead-letters exactly the poison and no neighbour."""

from __future__ import annotations

from dataclasses import replace

from messaging import codec, topology
from messaging.verdict import Outcome
from tests.integration.pipeline import (
    collect,
    declare,
    publish_raw,
    queue_depth,
    running_consumer,
    settings_for,
)
from tests.support.private_node import NodeFactory

DELIVERY_LIMIT = 3
EACH_SIDE = 150
PREFETCH = 64


async def test_a_poison_that_drops_the_connection_charges_no_neighbour(private_node: NodeFactory) -> None:
    node = private_node()
    settings = replace(settings_for(node.url), delivery_limit=DELIVERY_LIMIT, prefetch=PREFETCH)
    await declare(settings)
    neighbours = [f"n-{i}" for i in range(2 * EACH_SIDE)]
    requests = [codec.build_request(1, [1.0, 2.0], "ok", event_id=e) for e in neighbours[:EACH_SIDE]]
    requests.append(codec.build_request(1, [1.0, 2.0], "drop-connection", event_id="poison"))
    requests += [codec.build_request(1, [1.0, 2.0], "ok", event_id=e) for e in neighbours[EACH_SIDE:]]
    for request in requests:
        await publish_raw(node.url, request.SerializeToString(), topology.requested_key("add"))

    drops = 0
    async with running_consumer(settings) as service:
        def drop_connection(outcome: Outcome, attempt: int) -> bool:
            """The test's poison: cancel the reader of the connection, as an undecodable frame did."""
            nonlocal drops
            if outcome.request is not None and outcome.request.source == "drop-connection":
                drops += 1
                underlay = service.connection.transport
                assert underlay is not None
                underlay.connection._reader_task.cancel()
            return False

        service.inject_fault = drop_connection
        results = await collect(node.url, topology.AUDIT_QUEUE, 2 * EACH_SIDE, timeout=180, quiet=3.0)
        dead = await collect(node.url, topology.DLQ, 1, timeout=120, quiet=3.0)

    completed = [e.request_event_id for e in results.completed() if e.request_event_id != "poison"]
    # every neighbour completed (some twice: a result whose confirm died with the connection is
    # done again, at-least-once), and none reached the DLQ: only the poison did
    assert sorted(set(completed)) == sorted(neighbours)
    assert dead.messages and {codec.decode_request(m.body).event_id for m in dead.messages} == {"poison"}
    assert "delivery_limit" in {m.headers["x-death"][0]["reason"] for m in dead.messages}
    assert drops >= DELIVERY_LIMIT  # the connection really went down, more than once
    for name in ("calc.work.basic", "calc.work.heavy"):
        assert await queue_depth(node.url, name) == 0
