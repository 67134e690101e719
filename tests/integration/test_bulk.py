"""The services as processes: 10,000 mixed requests, full queues, SIGTERM, bad configuration."""

from __future__ import annotations

import asyncio
import subprocess
import time
from pathlib import Path

import pytest

from calculator import Operation
from messaging import codec, topology
from producer.generator import Spec
from tests.integration.pipeline import (
    BIN,
    collect,
    declare,
    producer,
    queue_depth,
    running_consumer,
    service_env,
    settings_for,
    start_process,
    stop_process,
    wait_for_line,
)
from tests.support.broker import Broker


@pytest.mark.slow
async def test_ten_thousand_requests_each_end_exactly_once(vhost_url: str, tmp_path: Path) -> None:
    count = 10_000
    env = service_env(vhost_url, CALC_AUDIT_MAX_LENGTH="50000", CALC_PREFETCH="500")
    consumer = start_process(["calc-consumer"], env, tmp_path / "consumer.log")
    try:
        wait_for_line(tmp_path / "consumer.log", "consuming")
        ids_file = tmp_path / "ids.txt"
        bulk = subprocess.run(
            [str(BIN / "calc-producer"), "bulk",
             "--count", str(count), "--seed", "7", "--failure-share", "0.1",
             "--ids-file", str(ids_file), "--json"],
            env=env, capture_output=True, text=True, timeout=300, check=False)
        assert bulk.returncode == 0, bulk.stderr[-2000:]
        assert '"confirmed": 10000' in bulk.stdout
        assert "bulk: 10000/10000 confirmed" in bulk.stderr  # the progress line
        sent = ids_file.read_text().split()
        assert len(sent) == len(set(sent)) == count
        results = await collect(vhost_url, topology.AUDIT_QUEUE, count, timeout=240, quiet=1.0)
        dlq = await collect(vhost_url, topology.DLQ, 1, timeout=30, quiet=1.0)
    finally:
        assert stop_process(consumer) == 0
    completed = [e.request_event_id for e in results.completed()]
    failed = [e.request_event_id for e in results.failed()]
    dead = [codec.decode_request(m.body).event_id for m in dlq.messages]
    assert len(completed) == len(set(completed)), "a request completed twice"
    assert len(dead) == len(set(dead)), "a request dead-lettered twice"
    assert set(completed).isdisjoint(dead)
    assert set(completed) | set(dead) == set(sent)
    assert len(completed) + len(dead) == count
    assert sorted(failed) == sorted(dead)  # every DLQ entry has its CalculationFailed
    assert 500 < len(dead) < 1500  # about the 10% built to fail
    for name in ("calc.work.basic", "calc.work.heavy"):
        assert await queue_depth(vhost_url, name) == 0


async def test_full_queue_nacks_are_retried_until_drained(vhost_url: str) -> None:
    """A work queue bounded at 5 rejects publishes; the producer backs off and loses nothing."""
    settings = settings_for(vhost_url, work_queue_max_length=5, publish_in_flight=20)
    async with producer(settings) as p:
        specs = [Spec(Operation.ADD, (float(i), 1.0)) for i in range(30)]
        bulk = asyncio.create_task(p.bulk(iter(specs), len(specs), None, progress=False))
        await asyncio.sleep(2.0)
        assert not bulk.done(), "30 publishes into a queue of 5 cannot all be confirmed yet"
        # quorum queues enforce the bound approximately (publishes already in flight get in)
        assert await queue_depth(vhost_url, "calc.work.basic") < 30
        assert p.retries > 0, "the full queue nacked nothing"
        async with running_consumer(settings):
            report = await asyncio.wait_for(bulk, 60)
            results = await collect(vhost_url, topology.AUDIT_QUEUE, 30, timeout=60)
    assert report.retried > 0
    assert report.confirmed == 30 and sorted(report.event_ids) == sorted(
        e.request_event_id for e in results.completed())
    assert sorted(e.result for e in results.completed()) == [float(i + 1) for i in range(30)]


async def test_sigterm_finishes_in_flight_work_and_exits_zero(vhost_url: str, tmp_path: Path) -> None:
    settings = settings_for(vhost_url)
    async with producer(settings) as p:
        report = await p.bulk((Spec(Operation.SQRT, (float(i),)) for i in range(3000)), 3000, None,
                              progress=False)
    env = service_env(vhost_url, CALC_PREFETCH="200")
    log = tmp_path / "consumer.log"
    consumer = start_process(["calc-consumer"], env, log)
    wait_for_line(log, "completed")
    assert stop_process(consumer) == 0
    text = log.read_text()
    assert "shutting down" in text and "stopped" in text
    done = text.count(" completed ")
    left = await queue_depth(vhost_url, "calc.work.heavy")
    results = await collect(vhost_url, topology.AUDIT_QUEUE, done)
    # every message was either completed (and acked) or is back in the queue: none unacked, none lost
    assert len(results.completed()) == done and done + left == report.confirmed == 3000
    assert await queue_depth(vhost_url, topology.DLQ) == 0


