"""What goes wrong while building or publishing an outcome: a request whose outcome cannot carry its
event_id is one MALFORMED_MESSAGE; a broker that refuses the outcome stops the consumer (exit 2) with
nothing acked and nothing lost."""

from __future__ import annotations

import uuid
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

import pytest

from messaging import codec, topology
from tests.integration.pipeline import (
    collect,
    declare,
    publish_raw,
    queue_depth,
    service_env,
    settings_for,
    start_process,
    stop_process,
    wait_for_line,
)
from tests.support.broker import Broker


async def test_an_event_id_past_255_bytes_without_correlation_id_is_malformed_once(
        vhost_url: str, tmp_path: Path) -> None:
    await declare(settings_for(vhost_url))
    long_ids = [f"{i:03d}-" + "é" * 140 for i in range(20)]  # 284 bytes of UTF-8 each
    for event_id in long_ids:
        request = codec.build_request(1, [1.0, 2.0], "long", event_id=event_id)
        await publish_raw(vhost_url, request.SerializeToString(), topology.requested_key("add"))
    with_correlation = codec.build_request(1, [1.0, 2.0], "long", event_id="x" * 300)
    await publish_raw(vhost_url, with_correlation.SerializeToString(), topology.requested_key("add"),
                      correlation_id="c-1")
    log = tmp_path / "consumer.log"
    consumer = start_process(["calc-consumer"], service_env(vhost_url), log)
    try:
        wait_for_line(log, "consuming")
        results = await collect(vhost_url, topology.AUDIT_QUEUE, 21, timeout=60, quiet=2.0)
    finally:
        assert stop_process(consumer) == 0
    failed = results.failed()
    assert sorted(e.request_event_id for e in failed) == sorted(long_ids)  # each once
    assert {codec.reason_name(e.reason) for e in failed} == {"MALFORMED_MESSAGE"}
    assert all("cannot stand in for it" in e.detail for e in failed)
    assert all(m.correlation_id is None for m in results.messages if m.type == codec.TYPE_FAILED)
    # a correlation_id of its own: the long event_id is no obstacle, the request completes
    assert [(e.request_event_id, e.result) for e in results.completed()] == [("x" * 300, 3.0)]
    assert await queue_depth(vhost_url, topology.DLQ) == 20
    text = log.read_text(errors="replace")
    assert "Traceback" not in text and "unexpected error" not in text


def _url_as(url: str, user: str, password: str) -> str:
    parts = urlsplit(url)
    netloc = f"{quote(user)}:{quote(password)}@{parts.hostname}:{parts.port or 5672}"
    return urlunsplit((parts.scheme, netloc, parts.path, "", ""))


@pytest.mark.slow
async def test_a_refused_outcome_stops_the_consumer_with_exit_2_and_loses_nothing(
        broker: Broker, vhost_url: str, tmp_path: Path) -> None:
    await declare(settings_for(vhost_url))
    vhost = urlsplit(vhost_url).path[1:]
    user, password = f"no-results-{uuid.uuid4().hex[:6]}", uuid.uuid4().hex
    broker.admin.add_user(user, password)
    try:
        # may read the work queues and write anywhere but calc.results
        broker.admin.set_permissions(vhost, user, configure="^$", write="^calc\\.(retry|dlx|requests).*",
                                     read="^calc\\.work\\..*")
        for i in range(30):
            request = codec.build_request(1, [float(i), 1.0], "refused", event_id=f"refused-{i}")
            await publish_raw(vhost_url, request.SerializeToString(), topology.requested_key("add"))
        log = tmp_path / "consumer.log"
        env = service_env(_url_as(vhost_url, user, password), CALC_DECLARE_TOPOLOGY="false")
        consumer = start_process(["calc-consumer"], env, log)
        try:
            code = consumer.wait(60)
        finally:
            stop_process(consumer)
        text = log.read_text(errors="replace")
        assert code == 2, text[-3000:]
        errors = [line for line in text.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and "refused" in errors[0] and "calc.results" in errors[0], text[-3000:]
        assert "unexpected error" not in text  # (aiormq logs its own traceback of the closed channel)
        assert "retry scheduled" not in text  # a refusal is not retried as if transient
    finally:
        broker.admin.delete_user(user)
    # nothing acked, nothing dead-lettered: all 30 still wait in the work queue
    assert await queue_depth(vhost_url, "calc.work.basic") == 30
    assert await queue_depth(vhost_url, topology.DLQ) == 0
