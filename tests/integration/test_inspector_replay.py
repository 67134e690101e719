"""dlq-inspector replay against a real broker: what it republishes completes, fails again, or stays."""

from __future__ import annotations

import asyncio
import json
import re
import signal
import time
from pathlib import Path

from calculator import Operation
from messaging import topology
from tests.integration.pipeline import publish_raw, queue_depth
from tests.integration.test_inspector_commands import (
    Faults,
    completed_ids,
    consumer,
    eventually,
    finish,
    inspector,
    inspector_json,
    peek,
    send,
    start_inspector,
    wait_depth,
)


async def wait_completed(url: str, ids: set[str], timeout: float = 60.0) -> dict[str, int]:
    """Collect completions from calc.results.audit until every id in `ids` completed."""
    seen: dict[str, int] = {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for event_id, n in (await completed_ids(url)).items():
            seen[event_id] = seen.get(event_id, 0) + n
        if ids <= seen.keys():
            return seen
        await asyncio.sleep(0.2)
    raise AssertionError(f"{len(ids - seen.keys())} of {len(ids)} never completed")


async def test_replay_of_retries_exhausted_completes_exactly_those(vhost_url: str) -> None:
    faults = Faults({"flaky"})
    async with consumer(vhost_url, faults):
        flaky = await send(vhost_url, [(Operation.MULTIPLY, (float(i), 2.0)) for i in range(20)], "flaky")
        zero = await send(vhost_url, [(Operation.DIVIDE, (float(i), 0.0)) for i in range(10)])
        await wait_depth(vhost_url, topology.DLQ, 30)
        await completed_ids(vhost_url)  # forget the failure events of the first pass
        before = await peek(vhost_url)
        assert {s.event_id for s in before if s.reason == "RETRIES_EXHAUSTED"} == set(flaky)

        dry = inspector(vhost_url, "replay", "--reason", "RETRIES_EXHAUSTED", "--dry-run")
        assert dry.returncode == 0, dry.stderr
        assert {line.split()[1] for line in dry.stdout.splitlines()
                if line.startswith("would_replay ")} == set(flaky)
        assert await peek(vhost_url) == before  # a dry run changes nothing

        faults.sources.clear()  # the transient cause is fixed
        done = inspector(vhost_url, "replay", "--reason", "retries_exhausted", "--yes", "--json")
        assert done.returncode == 0, done.stderr
        outcome = json.loads(done.stdout)
        assert outcome["done"] == outcome["selected"] == 20 and outcome["failed"] == []
        assert {m["event_id"] for m in outcome["messages"]} == set(flaky)
        assert {m["routing_key"] for m in outcome["messages"]} == {"calc.requested.multiply"}

        completed = await wait_completed(vhost_url, set(flaky))
        assert set(completed) == set(flaky)  # nothing else completed
        assert all(n == 1 for n in completed.values())
        await wait_depth(vhost_url, topology.DLQ, 10)
    after = await peek(vhost_url)
    assert after == [s for s in before if s.reason != "RETRIES_EXHAUSTED"]  # the rest stayed, in order
    assert {s.event_id for s in after} == set(zero)


async def test_replayed_division_by_zero_comes_back_with_the_same_reason(vhost_url: str) -> None:
    async with consumer(vhost_url):
        [target, other] = await send(vhost_url, [(Operation.DIVIDE, (1.0, 0.0)), (Operation.SQRT, (-2.0,))])
        await wait_depth(vhost_url, topology.DLQ, 2)
        first = json.loads(inspector(vhost_url, "show", target, "--json").stdout)

        done = inspector(vhost_url, "replay", "--id", target, "--yes")
        assert done.returncode == 0, done.stderr
        assert f"replayed {target} DIVISION_BY_ZERO calc.requested.divide" in done.stdout
        # it leaves, the consumer fails it again, and it comes back behind the other one
        deadline = time.monotonic() + 30
        order: list[str] = []
        while time.monotonic() < deadline:
            order = [s.event_id for s in await peek(vhost_url)]
            if order == [other, target]:
                break
            await asyncio.sleep(0.2)
        assert order == [other, target]
    again = json.loads(inspector(vhost_url, "show", target, "--json").stdout)
    assert again["reason"] == first["reason"] == "DIVISION_BY_ZERO"
    assert again["attempts"] == 1  # a replay starts the attempts afresh
    assert again["body_base64"] == first["body_base64"]
    assert again["properties"]["message_id"] == first["properties"]["message_id"] == target
    assert first["properties"]["app_id"] == "calc-producer"
    assert again["properties"]["app_id"] == "calc-dlq-inspector"  # the replay's publisher
    assert len(again["deaths"]) == 1 and again["deaths"][0]["count"] == 1  # the old x-death is gone
    report = inspector_json(vhost_url, "report")
    assert report["by_reason"] == {"DIVISION_BY_ZERO": 1, "DOMAIN_ERROR": 1}

    missing = inspector(vhost_url, "replay", "--id", "not-there", "--yes")
    assert missing.returncode == 4 and "not in calc.dlq: not-there" in missing.stderr


async def test_a_message_that_cannot_be_replayed_stays(vhost_url: str) -> None:
    async with consumer(vhost_url):
        pass  # declares the topology
    # dead-lettered with a key no work queue is bound to: its replay is returned, not queued
    await publish_raw(vhost_url, b"\x0a\x03abc", "calc.requested.nothing",
                        exchange=topology.DEAD_LETTER_EXCHANGE, message_id="abc")
    await wait_depth(vhost_url, topology.DLQ, 1)
    done = inspector(vhost_url, "replay", "--all", "--yes")
    assert done.returncode == 1
    assert "failed abc" in done.stderr and "routed" in done.stderr
    assert "1 message not replayed; they stay in calc.dlq" in done.stderr
    assert [s.event_id for s in await peek(vhost_url)] == ["abc"]


async def test_sigkill_in_the_middle_of_a_replay_of_1000_loses_none(vhost_url: str, tmp_path: Path) -> None:
    faults = Faults({"flaky"})
    async with consumer(vhost_url, faults) as service:
        sent = await send(vhost_url, [(Operation.ADD, (float(i), 1.0)) for i in range(1000)], "flaky")
        await wait_depth(vhost_url, topology.DLQ, 1000, timeout=120)
        await completed_ids(vhost_url)
        faults.sources.clear()

        log = tmp_path / "replay.log"
        process = await start_inspector(vhost_url, ["replay", "--all", "--yes", "--rate", "200"], log)
        try:
            def replayed() -> int:
                progress = re.findall(r"replayed (\d+), failed", log.read_text())
                return int(progress[-1]) if progress else 0

            await eventually(lambda: replayed() >= 100, "the replay is under way", timeout=60)
            process.send_signal(signal.SIGKILL)
        finally:
            code = await finish(process)
        assert code == -signal.SIGKILL

        # let the consumer finish what was republished before the kill
        deadline = time.monotonic() + 60
        completed: dict[str, int] = {}
        remaining: list[str] = []
        while time.monotonic() < deadline:
            for event_id, n in (await completed_ids(vhost_url)).items():
                completed[event_id] = completed.get(event_id, 0) + n
            remaining = [s.event_id for s in await peek(vhost_url)]
            if service.in_flight == 0 and await queue_depth(vhost_url, topology.work_queue("basic")) == 0:
                break
            await asyncio.sleep(0.3)
        assert 0 < len(completed) < 1000, "the kill did not land in the middle of the replay"
        assert set(completed) | set(remaining) == set(sent)  # nothing lost
        assert set(completed) <= set(sent)
        duplicates = set(completed) & set(remaining)  # confirmed, not yet acked when killed
        assert len(duplicates) <= 256  # at most CALC_PUBLISH_IN_FLIGHT were between confirm and ack

        # running it again finishes the job: every request completed, the DLQ empty
        done = inspector(vhost_url, "replay", "--all", "--yes", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["done"] == len(remaining)
        missing = set(sent) - set(completed)
        completed.update(await wait_completed(vhost_url, missing))
        await wait_depth(vhost_url, topology.DLQ, 0)
    assert set(completed) == set(sent)
