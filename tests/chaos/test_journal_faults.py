"""The journal's own chaos: killed -9 mid-stream, and its PostgreSQL restarted mid-stream.

Either way the journal ends with exactly one row per request sent (0 missing, 0 extra), each
with the outcome the wire carried, and counts the wire's duplicates beside them, not its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from messaging import codec, topology
from tests.chaos.conftest import Row
from tests.chaos.harness import (
    SETTLE_AFTER_DECLARE,
    Ledger,
    Service,
    bulk_args,
    bulk_summary,
    chaos_env,
    queue_stats,
    read_ids,
    services,
    wait_settled,
    wait_until,
)
from tests.chaos.test_least_privilege import VHOST, User, deployed, publish_to, refused  # noqa: F401
from tests.integration.pipeline import publish_raw, service_env, settings_for
from tests.integration.test_journal_pipeline import _completed
from tests.support.database import PrivatePostgres, run
from tests.support.journal import (
    assert_journal_matches,
    journal_rows,
    running_journal,
    start_journal,
    wait_acked,
    wait_journal_caught_up,
    wire_duplicates,
)
from tests.support.private_node import NodeFactory, PrivateNode

pytestmark = pytest.mark.database

COUNT = 6_000
RATE = "1000"  # requests per second: the stream lasts ~6 s, long enough to break it in the middle


async def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {timeout}s: {what}")
        await asyncio.sleep(0.1)


async def test_database_down_stops_acking_and_resumes_without_loss(
        vhost_url: str, private_postgres: PrivatePostgres) -> None:
    settings = settings_for(vhost_url, database_url=private_postgres.url, journal_batch=20)
    async with running_journal(settings) as journal:
        for i in range(50):
            await _completed(vhost_url, f"before-{i}", 1)
        await wait_acked(journal, 50)
        await asyncio.to_thread(private_postgres.stop, "fast")
        for i in range(60):
            await _completed(vhost_url, f"during-{i}", 2)
        await _wait(lambda: not journal.health.database, 30, "the journal to notice the database is gone")
        await asyncio.sleep(2)
        assert journal.acked == 50, "acked while the database was down"
        assert journal.held == 40  # the prefetch (twice the batch): the broker keeps the rest
        ready, why = journal.health.ready()
        assert not ready and "database" in why
        await asyncio.to_thread(private_postgres.start)
        await wait_acked(journal, 110, timeout=60)
        assert journal.health.database and journal.health.consuming
    rows = journal_rows(private_postgres.url)
    rows.assert_exactly_once([f"before-{i}" for i in range(50)] + [f"during-{i}" for i in range(60)])
    assert rows.duplicates == 0


def _rows_now(database_url: str) -> int:
    async def count() -> int:
        import asyncpg

        connection = await asyncpg.connect(database_url, timeout=5)
        try:
            if not await connection.fetchval("SELECT to_regclass('journal_results') IS NOT NULL"):
                return 0
            return int(await connection.fetchval("SELECT count(*) FROM journal_results"))
        finally:
            await connection.close()

    try:
        return run(count())
    except OSError:
        return -1  # the database is down


def _stream(started: list[Service], env: dict[str, str], tmp_path: Path) -> Service:
    consumer = Service(["calc-consumer"], env, tmp_path / "consumer.log")
    started.append(consumer)
    consumer.wait_line("consuming queue=calc.work.heavy")
    producer = Service([*bulk_args(COUNT, tmp_path / "ids.txt", seed=161), "--rate", RATE], env,
                       tmp_path / "producer.log")
    started.append(producer)
    return producer


async def test_journal_killed_mid_stream_records_each_request_once(
        private_node: NodeFactory, database_url: str, tmp_path: Path,
        reliability: Callable[[Row], None]) -> None:
    node = private_node()
    env = chaos_env(node.url, CALC_JOURNAL_BATCH="200")
    with services() as started:
        first = start_journal(started, env, database_url, tmp_path / "journal-a.log")
        producer = _stream(started, env, tmp_path)
        wait_until(lambda: _rows_now(database_url) >= 1_500, 120, "1,500 rows in the journal")
        killed_at = time.monotonic()
        first.kill()
        second = start_journal(started, env, database_url, tmp_path / "journal-b.log")
        recover = time.monotonic() - killed_at
        assert producer.wait(180) == 0, producer.text()[-3000:]
        wait_settled(node)
        sent = read_ids(tmp_path / "ids.txt")
        assert bulk_summary(producer.log)["confirmed"] == len(sent) == COUNT
        ledger = await Ledger.collect(node.url, sent)
        rows, duplicates = assert_journal_matches(ledger, database_url, node.url, second.log)
        assert second.terminate() == 0
    reliability(Row(
        "journal SIGKILL mid-stream (journal rows)", COUNT, COUNT - rows, duplicates, recover,
        f"{rows:,} rows for {COUNT:,} requests, 0 extra; {duplicates} duplicates on the wire counted "
        "in the rows; the killed journal's unacked window was delivered again and recognised by "
        "event_id; recovery: a new journal consuming", journal_rows=rows))


async def test_postgres_restarted_mid_stream_loses_no_row_and_doubles_none(
        private_node: NodeFactory, private_postgres: PrivatePostgres, tmp_path: Path,
        reliability: Callable[[Row], None]) -> None:
    node = private_node()
    env = chaos_env(node.url, CALC_JOURNAL_BATCH="200")
    database_url = private_postgres.url
    with services() as started:
        journal = start_journal(started, env, database_url, tmp_path / "journal.log")
        producer = _stream(started, env, tmp_path)
        wait_until(lambda: _rows_now(database_url) >= 1_500, 120, "1,500 rows in the journal")
        stopped_at = time.monotonic()
        private_postgres.stop("immediate")  # a crash: no checkpoint, sessions cut
        wait_until(lambda: "journal paused" in journal.text(), 60, "the journal to pause")
        time.sleep(2)
        private_postgres.start()
        wait_until(lambda: _rows_now(database_url) > 1_500, 120, "rows again")
        recover = time.monotonic() - stopped_at
        assert producer.wait(180) == 0, producer.text()[-3000:]
        wait_settled(node)
        sent = read_ids(tmp_path / "ids.txt")
        assert bulk_summary(producer.log)["confirmed"] == len(sent) == COUNT
        ledger = await Ledger.collect(node.url, sent)
        rows, duplicates = assert_journal_matches(ledger, database_url, node.url, journal.log)
        assert journal.terminate() == 0
    reliability(Row(
        "PostgreSQL crash-restarted mid-stream (journal rows)", COUNT, COUNT - rows, duplicates, recover,
        f"{rows:,} rows for {COUNT:,} requests, 0 extra; the journal paused (nothing acked) while "
        "the database was down and resumed by itself; recovery: database down ~2 s, then rows again",
        journal_rows=rows))


async def test_broker_killed_under_the_journal_it_consumes_again_and_records_each_request_once(
        private_node: NodeFactory, database_url: str, tmp_path: Path,
        reliability: Callable[[Row], None]) -> None:
    node = private_node()
    env = chaos_env(node.url, CALC_JOURNAL_BATCH="200")
    with services() as started:
        journal = start_journal(started, env, database_url, tmp_path / "journal.log")
        time.sleep(SETTLE_AFTER_DECLARE)  # a quorum queue declared just before a node dies is lost
        producer = _stream(started, env, tmp_path)
        wait_until(lambda: _rows_now(database_url) >= 1_500, 120, "1,500 rows in the journal")
        killed_at = time.monotonic()
        node.kill()
        time.sleep(2.0)
        node.start()
        wait_until(lambda: queue_stats(node)[topology.JOURNAL_QUEUE].consumers == 1, 60,
                   "the journal to consume again after the restart")
        recover = time.monotonic() - killed_at
        assert producer.wait(300) == 0, producer.text()[-3000:]
        wait_settled(node)
        sent = read_ids(tmp_path / "ids.txt")
        assert bulk_summary(producer.log)["confirmed"] == len(sent) == COUNT
        ledger = await Ledger.collect(node.url, sent)
        rows, duplicates = assert_journal_matches(ledger, database_url, node.url, journal.log,
                                                  broker_crashed=True)
        assert journal.running() and "consuming again" in journal.text()
        assert journal.terminate() == 0
    reliability(Row(
        "broker killed and restarted under the journal (journal rows)", COUNT, COUNT - rows, duplicates,
        recover,
        f"{rows:,} rows for {COUNT:,} requests, 0 extra; {duplicates} duplicates on the wire (the "
        f"producer's and consumer's redeliveries; the audit queue shows {wire_duplicates(ledger)}) "
        "counted in the rows; recovery: the journal consuming again", journal_rows=rows))


async def test_the_journal_works_as_its_least_privilege_user(
        deployed: tuple[PrivateNode, dict[str, User]],  # noqa: F811 (the fixture imported above)
        database_url: str, tmp_path: Path) -> None:
    """As calc-journal with the deployed definitions: it records, dead-letters to its own DLQ,
    and may do nothing else."""
    node, users = deployed
    journal_user, admin = users["calc-journal"], users["calc-admin"]
    env = service_env(journal_user.url, CALC_DECLARE_TOPOLOGY="false")
    with services() as started:
        journal = start_journal(started, env, database_url, tmp_path / "journal.log")
        await _completed(admin.url, "req-least", 1)
        await publish_raw(admin.url, b"\xff\xff", "calc.completed.add", topology.RESULTS_EXCHANGE,
                          type=codec.TYPE_COMPLETED)
        wait_journal_caught_up(database_url, 1, 60, admin.url, journal.log)
        wait_until(lambda: queue_stats(node, VHOST)[topology.JOURNAL_DLQ].ready == 1, 30,
                   "the undecodable outcome in the journal DLQ")
        assert journal.terminate() == 0
    assert list(journal_rows(database_url).rows) == ["req-least"]
    assert refused(journal_user, lambda ch: ch.basic_get(topology.DLQ)), "the journal may read calc.dlq"
    assert refused(journal_user, publish_to(topology.RESULTS_EXCHANGE)), "the journal may forge results"
    assert refused(journal_user, lambda ch: ch.queue_purge(topology.JOURNAL_DLQ))
    assert refused(journal_user, lambda ch: ch.exchange_declare("calc.rogue", "topic", durable=True))
    assert journal_user.password not in journal.text()