def test_bad_configuration_is_a_clear_error(tmp_path: Path) -> None:
    env = service_env("amqp://guest:guest@127.0.0.1:5672/", CALC_PREFETCH="many")
    result = subprocess.run([str(BIN / "calc-consumer")],
                            env=env, capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2
    assert "CALC_PREFETCH has an invalid value 'many'" in result.stderr


def test_unreachable_broker_fails_without_leaking_the_password(tmp_path: Path) -> None:
    env = service_env("amqp://guest:hunter2@127.0.0.1:1/", CALC_CONNECT_TIMEOUT="2")
    result = subprocess.run(
        [str(BIN / "calc-producer"), "send", "add", "1", "2"],
        env=env, capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 1
    assert "not reachable" in result.stderr and "hunter2" not in result.stderr + result.stdout


def test_send_rejects_an_unknown_operation() -> None:
    result = subprocess.run(
        [str(BIN / "calc-producer"), "send", "cube", "2"],
        capture_output=True, text=True, timeout=30, check=False)
    assert result.returncode == 2 and "invalid choice: 'cube'" in result.stderr


async def test_producer_run_publishes_periodically_with_failures_and_stops_on_sigterm(
        vhost_url: str, tmp_path: Path) -> None:
    env = service_env(vhost_url, CALC_INTERVAL="0.02", CALC_FAILURE_SHARE="0.5")
    consumer = start_process(["calc-consumer"], env, tmp_path / "consumer.log")
    wait_for_line(tmp_path / "consumer.log", "consuming")
    log = tmp_path / "producer.log"
    producer_process = start_process(["calc-producer", "run"], env, log)
    try:
        wait_for_line(log, "published")
        await asyncio.sleep(3)
    finally:
        assert stop_process(producer_process) == 0
    published = log.read_text().count(" published ")
    assert published > 20
    assert f"stopped sent={published}" in log.read_text()
    results = await collect(vhost_url, topology.AUDIT_QUEUE, published, timeout=60)
    assert stop_process(consumer) == 0
    completed, failed = len(results.completed()), len(results.failed())
    assert completed + failed == published
    assert failed == await queue_depth(vhost_url, topology.DLQ)
    assert 0.2 * published < failed < 0.8 * published  # CALC_FAILURE_SHARE=0.5


def test_wrong_password_fails_at_once_without_leaking_it(broker: Broker) -> None:
    url = broker.url_for("/").replace(f":{broker.password}@", ":not-the-password@")
    started = time.monotonic()
    result = subprocess.run([str(BIN / "calc-producer"), "send", "add", "1", "2"],
                            env=service_env(url), capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 2
    assert "wrong user or password" in result.stderr
    assert "not-the-password" not in result.stderr + result.stdout
    assert time.monotonic() - started < 20  # refused credentials are not retried for minutes


def test_missing_vhost_is_a_clear_error(broker: Broker) -> None:
    result = subprocess.run([str(BIN / "calc-consumer")], env=service_env(broker.url_for("no-such-vhost")),
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == 2
    assert "a vhost that does not exist" in result.stderr and "Traceback" not in result.stderr


async def test_publish_the_broker_forbids_is_an_error_not_a_retry_loop(vhost_url: str,
                                                                        broker: Broker) -> None:
    """A producer whose user may not write to calc.requests stops with an error at once."""
    vhost = vhost_url.rsplit("/", 1)[1]
    await declare(settings_for(vhost_url))
    user, password = f"ro-{vhost}", "ro-password"
    broker.admin.add_user(user, password)
    try:
        broker.admin.set_permissions(vhost, user, configure="^$", write="^$", read="^$")
        url = vhost_url.replace(f"{broker.username}:{broker.password}@", f"{user}:{password}@")
        started = time.monotonic()
        result = subprocess.run([str(BIN / "calc-producer"), "send", "add", "1", "2"],
                                env=service_env(url, CALC_DECLARE_TOPOLOGY="false"),
                                capture_output=True, text=True, timeout=60, check=False)
    finally:
        broker.admin.delete_user(user)
    assert result.returncode == 2, result.stderr
    assert "refused publishing to 'calc.requests'" in result.stderr
    assert time.monotonic() - started < 20
    assert await queue_depth(vhost_url, "calc.work.basic") == 0
