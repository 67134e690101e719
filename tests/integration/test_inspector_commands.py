"""dlq-inspector against a real broker, with messages put in calc.dlq by the real consumer.

The inspector runs as a process (as people and CI run it); the consumer runs in this event loop so
a test can switch its injected transient fault on and off.
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import json
import os
import pty
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from asyncio.subprocess import Process
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aio_pika
import pytest
from prometheus_client.parser import text_string_to_metric_families

from calculator import Operation
from consumer.service import ConsumerService
from dlq_inspector.explain import OPERATION_CHOICES, explain
from dlq_inspector.reader import DlqScan
from messaging import codec, topology
from messaging.publisher import publish
from messaging.settings import Settings
from tests.integration.pipeline import (
    ROOT,
    publish_raw,
    queue_depth,
    running_consumer,
    service_env,
    settings_for,
)
from tests.support.broker import Broker, vhost_name

MAX_ATTEMPTS = 2
MIXED_TOTAL = 16  # what fill_mixed puts in the DLQ
INSPECTOR = str(Path(sys.executable).parent / "dlq-inspector")


# ---------------------------------------------------------------- helpers shared with the replay tests


def env_for(url: str, **extra: str) -> dict[str, str]:
    """The environment every process of a test shares (same bounds, same CALC_MAX_ATTEMPTS)."""
    return service_env(url, CALC_MAX_ATTEMPTS=str(MAX_ATTEMPTS), **extra)


def settings_of(url: str) -> Settings:
    return settings_for(url, max_attempts=MAX_ATTEMPTS)


def inspector(url: str, *args: str, timeout: float = 120.0, **extra: str) -> subprocess.CompletedProcess[str]:
    """Run `dlq-inspector ARGS` to completion (stdin is not a terminal)."""
    return subprocess.run([INSPECTOR, *args], env=env_for(url, **extra), cwd=ROOT, capture_output=True,
                          text=True, timeout=timeout, stdin=subprocess.DEVNULL, check=False)


def inspector_json(url: str, *args: str) -> Any:
    done = inspector(url, *args, "--json")
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@dataclass
class Faults:
    """The consumer's injected transient fault: requests whose `source` is in `sources` fail."""

    sources: set[str]

    def __call__(self, outcome: Any, attempt: int) -> bool:
        return outcome.request is not None and outcome.request.source in self.sources


@asynccontextmanager
async def consumer(url: str, faults: Faults | None = None) -> AsyncIterator[ConsumerService]:
    async with running_consumer(settings_of(url)) as service:
        if faults is not None:
            service.inject_fault = faults
        yield service


async def send(url: str, specs: Iterable[tuple[Operation | int, Sequence[float]]], source: str = "test",
               routing_key: str | None = None) -> list[str]:
    """Publish contract requests (confirmed) in order; returns their event_ids."""
    ids = []
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for operation, operands in specs:
            request = codec.build_request(operation, operands, source)
            key = routing_key or topology.requested_key(
                operation.word if isinstance(operation, Operation) else "add")
            await publish(channel, topology.REQUESTS_EXCHANGE, codec.request_message(request), key, 10)
            ids.append(request.event_id)
    finally:
        await connection.close()
    return ids


async def wait_depth(url: str, queue: str, count: int, timeout: float = 60.0) -> None:
    """Wait until `queue` holds exactly `count` ready messages (and stays so for a moment)."""
    deadline = time.monotonic() + timeout
    depth = -1
    while time.monotonic() < deadline:
        depth = await queue_depth(url, queue)
        if depth == count:
            await asyncio.sleep(0.3)
            if await queue_depth(url, queue) == count:
                return
        await asyncio.sleep(0.1)
    raise AssertionError(f"{queue} holds {depth} messages, expected {count}")


