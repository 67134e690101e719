"""`calc-producer send --wait`: the request's outcome printed, and its exit code, as processes."""

from __future__ import annotations

import asyncio
import json
import subprocess
from pathlib import Path

from messaging import topology
from tests.integration.pipeline import (
    BIN,
    queue_depth,
    running_consumer,
    service_env,
    settings_for,
    start_process,
    stop_process,
    wait_for_line,
)


def send(env: dict[str, str], *args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "calc-producer"), "send", *args], env=env, capture_output=True,
                          text=True, timeout=timeout, check=False)


def test_send_wait_prints_the_result_or_the_failure_and_exits_by_it(vhost_url: str, tmp_path: Path) -> None:
    env = service_env(vhost_url)
    consumer = start_process(["calc-consumer"], env, tmp_path / "consumer.log")
    try:
        wait_for_line(tmp_path / "consumer.log", "consuming queue=calc.work.heavy")
        done = send(env, "add", "2", "3", "--wait")
        assert done.returncode == 0, done.stderr
        event_id, verdict = done.stdout.strip().split(" ", 1)
        assert verdict == "completed: 5" and len(event_id) == 36

        failed = send(env, "divide", "1", "0", "--wait")
        assert failed.returncode == 5, failed.stderr
        assert failed.stdout.strip().endswith(" failed: DIVISION_BY_ZERO: division by zero (attempts 1)")

        as_json = send(env, "power", "2", "10", "--wait", "--json", "--correlation-id", "order-7")
        assert as_json.returncode == 0, as_json.stderr
        answer = json.loads(as_json.stdout)
        assert set(answer) == {"status", "event_id", "correlation_id", "outcome_event_id", "result",
                               "reason", "detail", "attempts", "processed_by"}
        assert (answer["status"], answer["result"], answer["correlation_id"], answer["reason"]) == (
            "completed", 1024.0, "order-7", None)

        failed_json = json.loads(send(env, "sqrt", "-1", "--wait", "--json").stdout)
        assert (failed_json["status"], failed_json["reason"], failed_json["result"]) == (
            "failed", "DOMAIN_ERROR", None)
        assert failed_json["detail"] and failed_json["attempts"] == 1
    finally:
        assert stop_process(consumer) == 0


def test_a_failure_after_retries_is_printed_when_it_finally_ends(vhost_url: str, tmp_path: Path) -> None:
    """Every attempt fails with an injected transient fault: the answer is RETRIES_EXHAUSTED at the end."""
    env = service_env(vhost_url, CALC_FAULT_RATE="1", CALC_MAX_ATTEMPTS="3", CALC_RETRY_BASE_DELAY="0.3")
    consumer = start_process(["calc-consumer"], env, tmp_path / "consumer.log")
    try:
        wait_for_line(tmp_path / "consumer.log", "consuming queue=calc.work.heavy")
        failed = send(env, "add", "1", "1", "--wait", "--json")
        assert failed.returncode == 5, failed.stderr
        answer = json.loads(failed.stdout)
        assert (answer["status"], answer["reason"], answer["attempts"]) == ("failed", "RETRIES_EXHAUSTED", 3)
        assert (tmp_path / "consumer.log").read_text().count("retry scheduled") == 2
    finally:
        assert stop_process(consumer) == 0


async def test_no_consumer_times_out_with_exit_1_and_leaves_the_request_queued(vhost_url: str) -> None:
    env = service_env(vhost_url)
    waited = send(env, "multiply", "6", "7", "--wait", "--timeout", "1.5")
    assert waited.returncode == 1 and waited.stdout == ""
    event_id = waited.stderr.split("no outcome for ", 1)[1].split(" ", 1)[0]
    assert waited.stderr.strip().splitlines()[-1] == (
        f"error: no outcome for {event_id} within 1.5s; it is queued, and a consumer of multiply "
        "may still answer (is one running?)")
    timed_out = send(env, "multiply", "6", "7", "--wait", "--timeout", "0.5", "--json")
    assert timed_out.returncode == 1
    shown = json.loads(timed_out.stdout)
    assert shown == {"status": "timeout", "event_id": shown["event_id"], "correlation_id": shown["event_id"],
                     "timeout_s": 0.5}
    assert await queue_depth(vhost_url, topology.work_queue("basic")) == 2
    plain = send(env, "add", "1", "2", "--json")
    assert plain.returncode == 0 and set(json.loads(plain.stdout)) == {"event_id"}


def test_bad_timeouts_are_refused_before_connecting() -> None:
    env = service_env("amqp://guest:guest@127.0.0.1:1/")
    for bad in ("0", "-1", "nan", "soon"):
        refused = send(env, "add", "1", "2", "--wait", "--timeout", bad, timeout=30)
        assert refused.returncode == 2 and "--timeout" in refused.stderr, (bad, refused.stderr)


async def test_a_request_that_completes_after_a_retry_answers_completed(vhost_url: str) -> None:
    """The first attempt fails with a transient fault, the second completes: exit 0, the result."""
    settings = settings_for(vhost_url, retry_base_delay=0.3)
    async with running_consumer(settings) as service:
        attempts: list[int] = []

        def first_attempt_fails(_: object, attempt: int) -> bool:
            attempts.append(attempt)
            return attempt == 1

        service.inject_fault = first_attempt_fails
        done = await asyncio.to_thread(send, service_env(vhost_url), "multiply", "6", "7", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    answer = json.loads(done.stdout)
    assert (answer["status"], answer["result"]) == ("completed", 42.0)
    assert attempts == [1, 2]
