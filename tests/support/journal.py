"""The journal in tests: in-process or as a `calc-journal serve` process, and its rows checked.

For the chaos tier (tests/chaos/test_journal_*.py use it; any scenario can):

    with services() as started:
        journal = start_journal(started, env, database_url, tmp_path / "journal.log")  # before outcomes flow
        ...  # the scenario: producer, consumers, kills, wait_settled
        ledger = await Ledger.collect(node.url, sent)
        rows, duplicates = assert_journal_matches(ledger, database_url, node.url, journal.log)
        # 0 missing, 0 extra, the ledger's outcome each, the wire's duplicates counted
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import aio_pika

from journal.service import JournalService
from journal.store import Store
from messaging import topology
from messaging.connection import connect
from messaging.settings import Settings
from tests.support.database import run

JOURNAL_READY_LINE = f"consuming queue={topology.JOURNAL_QUEUE}"


def journal_env(env: Mapping[str, str], database_url: str, **extra: str) -> dict[str, str]:
    """A service environment with the journal's database (and any free port for its HTTP)."""
    return {**env, "DATABASE_URL": database_url, "CALC_JOURNAL_PORT": "0", **extra}


def start_journal(started: list[Any], env: Mapping[str, str], database_url: str, log: Path,
                  **extra: str) -> Any:
    """Start `calc-journal serve` (a tests.chaos.harness.Service, registered in `started`) and
    return it once it consumes: from then on every outcome published reaches its queue."""
    from tests.chaos.harness import Service

    journal = Service(["calc-journal", "serve"], journal_env(env, database_url, **extra), log)
    started.append(journal)
    journal.wait_line(JOURNAL_READY_LINE, timeout=120)
    return journal


async def journal_queue_counts(url: str) -> tuple[int, int]:
    """(ready, consumers) of calc.results.journal (ready only: unacked are not in message_count)."""
    connection = await aio_pika.connect(url, timeout=30)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(topology.JOURNAL_QUEUE, passive=True)
        result = queue.declaration_result
        return int(result.message_count or 0), int(result.consumer_count or 0)
    finally:
        await connection.close()


def wait_journal_caught_up(database_url: str, expected_events: int, timeout: float = 180.0,
                           broker_url: str | None = None, log: Path | None = None) -> int:
    """Until the journal has recorded `expected_events` distinct outcome events (its inbox
    table), or, with `broker_url`, its queue is empty and the count has not moved for 5 s (after
    a broker crash an outcome whose publish was not confirmed may be in the audit queue and not
    in the journal's: its retry is in both). Returns the count recorded.

    On a timeout the error says what calc.results.journal still holds (with `broker_url`) and
    ends with the journal's log (with `log`)."""
    deadline = time.monotonic() + timeout
    seen, still_since = -1, time.monotonic()
    while time.monotonic() < deadline:
        now = run(_count_events(database_url))
        if now >= expected_events:
            return now
        if now != seen:
            seen, still_since = now, time.monotonic()
        elif broker_url is not None and time.monotonic() - still_since > 5:
            if run(journal_queue_counts(broker_url))[0] == 0:
                return seen
        time.sleep(0.5)
    detail = ""
    if broker_url is not None:
        ready, consumers = run(journal_queue_counts(broker_url))
        detail += f"; {topology.JOURNAL_QUEUE} has {ready} ready, {consumers} consumers"
    if log is not None and log.exists():
        detail += "\n" + log.read_text(errors="replace")[-3000:]
    raise AssertionError(f"the journal recorded {seen} of {expected_events} outcome events in "
                         f"{timeout:.0f}s{detail}")


async def _count_events(database_url: str) -> int:
    import asyncpg

    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        exists = await connection.fetchval("SELECT to_regclass('journal_outcomes') IS NOT NULL")
        return int(await connection.fetchval("SELECT count(*) FROM journal_outcomes")) if exists else 0
    finally:
        await connection.close()


