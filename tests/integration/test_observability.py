"""Metrics scraped after real traffic match what happened; JSON logs trace one id across services."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import urllib.request
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from messaging import topology
from tests.integration.pipeline import (
    BIN,
    Collected,
    collect,
    queue_depth,
    service_env,
    start_process,
    stop_process,
    wait_for_line,
)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def _total(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str,
           **match: str) -> float:
    return sum(v for (n, labels), v in samples.items()
               if n == name and all((k, want) in labels for k, want in match.items()))

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


async def bulk_through_a_consumer(vhost_url: str, tmp_path: Path, count: int, seed: int,
                                  share: float) -> tuple[dict[str, str], Collected, Samples]:
    """A consumer serving /metrics, a bulk of `count` through it; its env, the results, a scrape."""
    port = _free_port()
    env = service_env(vhost_url, CALC_METRICS_PORT=str(port), CALC_AUDIT_MAX_LENGTH="10000")
    consumer = start_process(["calc-consumer"], env, tmp_path / "consumer.log")
    try:
        wait_for_line(tmp_path / "consumer.log", "http listening")
        bulk = subprocess.run([str(BIN / "calc-producer"), "bulk", "--count", str(count), "--seed",
                               str(seed), "--failure-share", str(share)],
                              env={**env, "CALC_METRICS_PORT": "0"},
                              capture_output=True, text=True, timeout=120, check=False)
        assert bulk.returncode == 0, bulk.stderr
        results = await collect(vhost_url, topology.AUDIT_QUEUE, count, timeout=60)
        samples = _scrape(port)
    finally:
        assert stop_process(consumer) == 0
    return env, results, samples



async def test_consumer_metrics_count_what_happened(vhost_url: str, tmp_path: Path) -> None:
    _, results, samples = await bulk_through_a_consumer(vhost_url, tmp_path, 300, 3, 0.2)
    dlq = await collect(vhost_url, topology.DLQ, len(results.failed()), timeout=30)
    completed, failed = len(results.completed()), len(results.failed())
    assert completed + failed == 300 and failed == len(dlq.messages) > 0
    assert _total(samples, "calc_consumer_messages_total", outcome="completed") == completed
    assert _total(samples, "calc_consumer_messages_total", outcome="failed") == failed
    assert _total(samples, "calc_consumer_failures_total") == failed
    by_reason = {dict(labels)["reason"]: v for (n, labels), v in samples.items()
                 if n == "calc_consumer_failures_total"}
    assert set(by_reason) <= {"DIVISION_BY_ZERO", "DOMAIN_ERROR", "OVERFLOW"}
    assert _total(samples, "calc_publish_outcomes_total", outcome="confirmed",
                  exchange="calc.results") == 300
    assert _total(samples, "calc_consumer_processing_seconds_count") == 300
    assert _total(samples, "calc_consumer_request_age_seconds_count") == completed
    assert _total(samples, "calc_consumer_in_flight") == 0


async def test_the_dlq_gauges_add_up_to_what_the_consumer_dead_lettered(vhost_url: str,
                                                                      tmp_path: Path) -> None:
    """calc_dlq_messages{reason,operation} (the inspector's scan) against the consumer's counters."""
    inspector_port = _free_port()
    env, results, consumed = await bulk_through_a_consumer(vhost_url, tmp_path, 200, 11, 0.3)
    failed = len(results.failed())
    assert len(results.completed()) + failed == 200 and failed > 0
    for _ in range(100):  # a rejection reaches calc.dlq a moment after its result is confirmed
        if await queue_depth(vhost_url, topology.DLQ) >= failed:
            break
        await asyncio.sleep(0.1)
    assert await queue_depth(vhost_url, topology.DLQ) == failed
    inspector = start_process(["dlq-inspector", "serve"], {
        **env, "CALC_INSPECTOR_PORT": str(inspector_port), "CALC_INSPECTOR_INTERVAL": "1"},
        tmp_path / "inspector.log")
    try:
        wait_for_line(tmp_path / "inspector.log", "dlq report")  # one scan finished
        scraped = _scrape(inspector_port)
    finally:
        assert stop_process(inspector) == 0
    series = [v for (n, _), v in scraped.items() if n == "calc_dlq_messages"]
    assert len(series) > 1 and sum(series) == failed  # sum(calc_dlq_messages): the DLQ's size
    assert not any(n.startswith("calc_dlq_messages_by_") for n, _ in scraped)
    for (name, labels), count in consumed.items():
        label = dict(labels)
        if name == "calc_consumer_failures_total":
            assert _total(scraped, "calc_dlq_messages", reason=label["reason"]) == count, label
        if name == "calc_consumer_messages_total" and label["outcome"] == "failed":
            assert _total(scraped, "calc_dlq_messages", operation=label["operation"]) == count, label
    assert _total(consumed, "calc_consumer_failures_total") == failed
    assert _total(scraped, "calc_dlq_scans_total") >= 1


async def test_a_running_bulk_serves_its_metrics(vhost_url: str, tmp_path: Path) -> None:
    port = _free_port()
    env = service_env(vhost_url, CALC_METRICS_PORT=str(port), CALC_AUDIT_MAX_LENGTH="10000")
    count = 2_000
    bulk = start_process(["calc-producer", "bulk", "--count", str(count), "--rate", "500", "--seed", "5",
                          "--json"], env, tmp_path / "bulk.log")
    try:
        wait_for_line(tmp_path / "bulk.log", "http listening")
        during = _scrape(port)
        while _total(during, "calc_producer_confirmed_total") == 0:  # the first confirms
            during = _scrape(port)
        assert bulk.wait(60) == 0, (tmp_path / "bulk.log").read_text()[-2000:]
    finally:
        if bulk.poll() is None:
            bulk.kill()
    summary = json.loads((tmp_path / "bulk.log").read_text().strip().splitlines()[-1])
    assert summary["confirmed"] == count
    # scraped mid-run (4 s at 500/s): some confirmed, not all; published never behind confirmed
    confirmed = _total(during, "calc_producer_confirmed_total")
    assert 0 < confirmed < count
    assert _total(during, "calc_producer_published_total") >= confirmed
    assert _total(during, "calc_publish_outcomes_total", outcome="confirmed",
                  exchange="calc.requests") == confirmed
    assert await queue_depth(vhost_url, topology.work_queue("basic")) + \
        await queue_depth(vhost_url, topology.work_queue("heavy")) == count


async def test_json_logs_trace_one_request_across_services(vhost_url: str, tmp_path: Path) -> None:
    env = service_env(vhost_url, CALC_LOG_FORMAT="json")
    log = tmp_path / "consumer.log"
    consumer = start_process(["calc-consumer"], env, log)
    try:
        wait_for_line(log, '"consuming"')
        send = subprocess.run([str(BIN / "calc-producer"), "send", "divide", "1", "0",
                               "--correlation-id", "trace-me"], env=env, capture_output=True,
                              text=True, timeout=60, check=True)
        event_id = send.stdout.strip()
        wait_for_line(log, event_id)
    finally:
        assert stop_process(consumer) == 0
    lines = [json.loads(line) for line in (send.stderr + log.read_text()).splitlines() if line]
    assert all({"ts", "level", "logger", "event"} <= set(line) for line in lines)
    mine = [line for line in lines if line.get("event_id") == event_id]
    assert [line["event"] for line in mine] == ["published", "failed"]
    assert all(line["correlation_id"] == "trace-me" for line in mine)
    assert mine[1]["reason"] == "DIVISION_BY_ZERO" and mine[1]["detail"] == "division by zero"
