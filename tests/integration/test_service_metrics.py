"""The metrics every service has alike, against a real broker: a running consumer's /metrics after
real traffic (build info, connected, one confirm timing per confirmed publish), and the connected
gauge following a lost and restored connection."""

from __future__ import annotations

import asyncio
import importlib.metadata
from pathlib import Path

from prometheus_client import CollectorRegistry

from messaging.connection import connect, watch
from messaging.metrics import broker_gauges
from tests.integration.pipeline import (
    settings_for,
)
from tests.integration.test_observability import _total, bulk_through_a_consumer


async def test_a_consumer_serves_build_info_connected_and_a_confirm_timing_per_outcome(
        vhost_url: str, tmp_path: Path) -> None:
    _, results, samples = await bulk_through_a_consumer(vhost_url, tmp_path, 200, 5, 0.2)
    assert len(results.completed()) + len(results.failed()) == 200 and results.failed()
    version = importlib.metadata.version("calc-events")
    assert [v for (n, labels), v in samples.items()
            if n == "calc_build_info" and ("version", version) in labels] == [1.0]
    assert _total(samples, "calc_broker_connected") == 1
    assert _total(samples, "calc_broker_blocked") == 0
    confirmed = _total(samples, "calc_publish_outcomes_total", outcome="confirmed")
    assert confirmed == _total(samples, "calc_publish_outcomes_total", outcome="confirmed",
                               exchange="calc.results") == 200
    assert _total(samples, "calc_publish_confirm_seconds_count") == confirmed
    assert _total(samples, "calc_publish_confirm_seconds_bucket", le="+Inf") == confirmed
    assert 0 < _total(samples, "calc_publish_confirm_seconds_sum") < confirmed * 10
    assert not [n for n, _ in samples if n.endswith("_created")]


async def test_connected_follows_a_lost_and_restored_connection(vhost_url: str) -> None:
    gauges = broker_gauges(CollectorRegistry())
    connection = await connect(settings_for(vhost_url), "test-connected-gauge")
    try:
        watch(connection, gauges)
        assert gauges.connected._value.get() == 1
        transport = connection.transport
        assert transport is not None
        await transport.connection.close(ConnectionError("test: connection lost"))
        for _ in range(50):
            if gauges.connected._value.get() == 0:
                break
            await asyncio.sleep(0.02)
        assert gauges.connected._value.get() == 0
        await asyncio.wait_for(connection.connected.wait(), 30)
        for _ in range(250):  # the reconnect callback runs once the channels are restored
            if gauges.connected._value.get() == 1:
                break
            await asyncio.sleep(0.02)
        assert gauges.connected._value.get() == 1
        (blocked,) = [s.value for f in [gauges.blocked.collect()[0]] for s in f.samples]
        assert blocked == 0
    finally:
        await connection.close()
    assert gauges.connected._value.get() == 0  # closed on purpose: not connected either
