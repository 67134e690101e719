"""/livez and /readyz of the real services, as processes: the loop's heartbeat and the service's state."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from consumer.__main__ import BLOCK_S
from messaging.health import STALE_S
from tests.integration.pipeline import BIN, service_env, start_process, stop_process, wait_for_line


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def probe(port: int, path: str) -> tuple[int, dict[str, Any]]:
    """Status and JSON body of GET `path`; (0, {}) when nothing answers yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (ConnectionError, urllib.error.URLError, TimeoutError):
        return 0, {}


def until(check: Callable[[], bool], what: str, timeout: float = 60.0) -> float:
    """Seconds until `check()` held; AssertionError naming `what` after `timeout`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"{what}: not within {timeout:.0f}s")
        time.sleep(0.2)
    return time.monotonic() - started


def test_a_consumer_whose_loop_is_blocked_fails_livez_and_recovers(vhost_url: str, tmp_path: Path) -> None:
    port = free_port()
    log = tmp_path / "consumer.log"
    env = service_env(vhost_url, CALC_METRICS_PORT=str(port), CALC_TEST_BLOCK_SOURCE="blocker")
    consumer = start_process(["calc-consumer"], env, log)
    try:
        wait_for_line(log, "consuming queue=calc.work.heavy")
        until(lambda: probe(port, "/readyz")[0] == 200, "ready once subscribed")
        assert probe(port, "/livez")[1]["status"] == "ok"
        sent = subprocess.run([str(BIN / "calc-producer"), "send", "add", "1", "2"],
                              env={**env, "CALC_INSTANCE_ID": "blocker"}, capture_output=True, text=True,
                              timeout=60, check=False)
        assert sent.returncode == 0, sent.stderr
        wait_for_line(log, "test block hook: blocking the event loop")
        blocked_after = until(lambda: probe(port, "/livez")[0] == 503, "/livez fails while blocked",
                              timeout=STALE_S + 5)
        status, body = probe(port, "/livez")
        assert status == 503 and re.fullmatch(r"event loop silent for \d+\.\ds", body["detail"]), body
        assert blocked_after < BLOCK_S
        # the loop runs again: alive again, and the blocked request completed
        until(lambda: probe(port, "/livez")[0] == 200, "/livez recovers", timeout=BLOCK_S + 10)
        wait_for_line(log, "completed event_id=" + sent.stdout.strip())
        assert consumer.poll() is None, "a blocked loop must not kill the process"
    finally:
        assert stop_process(consumer) == 0


def test_a_consumer_is_not_ready_before_it_connects(tmp_path: Path) -> None:
    """Live while it retries the first connection (a broker that is not there), never ready."""
    port, broker = free_port(), free_port()
    log = tmp_path / "consumer.log"
    env = service_env(f"amqp://guest:guest@127.0.0.1:{broker}/", CALC_METRICS_PORT=str(port),
                      CALC_CONNECT_TIMEOUT="30")
    consumer = start_process(["calc-consumer"], env, log)
    try:
        until(lambda: probe(port, "/livez")[0] == 200, "live while connecting", timeout=30)
        assert probe(port, "/readyz") == (503, {"status": "failing", "detail": "connecting"})
    finally:
        consumer.kill()
        consumer.wait(10)


def test_dlq_inspector_serve_is_live_without_a_broker_and_ready_with_one(vhost_url: str,
                                                                         tmp_path: Path) -> None:
    port, broker = free_port(), free_port()
    log = tmp_path / "away.log"
    away = start_process(["dlq-inspector", "serve"], service_env(
        f"amqp://guest:guest@127.0.0.1:{broker}/", CALC_INSPECTOR_PORT=str(port)), log)
    try:
        until(lambda: probe(port, "/livez")[0] == 200, "live with no broker", timeout=30)
        until(lambda: "dlq scan failed" in log.read_text(), "a scan failed", timeout=60)
        status, body = probe(port, "/readyz")
        assert status == 503 and "not reachable" in body["detail"], body
        assert probe(port, "/healthz")[0] == 503  # as before: it follows the scans
    finally:
        assert stop_process(away) == 0
    port = free_port()
    log = tmp_path / "serve.log"
    serving = start_process(["dlq-inspector", "serve"], service_env(vhost_url, CALC_INSPECTOR_PORT=str(port)),
                            log)
    try:
        until(lambda: probe(port, "/readyz")[0] == 200, "ready after a scan", timeout=60)
        assert probe(port, "/livez")[0] == 200 and probe(port, "/healthz")[0] == 200
        assert probe(port, "/report")[1]["total"] == 0
    finally:
        assert stop_process(serving) == 0
