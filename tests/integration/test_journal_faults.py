"""The journal when PostgreSQL refuses or is missing: a clear error, nothing acked, then it resumes.

(PostgreSQL stopped and started under the journal: tests/chaos/test_journal_faults.py.)
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.pipeline import settings_for
from tests.integration.test_journal_pipeline import _completed
from tests.support.database import DatabaseServer, run
from tests.support.journal import journal_rows, running_journal, wait_acked

pytestmark = pytest.mark.database

BIN = Path(sys.executable).parent


async def _wait(predicate: object, timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


async def _set_read_only(server: DatabaseServer, database: str, on: bool) -> None:
    value = "on" if on else "off"
    await server.execute(f'ALTER DATABASE "{database}" SET default_transaction_read_only = {value}')
    # the setting is read when a session starts: end the journal's
    await server.execute(f"SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                         f"WHERE datname = '{database}' AND pid <> pg_backend_pid()")


async def test_a_read_only_database_is_a_clear_error_and_the_journal_resumes(
        vhost_url: str, database_url: str, database_server: DatabaseServer,
        caplog: pytest.LogCaptureFixture) -> None:
    database = database_url.rsplit("/", 1)[1]
    settings = settings_for(vhost_url, database_url=database_url, journal_batch=10)
    async with running_journal(settings) as journal:
        for i in range(10):
            await _completed(vhost_url, f"a-{i}", 1)
        await wait_acked(journal, 10)
        await _set_read_only(database_server, database, True)
        with caplog.at_level(logging.ERROR, logger="journal.service"):
            for i in range(10):
                await _completed(vhost_url, f"b-{i}", 2)
            await _wait(lambda: "read-only" in journal.health.error, 30, "the read-only error")
        assert journal.acked == 10
        assert not journal.health.ready()[0]
        assert any("journal paused" in r.getMessage() and "read-only" in str(r.__dict__.get("calc_fields"))
                   for r in caplog.records)
        await _set_read_only(database_server, database, False)
        await wait_acked(journal, 20, timeout=60)
    expected = [f"a-{i}" for i in range(10)] + [f"b-{i}" for i in range(10)]
    journal_rows(database_url).assert_exactly_once(expected)


def _serve(env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(BIN / "calc-journal"), "serve"], env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)


def _env(vhost_url: str, database_url: str, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALC_", "DATABASE_"))}
    return {**env, "RABBITMQ_URL": vhost_url, "DATABASE_URL": database_url, "CALC_JOURNAL_PORT": "0",
            "CALC_CONNECT_TIMEOUT": "3", **extra}


def test_read_only_at_start_exits_1_with_one_clear_line(
        vhost_url: str, database_url: str, database_server: DatabaseServer) -> None:
    run(_set_read_only(database_server, database_url.rsplit("/", 1)[1], True))
    done = _serve(_env(vhost_url, database_url))
    assert done.returncode == 1, done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith("error: the database is read-only") and "make it writable" in last


def test_a_missing_database_exits_2_at_once(vhost_url: str, database_url: str) -> None:
    missing = database_url.rsplit("/", 1)[0] + "/no_such_database_here"
    done = _serve(_env(vhost_url, missing), timeout=30)
    assert done.returncode == 2 and "does not exist: create it" in done.stderr.splitlines()[-1]


def test_a_wrong_password_exits_2_at_once_and_is_never_shown(
        vhost_url: str, database_url: str, database_server: DatabaseServer, tmp_path: Path) -> None:
    if database_server.kind == "local":  # the machine's server trusts every local login
        pytest.skip("the local PostgreSQL trusts every login: no password is checked")
    secret = tmp_path / "pw"
    secret.write_text("not-the-password-s3cr3t\n")
    done = _serve(_env(vhost_url, database_url, DATABASE_PASSWORD_FILE=str(secret)), timeout=30)
    assert done.returncode == 2 and "refused the user or password" in done.stderr
    assert "s3cr3t" not in done.stderr + done.stdout