async def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Wait until `check()` holds (polled), or fail saying `what` did not happen."""
    deadline = time.monotonic() + timeout
    while True:
        if check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


async def start_inspector(url: str, args: Sequence[str], log: Path, **extra: str) -> Process:
    """`dlq-inspector ARGS` in the background, stdout and stderr to `log`."""
    with log.open("wb") as handle:
        return await asyncio.create_subprocess_exec(
            INSPECTOR, *args, env=env_for(url, **extra), cwd=ROOT, stdout=handle,
            stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL)


async def finish(process: Process, timeout: float = 30.0) -> int:
    try:
        return await asyncio.wait_for(process.wait(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


@dataclass(frozen=True)
class Seen:
    event_id: str
    reason: str
    body: bytes


async def peek(url: str, window: int = 1000) -> list[Seen]:
    """The DLQ in order, read with the inspector's own scan (non-destructive)."""
    settings = settings_of(url)
    connection = await aio_pika.connect(url)
    try:
        async with DlqScan(connection, window=window) as scan:
            out = []
            async for letter in scan.letters():
                e = explain(letter, settings.max_message_bytes, settings.max_attempts)
                out.append(Seen(e.event_id, e.reason, e.letter.body))
            assert scan.complete
            return out
    finally:
        await connection.close()


async def drain(url: str, queue: str = topology.DLQ) -> list[bytes]:
    """Take every message (destructive, basic.get): the independent check of what a queue held."""
    bodies = []
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        q = await channel.get_queue(queue, ensure=False)
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            bodies.append(message.body)
    finally:
        await connection.close()
    return bodies


async def completed_ids(url: str) -> Counter[str]:
    """request_event_ids of every CalculationCompleted in calc.results.audit (taken from it)."""
    out: Counter[str] = Counter()
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        q = await channel.get_queue(topology.AUDIT_QUEUE, ensure=False)
        while (message := await q.get(no_ack=True, fail=False)) is not None:
            if message.type == codec.TYPE_COMPLETED:
                out[codec.decode_completed(message.body).request_event_id] += 1
    finally:
        await connection.close()
    return out


async def expire_in_work_queue(url: str, count: int) -> list[str]:
    """Requests that die of TTL in calc.work.basic (no consumer running): x-death `expired`."""
    ids = []
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
        for _ in range(count):
            request = codec.build_request(Operation.ADD, [1, 2], "ttl")
            message = codec.request_message(request)
            message.properties.expiration = "50"  # milliseconds
            await publish(channel, topology.REQUESTS_EXCHANGE, message, topology.requested_key("add"), 10)
            ids.append(request.event_id)
        # A quorum queue drops expired messages when they reach the head: a consume (or get) does it.
        queue = await channel.get_queue(topology.work_queue("basic"), ensure=False)
        await asyncio.sleep(0.3)
        assert await queue.get(no_ack=False, fail=False) is None
    finally:
        await connection.close()
    return ids


async def exceed_delivery_limit(url: str, count: int) -> list[str]:
    """Requests requeued past calc.work.basic's delivery limit: x-death `delivery_limit`."""
    ids = await send(url, [(Operation.ADD, (2, 2))] * count, source="crashloop")
    limit = settings_of(url).delivery_limit
    connection = await aio_pika.connect(url)
    try:
        channel = await connection.channel()
        queue = await channel.get_queue(topology.work_queue("basic"), ensure=False)
        for _ in range((limit + 2) * count):
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            await message.reject(requeue=True)  # a failed delivery: counted by every version
    finally:
        await connection.close()
    return ids


# Permanent failures the consumer rejects, each with the reason the contract gives it
# (docs/contract.md, FailureReason).
PERMANENT: dict[str, list[tuple[Operation | int, Sequence[float]]]] = {
    "DIVISION_BY_ZERO": [(Operation.DIVIDE, (1.0, 0.0)), (Operation.MODULO, (7.0, 0.0)),
                         (Operation.DIVIDE, (3.0, 0.0))],
    "DOMAIN_ERROR": [(Operation.SQRT, (-4.0,)), (Operation.FACTORIAL, (3.5,))],
    "OVERFLOW": [(Operation.POWER, (10.0, 400.0)), (Operation.FACTORIAL, (171.0,))],
    "INVALID_ARGUMENTS": [(Operation.ADD, (1.0, 2.0, 3.0))],
}