@dataclass(frozen=True)
class JournalRows:
    """Every row of journal_results, by request_event_id."""

    rows: dict[str, dict[str, Any]]

    @property
    def duplicates(self) -> int:
        """Outcome events beyond the first per request: the wire's duplicates, as the journal saw them."""
        return sum(int(r["outcomes"]) - 1 for r in self.rows.values())

    def status(self, request_id: str) -> str | None:
        row = self.rows.get(request_id)
        return None if row is None else str(row["status"])

    def assert_exactly_once(self, sent: Iterable[str], completed: Iterable[str] | None = None,
                            failed: Iterable[str] | None = None) -> None:
        """One row per sent id and none else; with `completed`/`failed` (a chaos Ledger's
        completed_ids, and its failed or dead ids), each row has that outcome."""
        sent_ids = set(sent)
        missing = sent_ids - set(self.rows)
        extra = set(self.rows) - sent_ids
        assert not missing, (f"{len(missing)} of {len(sent_ids)} requests have no journal row, "
                             f"e.g. {sorted(missing)[:5]}")
        assert not extra, f"{len(extra)} journal rows for requests never sent, e.g. {sorted(extra)[:5]}"
        if completed is not None:
            wrong = [i for i in completed if self.status(i) != "completed"]
            assert not wrong, f"{len(wrong)} completed requests not completed in the journal: {wrong[:5]}"
        if failed is not None:
            done = set(completed or ())
            wrong = [i for i in failed if i not in done and self.status(i) != "failed"]
            assert not wrong, f"{len(wrong)} failed requests not failed in the journal: {wrong[:5]}"


def journal_rows(database_url: str) -> JournalRows:
    async def fetch() -> dict[str, dict[str, Any]]:
        import asyncpg

        connection = await asyncpg.connect(database_url, timeout=10)
        try:
            rows = await connection.fetch("SELECT * FROM journal_results")
        finally:
            await connection.close()
        return {row["request_event_id"]: dict(row) for row in rows}

    return JournalRows(run(fetch()))


def wire_duplicates(ledger: Any) -> int:
    """Outcome events beyond the first per request in a chaos Ledger (results and failures)."""
    events = len(ledger.completed) + len(ledger.failed)
    return events - len(ledger.completed_ids | ledger.failed_ids)


def unanswered_ids(ledger: Any) -> set[str]:
    """Requests in a chaos Ledger's DLQ with no outcome on the wire (dead-lettered by the
    broker, e.g. at the delivery limit): the journal records outcomes, so it has no row for them."""
    unanswered: set[str] = set(ledger.dead_ids) - ledger.completed_ids - ledger.failed_ids
    return unanswered


def assert_journal_matches(ledger: Any, database_url: str, broker_url: str, log: Path,
                           broker_crashed: bool = False) -> tuple[int, int]:
    """Assert the journal agrees with a chaos Ledger of the wire: one row per sent request with
    an outcome (see unanswered_ids) and none else, each with the ledger's outcome; returns
    (rows, duplicates the journal counted).

    Call it while the journal still runs (it waits for it to catch up). Its duplicates are the
    audit queue's, except after a broker crash: an outcome whose publish was unconfirmed when
    the node died may be in one queue and not the other, so then at most the audit queue's."""
    ledger.assert_exactly_once(max_duplicates=None)
    events = len(ledger.completed) + len(ledger.failed)
    recorded = wait_journal_caught_up(database_url, events, 120, broker_url, log)
    rows = journal_rows(database_url)
    # a request the broker dead-lettered with no outcome (its delivery limit) has no row
    unanswered = unanswered_ids(ledger)
    rows.assert_exactly_once([i for i in ledger.sent if i not in unanswered], ledger.completed_ids,
                             (ledger.failed_ids | ledger.dead_ids) - unanswered)
    wire = wire_duplicates(ledger)
    if broker_crashed:
        assert rows.duplicates <= wire and recorded - len(rows.rows) == rows.duplicates
    else:
        assert (recorded, rows.duplicates) == (events, wire), "the journal saw other outcomes than the wire"
    return len(rows.rows), rows.duplicates


@contextlib.asynccontextmanager
async def running_journal(settings: Settings, **overrides: Any) -> AsyncIterator[JournalService]:
    """A JournalService in this event loop on `settings.database_url`, stopped at exit."""
    settings = replace(settings, **overrides)
    store = Store(settings)
    await store.open(timeout=30)
    connection = await connect(settings, "test-journal")
    service = JournalService(settings, connection, store)
    try:
        await service.start()
        yield service
    finally:
        await service.stop()
        await connection.close()
        await store.close()


async def wait_acked(service: JournalService, count: int, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while service.acked < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"the journal acked {service.acked} of {count} in {timeout}s "
                                 f"(holding {service.held})")
        await asyncio.sleep(0.05)
