"""Requests that carry broker headers a client forged (`x-death=[1]` crashes RabbitMQ 3.10's
dead-letter worker, and soon every queue of the node stops dead-lettering): the consumer
dead-letters them itself, without those headers, and dead-lettering keeps working for the rest."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pika

from messaging import codec, topology
from tests.integration.pipeline import (
    collect,
    declare,
    pika_params,
    publish_raw,
    queue_depth,
    running_consumer,
    settings_for,
)
from tests.support.private_node import NodeFactory

FORGED: dict[str, dict[str, Any]] = {
    "ints": {"x-death": [1]},
    "text": {"x-death": "boom"},
    "empty entry": {"x-death": [{}]},
    "wrong types": {"x-death": [{"queue": 1, "reason": 2, "count": "x"}]},
    "not a list": {"x-death": {"queue": "q"}},
    "first death": {"x-first-death-reason": 5},
}
WELL_FORMED = {"x-death": [{"queue": "elsewhere", "reason": "expired", "count": 1, "exchange": "",
                            "routing-keys": ["k"], "time": datetime(2026, 1, 1, tzinfo=UTC)}]}


def _pika_publish(url: str, body: bytes, key: str, headers: dict[str, Any]) -> None:
    connection = pika.BlockingConnection(pika_params(url))
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_publish(topology.REQUESTS_EXCHANGE, key, body,
                              pika.BasicProperties(headers=headers, delivery_mode=2), mandatory=True)
    finally:
        connection.close()


async def test_forged_broker_headers_never_reach_the_dead_letter_worker(private_node: NodeFactory) -> None:
    node = private_node()
    settings = settings_for(node.url)
    await declare(settings)
    key = topology.requested_key("divide")

    async def send(event_id: str, headers: dict[str, Any] | None = None) -> None:
        request = codec.build_request(4, [1.0, 0.0], "forged", event_id=event_id)  # division by zero
        await publish_raw(node.url, request.SerializeToString(), key, headers=headers)

    for name, headers in FORGED.items():
        await send(f"forged-{name}", headers)
    await send("well-formed", WELL_FORMED)
    plain = [f"plain-{i}" for i in range(20)]
    for event_id in plain:
        await send(event_id)
    # and one whose other headers cannot be sent again as they are (nested deeper than the
    # consumer re-encodes): its dead-letter copy keeps the body and what identifies it
    deep: Any = 1
    for _ in range(40):
        deep = [deep]
    unsendable = codec.build_request(4, [1.0, 0.0], "forged", event_id="forged-unsendable")
    await asyncio.to_thread(_pika_publish, node.url, unsendable.SerializeToString(), key,
                            {"x-death": [1], "big": deep})
    total = len(FORGED) + 2 + len(plain)
    async with running_consumer(settings):
        results = await collect(node.url, topology.AUDIT_QUEUE, total, timeout=60, quiet=2.0)
        dead = await collect(node.url, topology.DLQ, total, timeout=60, quiet=3.0)
    assert len(results.failed()) == total
    letters = {codec.decode_request(m.body).event_id: m for m in dead.messages}
    assert sorted(letters) == sorted([*(f"forged-{n}" for n in FORGED), "forged-unsendable",
                                      "well-formed", *plain])
    assert len(dead.messages) == total  # each once
    for name, headers in FORGED.items():
        letter = letters[f"forged-{name}"]
        assert letter.headers[codec.FORGED_HEADER] == next(iter(headers))
        assert not any(k.startswith("x-") for k in letter.headers)  # dead-lettered by the consumer
        assert letter.headers["attempt"] == 1
    reduced = letters["forged-unsendable"]
    assert reduced.headers[codec.FORGED_HEADER] == "x-death"
    assert "big" not in reduced.headers and codec.UNENCODABLE_HEADER in reduced.headers
    assert reduced.headers["attempt"] == 1 and "nested deeper" in reduced.headers[codec.UNENCODABLE_HEADER]
    for event_id in [*plain, "well-formed"]:  # dead-lettered by the broker, as ever
        deaths = letters[event_id].headers["x-death"]
        assert any(d["reason"] == "rejected" and d["queue"] == "calc.work.basic" for d in deaths)
        assert codec.FORGED_HEADER not in letters[event_id].headers
    for name in ("calc.work.basic", "calc.work.heavy"):
        assert await queue_depth(node.url, name) == 0