async def fill_mixed(url: str) -> dict[str, list[str]]:
    """Every kind of dead letter, put there by the real consumer or the broker; ids by reason."""
    await asyncio.sleep(0)
    by_reason: dict[str, list[str]] = {}
    async with consumer(url) as _service:
        pass  # declares the topology
    by_reason["EXPIRED"] = await expire_in_work_queue(url, 2)
    by_reason["DELIVERY_LIMIT"] = await exceed_delivery_limit(url, 1)
    await wait_depth(url, topology.DLQ, 3)
    faults = Faults({"flaky"})
    async with consumer(url, faults):
        for reason, specs in PERMANENT.items():
            by_reason[reason] = await send(url, specs)
        by_reason["RETRIES_EXHAUSTED"] = await send(url, [(Operation.ADD, (5.0, 6.0))] * 3, "flaky")
        by_reason["UNKNOWN_OPERATION"] = await send(url, [(42, (1.0, 2.0))])
        garbage = b"\xff\x00 not a protobuf"
        await publish_raw(url, garbage, topology.requested_key("add"), message_id="garbage-1")
        by_reason["MALFORMED_MESSAGE"] = ["garbage-1"]
        await send(url, [(Operation.ADD, (1.0, 1.0))] * 4)  # these complete: not in the DLQ
        await wait_depth(url, topology.DLQ, sum(len(ids) for ids in by_reason.values()))
    return by_reason


# ---------------------------------------------------------------- tests


async def test_report_counts_by_reason_match_what_was_sent(vhost_url: str) -> None:
    sent = await fill_mixed(vhost_url)
    report = inspector_json(vhost_url, "report")
    expected = {reason: len(ids) for reason, ids in sent.items()}
    assert report["by_reason"] == expected
    assert report["total"] == sum(expected.values()) == MIXED_TOTAL
    assert sum(report["by_operation"].values()) == report["total"]
    assert report["by_operation"]["undecodable"] == 1
    assert report["by_operation"]["operation 42"] == 1
    assert report["complete"] is True and report["expected"] == report["total"]
    assert report["oldest_age_seconds"] is not None
    # every listed message carries the reason of the request it was sent as
    rows = [json.loads(line) for line in inspector(vhost_url, "list", "--limit", "0", "--json")
            .stdout.splitlines()]
    assert {(row["event_id"], row["reason"]) for row in rows} == {
        (event_id, reason) for reason, ids in sent.items() for event_id in ids}
    exhausted = [row for row in rows if row["reason"] == "RETRIES_EXHAUSTED"]
    assert {row["attempts"] for row in exhausted} == {MAX_ATTEMPTS}
    # the table shows the same numbers to people
    table = inspector(vhost_url, "report")
    assert table.returncode == 0
    assert re.search(r"^DIVISION_BY_ZERO\s+3\s", table.stdout, re.M)
    assert f"calc.dlq: {MIXED_TOTAL} messages" in table.stdout
    # and the DLQ still holds all of them
    assert await queue_depth(vhost_url, topology.DLQ) == MIXED_TOTAL


async def test_fifty_peeks_change_nothing(vhost_url: str) -> None:
    async with consumer(vhost_url):
        sent = await send(vhost_url, [(Operation.DIVIDE, (float(i), 0.0)) for i in range(150)]
                          + [(Operation.SQRT, (-float(i) - 1,)) for i in range(50)])
        await wait_depth(vhost_url, topology.DLQ, 200)
    baseline = await peek(vhost_url)
    assert sorted(s.event_id for s in baseline) == sorted(sent)
    for round_ in range(50):
        # small windows force many channel rotations; the CLI peeks now and then
        if round_ % 10 == 0:
            assert inspector(vhost_url, "report", "--json").returncode == 0
            assert inspector(vhost_url, "list", "--limit", "5").returncode == 0
        now = await peek(vhost_url, window=(7, 64, 1000)[round_ % 3])
        assert now == baseline, f"peek {round_} changed the DLQ"
    depth = await queue_depth(vhost_url, topology.DLQ)
    assert depth == 200
    # the independent check: taking every message gives the same bodies in the same order
    assert await drain(vhost_url) == [s.body for s in baseline]


