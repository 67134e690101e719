"""The consumer's rules (tests/support/pipeline_rules.py) on RabbitMQ, in a vhost of their own:
the same scenarios tests/unit/test_pipeline_rules.py runs on the fake broker."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable

import pytest

from consumer import metrics
from consumer.outcomes import Publishing
from consumer.pipeline import Fault
from consumer.service import ConsumerService
from messaging import codec, topology
from messaging.connection import connect
from messaging.publisher import Publisher, confirmed_channel
from messaging.settings import Settings
from tests.integration.pipeline import collect, publish_raw, queue_depth
from tests.support.pipeline_rules import SCENARIOS, Scenario, Taken, settings_for


class RabbitHarness:
    """A Harness on a real broker: publishes as a foreign client, takes with basic.get."""

    def __init__(self, url: str, settings: Settings) -> None:
        self.url = url
        self.settings = settings

    async def send(self, request: codec.Requested, correlation_id: str | None = None) -> None:
        message = codec.request_message(request, correlation_id)
        p = message.properties
        await publish_raw(self.url, message.body, topology.requested_key(
            codec.operation_label(int(request.operation))), content_type=p.content_type,
            type=p.message_type, message_id=p.message_id, correlation_id=p.correlation_id,
            headers=p.headers, delivery_mode=p.delivery_mode)

    @contextlib.asynccontextmanager
    async def consumer(self, fault: Fault | None = None,
                       wrap: Callable[[Publishing], Publishing] | None = None
                       ) -> AsyncIterator[ConsumerService]:
        connection = await connect(self.settings, "test-rules")
        try:
            channel = await confirmed_channel(connection)
            await topology.declare(channel, self.settings)
            publisher: Publishing = Publisher(channel, self.settings.publish_timeout,
                                              metrics.PUBLISH_OUTCOMES)
            service = ConsumerService(self.settings, connection, fault=fault,
                                      publisher=wrap(publisher) if wrap else publisher)
            await service.start()
            try:
                yield service
            finally:
                await service.stop(timeout=5)
        finally:
            await connection.close()

    async def taken(self, queue: str, count: int, timeout: float = 30.0) -> list[Taken]:
        got = await collect(self.url, queue, count, timeout=timeout if count else 2.0,
                            quiet=0.5 if count else 2.0)
        return [Taken(m.routing_key or "", m.type, dict(m.headers or {}), m.body) for m in got.messages]

    async def depth(self, queue: str) -> int:
        return await queue_depth(self.url, queue)

    async def crash(self, service: ConsumerService) -> None:
        assert service.connection is not None
        await service.connection.close()  # the broker requeues what its channels held


@pytest.mark.parametrize("scenario", SCENARIOS, ids=lambda s: s.name)
async def test_rule(vhost_url: str, scenario: Scenario) -> None:
    await scenario.run(RabbitHarness(vhost_url, settings_for(vhost_url, **scenario.settings)))
