"""`calc-journal serve`, `get` and `stats` as processes: answers, HTTP endpoints and exit codes."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from messaging import topology
from tests.integration.test_journal_faults import _env
from tests.integration.test_journal_pipeline import _completed, _failed
from tests.support.journal import JOURNAL_READY_LINE, wait_journal_caught_up

pytestmark = pytest.mark.database

BIN = Path(sys.executable).parent


def _http(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=10) as answer:
            return answer.status, answer.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "calc-journal"), *args], env=env, capture_output=True, text=True,
                          timeout=60, check=False)


async def test_serve_answers_get_stats_and_http(vhost_url: str, database_url: str, tmp_path: Path) -> None:
    env = _env(vhost_url, database_url, CALC_CONNECT_TIMEOUT="30")
    assert _cli(env, "get", "x").returncode == 2  # no journal tables yet: a clear error
    log = tmp_path / "journal.log"
    with log.open("wb") as out:
        serve = subprocess.Popen([str(BIN / "calc-journal"), "serve"], env=env, stdout=out,  # noqa: ASYNC220
                                 stderr=subprocess.STDOUT)
    try:
        started = time.monotonic()
        while JOURNAL_READY_LINE not in log.read_text():
            assert serve.poll() is None and time.monotonic() - started < 60, log.read_text()
            time.sleep(0.1)
        port = int(re.findall(r"http listening port=(\d+)", log.read_text())[0])
        await _completed(vhost_url, "req-1", 1, result=3.0)
        await _completed(vhost_url, "req-1", 2, result=3.0, by="c-2")
        await _failed(vhost_url, "req-2", 1, 1, "division by zero")
        wait_journal_caught_up(database_url, 3)
        status, body = _http(port, "/results/req-1")
        assert status == 200
        answer: dict[str, Any] = json.loads(body)
        assert answer["status"] == "completed" and answer["results"][0]["outcomes"] == 2
        status, body = _http(port, "/results/corr-req-2")  # by correlation_id
        assert status == 200 and json.loads(body)["results"][0]["reason"] == "DIVISION_BY_ZERO"
        status, body = _http(port, "/results/nobody")
        assert status == 404 and json.loads(body)["status"] == "pending"
        assert _http(port, "/livez")[0] == 200
        status, body = _http(port, "/readyz")
        assert status == 200, body
        status, body = _http(port, "/metrics")
        assert 'calc_journal_outcomes_total{result="recorded"} 2.0' in body
        assert 'calc_journal_outcomes_total{result="updated"} 1.0' in body
        assert _http(port, "/nothing")[0] == 404
    finally:
        serve.terminate()
        assert serve.wait(60) == 0, log.read_text()[-3000:]
    got = _cli(env, "get", "req-1")
    assert got.returncode == 0 and "completed: result 3.0" in got.stdout and "1 duplicates" in got.stdout
    got = _cli(env, "get", "req-2", "--json")
    assert got.returncode == 0 and json.loads(got.stdout)["results"][0]["status"] == "failed"
    pending = _cli(env, "get", "never-sent")
    assert pending.returncode == 3 and "pending" in pending.stdout
    stats = json.loads(_cli(env, "stats", "--json").stdout)
    assert (stats["requests"], stats["outcomes"], stats["duplicates"]) == (2, 3, 1)
    assert stats["by_status"] == {"completed": 1, "failed": 1}
    assert stats["by_reason"] == {"DIVISION_BY_ZERO": 1} and stats["by_operation"] == {"add": 2}
    table = _cli(env, "stats")
    assert table.returncode == 0 and "duplicates" in table.stdout and "1 (over 1 requests)" in table.stdout
    assert topology.JOURNAL_QUEUE in (tmp_path / "journal.log").read_text()