async def test_list_filters_and_show(vhost_url: str) -> None:
    sent = await fill_mixed(vhost_url)
    rows = [json.loads(line) for line in inspector(
        vhost_url, "list", "--reason", "division_by_zero", "--json").stdout.splitlines()]
    assert sorted(r["event_id"] for r in rows) == sorted(sent["DIVISION_BY_ZERO"])
    rows = [json.loads(line) for line in inspector(
        vhost_url, "list", "--operation", "sqrt", "--operation", "factorial", "--json").stdout.splitlines()]
    assert Counter(r["reason"] for r in rows) == Counter({"DOMAIN_ERROR": 2, "OVERFLOW": 1})
    limited = inspector(vhost_url, "list", "--limit", "3")
    assert limited.returncode == 0
    assert "3 messages shown (stopped at --limit 3" in limited.stdout

    target = sent["DIVISION_BY_ZERO"][1]
    shown = inspector(vhost_url, "show", target, "--json")
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["event_id"] == target and record["reason"] == "DIVISION_BY_ZERO"
    assert record["request"]["operation"] == "OPERATION_MODULO"
    assert record["original_routing_key"] == "calc.requested.modulo"
    assert record["properties"]["app_id"] == codec.APP_PRODUCER
    assert [d["reason"] for d in record["deaths"]] == ["rejected"]
    assert record["deaths"][0]["queue"] == "calc.work.basic"
    text = inspector(vhost_url, "show", sent["DELIVERY_LIMIT"][0])
    assert "DELIVERY_LIMIT" in text.stdout and "delivery_limit" in text.stdout
    missing = inspector(vhost_url, "show", "no-such-event")
    assert missing.returncode == 4
    assert "not in calc.dlq: no-such-event" in missing.stderr
    assert await queue_depth(vhost_url, topology.DLQ) == MIXED_TOTAL


async def test_purge_by_reason_removes_only_that_reason(vhost_url: str) -> None:
    sent = await fill_mixed(vhost_url)
    before = await peek(vhost_url)
    refused = inspector(vhost_url, "purge", "--reason", "DIVISION_BY_ZERO")
    assert refused.returncode == 2 and "without --yes" in refused.stderr
    dry = inspector(vhost_url, "purge", "--reason", "DIVISION_BY_ZERO", "--dry-run")
    assert dry.returncode == 0 and dry.stdout.count("would_purge ") == 3
    assert await peek(vhost_url) == before

    done = inspector(vhost_url, "purge", "--reason", "DIVISION_BY_ZERO", "--yes")
    assert done.returncode == 0, done.stderr
    purged = {line.split()[1] for line in done.stdout.splitlines() if line.startswith("purged ")}
    assert purged == set(sent["DIVISION_BY_ZERO"])
    after = await peek(vhost_url)
    assert after == [s for s in before if s.reason != "DIVISION_BY_ZERO"]  # the rest, in order
    report = inspector_json(vhost_url, "report")
    assert "DIVISION_BY_ZERO" not in report["by_reason"]
    assert report["total"] == MIXED_TOTAL - 3

    by_id = inspector(vhost_url, "purge", "--id", sent["OVERFLOW"][0], "missing-id", "--yes")
    assert by_id.returncode == 4 and "not in calc.dlq: missing-id" in by_id.stderr
    assert [s.event_id for s in await peek(vhost_url)] == [
        s.event_id for s in after if s.event_id != sent["OVERFLOW"][0]]


async def test_export_then_counts_match(vhost_url: str, tmp_path: Path) -> None:
    await fill_mixed(vhost_url)
    target = tmp_path / "dlq.jsonl"
    done = inspector(vhost_url, "export", str(target))
    assert done.returncode == 0, done.stderr
    assert f"exported {MIXED_TOTAL} messages" in done.stderr
    lines = [json.loads(line) for line in target.read_text().splitlines()]
    live = inspector_json(vhost_url, "report")
    assert len(lines) == live["total"] == MIXED_TOTAL
    assert dict(Counter(line["reason"] for line in lines)) == live["by_reason"]
    # bodies byte for byte, in queue order
    bodies = [s.body for s in await peek(vhost_url)]
    assert [base64.b64decode(line["body_base64"]) for line in lines] == bodies
    # the offline report of the file equals the live one
    offline = inspector_json(vhost_url, "report", "--file", str(target))
    for key in ("total", "by_reason", "by_operation", "by_routing_key", "oldest_death", "newest_death"):
        assert offline[key] == live[key], key
    rows = inspector(vhost_url, "list", "--file", str(target), "--reason", "EXPIRED", "--json")
    assert len(rows.stdout.splitlines()) == 2
    only = tmp_path / "overflow.jsonl"
    assert inspector(vhost_url, "export", str(only), "--reason", "OVERFLOW").returncode == 0
    assert len(only.read_text().splitlines()) == 2
    assert await queue_depth(vhost_url, topology.DLQ) == MIXED_TOTAL


def _metric(text: str, name: str, labels: str = "") -> float:
    match = re.search(rf"^{re.escape(name)}{re.escape(labels)} (\S+)$", text, re.M)
    assert match, f"{name}{labels} not in metrics"
    return float(match.group(1))


def _dlq_series(text: str) -> dict[tuple[str, str], float]:
    return {(s.labels["reason"], s.labels["operation"]): s.value
            for family in text_string_to_metric_families(text) if family.name == "calc_dlq_messages"
            for s in family.samples}


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


async def test_serve_metrics_match_the_report(vhost_url: str, tmp_path: Path) -> None:
    await fill_mixed(vhost_url)
    log = tmp_path / "serve.log"
    process = await start_inspector(vhost_url, ["serve"], log, CALC_INSPECTOR_PORT="0",
                                    CALC_INSPECTOR_INTERVAL="1")
    try:
        await eventually(lambda: "http listening port=" in log.read_text(), "serve listens")
        found = re.search(r"http listening port=(\d+)", log.read_text())
        assert found, log.read_text()
        base = f"http://127.0.0.1:{found.group(1)}"
        await eventually(lambda: _get(base + "/healthz")[0] == 200, "serve becomes healthy")
        status, health = _get(base + "/healthz")
        assert status == 200 and json.loads(health)["status"] == "ok"
        cli = inspector_json(vhost_url, "report")
        status, body = _get(base + "/report")
        served = json.loads(body)
        assert status == 200
        assert served["by_reason"] == cli["by_reason"] and served["total"] == cli["total"] == MIXED_TOTAL
        _, metrics = _get(base + "/metrics")
        series = _dlq_series(metrics)
        assert sum(series.values()) == MIXED_TOTAL  # sum(calc_dlq_messages): the DLQ's size
        by_reason: Counter[str] = Counter()
        by_operation: Counter[str] = Counter()
        for (reason, operation), count in series.items():
            by_reason[reason] += int(count)
            by_operation[operation] += int(count)
        assert +by_reason == cli["by_reason"] and by_reason["MAXLEN"] == 0  # zeros have series too
        # the report names an operation outside the enum ("operation 42"); its series is `unknown`
        grouped: Counter[str] = Counter()
        for operation, count in cli["by_operation"].items():
            grouped[operation if operation in OPERATION_CHOICES else "unknown"] += count
        assert +by_operation == +grouped and series["UNKNOWN_OPERATION", "unknown"] == 1
        assert _metric(metrics, "calc_dlq_oldest_age_seconds") >= cli["oldest_age_seconds"] - 1
        assert _get(base + "/nope")[0] == 404
        assert "dlq report" in log.read_text()  # the periodic report is logged
        assert await queue_depth(vhost_url, topology.DLQ) == MIXED_TOTAL  # serving peeks, never takes
        process.send_signal(signal.SIGTERM)
    finally:
        code = await finish(process)
    assert code == 0, log.read_text()


async def test_watch_refreshes_until_interrupted(vhost_url: str, tmp_path: Path) -> None:
    async with consumer(vhost_url):
        await send(vhost_url, [(Operation.DIVIDE, (1.0, 0.0))])
        await wait_depth(vhost_url, topology.DLQ, 1)
    out = tmp_path / "watch.out"
    process = await start_inspector(vhost_url, ["watch", "--interval", "0.3"], out)
    try:
        await eventually(lambda: out.read_text().count("calc.dlq: 1 message ") >= 2, "two refreshes")
        async with consumer(vhost_url):
            await send(vhost_url, [(Operation.SQRT, (-1.0,))])
            await eventually(lambda: "calc.dlq: 2 messages" in out.read_text(), "the new message shows")
        assert "(+1 since last)" in out.read_text()
        process.send_signal(signal.SIGINT)
    finally:
        code = await finish(process)
    assert code == 0, out.read_text()
    await wait_depth(vhost_url, topology.DLQ, 2)


async def test_failures_exit_with_a_clear_message(vhost_url: str) -> None:
    down = inspector("amqp://guest:guest@127.0.0.1:1/x", "report", "--connect-timeout", "1")
    assert down.returncode == 1
    assert "not reachable" in down.stderr and "Traceback" not in down.stderr
    no_vhost = inspector(vhost_url + "-missing", "report")
    assert no_vhost.returncode == 2 and "refused" in no_vhost.stderr
    bad_reason = inspector(vhost_url, "replay", "--reason", "bogus", "--yes")
    assert bad_reason.returncode == 2
    assert "unknown reason 'bogus'" in bad_reason.stderr and "RETRIES_EXHAUSTED" in bad_reason.stderr
    nothing = inspector(vhost_url, "replay", "--yes")
    assert nothing.returncode == 2
    assert "one of the arguments --id --reason --all is required" in nothing.stderr
    config = inspector(vhost_url, "report", CALC_PREFETCH="0")
    assert config.returncode == 2 and "CALC_PREFETCH" in config.stderr
    empty = inspector(vhost_url, "report", "--fail-if-any")
    assert empty.returncode == 0 and "calc.dlq: 0 messages" in empty.stdout
    async with consumer(vhost_url):
        await send(vhost_url, [(Operation.DIVIDE, (1.0, 0.0))])
        await wait_depth(vhost_url, topology.DLQ, 1)
    assert inspector(vhost_url, "report", "--fail-if-any").returncode == 3
    assert inspector(vhost_url, "replay", "--all").returncode == 2  # no --yes, stdin not a terminal
    assert await queue_depth(vhost_url, topology.DLQ) == 1


async def test_a_scan_beside_another_reader_says_it_is_incomplete(vhost_url: str) -> None:
    async with consumer(vhost_url):
        await send(vhost_url, [(Operation.DIVIDE, (float(i), 0.0)) for i in range(30)])
        await wait_depth(vhost_url, topology.DLQ, 30)
    connection = await aio_pika.connect(vhost_url)
    try:
        async with DlqScan(connection, window=10) as other:
            held = 0
            async for _delivery in other.deliveries():
                held += 1
                if held == 10:
                    break
            report = inspector(vhost_url, "report", "--json")
            data = json.loads(report.stdout)
            assert data["complete"] is False and data["total"] == 20
            assert "other consumers" in report.stderr
    finally:
        await connection.close()
    assert inspector_json(vhost_url, "report")["total"] == 30
    assert len(await peek(vhost_url)) == 30


def deployed_permissions(user: str) -> dict[str, str]:
    """The permissions deploy/rabbitmq/generate_definitions.py gives `user` in production."""
    path = ROOT / "deploy" / "rabbitmq" / "generate_definitions.py"
    spec = importlib.util.spec_from_file_location("generate_definitions", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    [entry] = [u for u in module.users() if u["name"] == user]
    return {key: entry[key] for key in ("configure", "write", "read")}


async def test_works_with_the_deployed_least_privilege_user(broker: Broker, vhost_url: str) -> None:
    async with consumer(vhost_url):
        ids = await send(vhost_url, [(Operation.DIVIDE, (1.0, 0.0)), (Operation.SQRT, (-1.0,))])
        await wait_depth(vhost_url, topology.DLQ, 2)
    name, password = f"inspector-{uuid.uuid4().hex[:8]}", uuid.uuid4().hex
    broker.admin.add_user(name, password)
    try:
        broker.admin.set_permissions(vhost_name(vhost_url), name, **deployed_permissions("calc-inspector"))
        parts = urlsplit(vhost_url)
        url = urlunsplit(parts._replace(netloc=f"{name}:{password}@{parts.hostname}:{parts.port}"))
        refused = inspector(url, "report")  # declaring needs `configure`, which it does not have
        assert refused.returncode == 2 and "CALC_DECLARE_TOPOLOGY=false" in refused.stderr
        assert inspector(url, "report", CALC_DECLARE_TOPOLOGY="false").returncode == 0
        replayed = inspector(url, "replay", "--id", ids[1], "--yes", CALC_DECLARE_TOPOLOGY="false")
        assert replayed.returncode == 0, replayed.stderr
        purged = inspector(url, "purge", "--id", ids[0], "--yes", CALC_DECLARE_TOPOLOGY="false")
        assert purged.returncode == 0, purged.stderr
        # no consumer ran: the replayed request waits in its work queue, the purged one is gone
        assert await queue_depth(vhost_url, topology.DLQ) == 0
        assert await queue_depth(vhost_url, topology.work_queue("heavy")) == 1
    finally:
        broker.admin.delete_user(name)


def on_a_terminal(url: str, args: Sequence[str], answer: str) -> subprocess.CompletedProcess[str]:
    """Run the inspector with a terminal as stdin that answers `answer` to its question."""
    controller, terminal = pty.openpty()
    try:
        os.write(controller, answer.encode() + b"\n")
        return subprocess.run([INSPECTOR, *args], env=env_for(url), cwd=ROOT, stdin=terminal,
                              capture_output=True, text=True, timeout=120, check=False)
    finally:
        os.close(controller)
        os.close(terminal)


async def test_destructive_commands_ask_on_a_terminal(vhost_url: str) -> None:
    async with consumer(vhost_url):
        ids = await send(vhost_url, [(Operation.DIVIDE, (1.0, 0.0)), (Operation.SQRT, (-1.0,))])
        await wait_depth(vhost_url, topology.DLQ, 2)
    declined = on_a_terminal(vhost_url, ["purge", "--all"], "n")
    assert declined.returncode == 1
    assert "Delete every message of the 2 messages in calc.dlq for good? [y/N]" in declined.stdout
    assert "purge aborted; nothing changed" in declined.stderr
    assert await queue_depth(vhost_url, topology.DLQ) == 2
    accepted = on_a_terminal(vhost_url, ["purge", "--reason", "DOMAIN_ERROR"], "y")
    assert accepted.returncode == 0, accepted.stderr
    assert f"purged {ids[1]} DOMAIN_ERROR" in accepted.stdout
    assert [s.event_id for s in await peek(vhost_url)] == [ids[0]]


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    # The consumer of these tests is configured by settings_of(); nothing may leak from the shell.
    for key in [k for k in os.environ if k.startswith("CALC_")]:
        monkeypatch.delenv(key)
