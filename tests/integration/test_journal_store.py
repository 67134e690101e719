"""The journal's store on a real PostgreSQL: the supersede rule whatever the order, and migrations."""

from __future__ import annotations

import asyncio
import itertools
import random
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from journal import schema
from journal.record import COMPLETED, FAILED, Outcome
from journal.store import Store
from messaging.errors import ConfigurationError
from messaging.settings import Settings

pytestmark = pytest.mark.database

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def _outcome(request: str, n: int, status: str, second: int) -> Outcome:
    failed = status == FAILED
    return Outcome(request, f"{request}-e{n}", status, "add", None if failed else [1.0, 2.0],
                   None if failed else 3.0, "RETRIES_EXHAUSTED" if failed else None,
                   f"failure {n}" if failed else None, 4 if failed else 1, f"corr-{request}", f"c-{n}",
                   T0 + timedelta(seconds=second))


def _expected(outcomes: list[Outcome]) -> Outcome:
    """The rule as docs/journal.md states it, in Python: a completion above any failure; the
    earliest completion; the latest failure; then the smaller event_id."""
    completions = [o for o in outcomes if o.status == COMPLETED]
    if completions:
        return min(completions, key=lambda o: (o.occurred_at, o.event_id))
    return max(outcomes, key=lambda o: (o.occurred_at, [-ord(c) for c in o.event_id]))


async def test_the_row_is_the_same_whatever_the_arrival_order_and_batching(database_url: str) -> None:
    store = Store(Settings(database_url=database_url))
    await store.open(timeout=10)
    rng = random.Random(16)
    expected = {}
    try:
        for case in range(12):
            kinds = [rng.choice((COMPLETED, FAILED)) for _ in range(rng.randint(1, 4))]
            base = [_outcome(f"r{case}", n, kind, rng.randint(0, 5)) for n, kind in enumerate(kinds)]
            for order, permutation in enumerate(itertools.islice(itertools.permutations(base), 6)):
                request = f"r{case}-o{order}"
                outcomes = [replace(o, request_event_id=request, event_id=f"{request}-{o.event_id}")
                            for o in permutation]
                cut = rng.randint(0, len(outcomes))  # some in one batch, the rest in another
                for batch in (outcomes[:cut], outcomes[cut:], outcomes[: rng.randint(0, len(outcomes))]):
                    if batch:  # the last one: a redelivery of some already recorded
                        await store.record(batch)
                expected[request] = (_expected(outcomes), len(outcomes),
                                     sum(o.status == FAILED for o in outcomes))
        rows = {r["request_event_id"]: r for r in await store.pool.fetch("SELECT * FROM journal_results")}
    finally:
        await store.close()
    assert set(rows) == set(expected)
    for request, (shown, count, failures) in expected.items():
        row = rows[request]
        assert (row["outcome_event_id"], row["status"], row["outcomes"], row["failures"]) == (
            shown.event_id, shown.status, count, failures), request


async def test_a_batch_reports_new_rows_updates_and_events_seen_before(database_url: str) -> None:
    store = Store(Settings(database_url=database_url))
    await store.open(timeout=10)
    try:
        first = await store.record([_outcome("a", 1, COMPLETED, 1), _outcome("a", 2, COMPLETED, 2),
                                    _outcome("b", 1, FAILED, 1)])
        again = await store.record([_outcome("a", 1, COMPLETED, 1), _outcome("b", 2, COMPLETED, 3)])
    finally:
        await store.close()
    assert (first.new, first.again, first.seen) == (2, 1, 0)
    assert (again.new, again.again, again.seen) == (0, 1, 1)


async def test_migrations_are_idempotent_resume_from_an_old_version_and_refuse_a_newer(
        database_url: str) -> None:
    connection = await asyncpg.connect(database_url)
    try:
        # a database migrated by an older build: version 1 only
        await connection.execute("CREATE TABLE journal_schema (version integer PRIMARY KEY, "
                                 "description text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())")
        await connection.execute(schema.MIGRATIONS[0].sql)
        await connection.execute("INSERT INTO journal_schema (version, description) VALUES (1, 'old')")
        # two replicas starting at once: the lock makes them take turns
        others = [await asyncpg.connect(database_url) for _ in range(2)]
        before = await asyncio.gather(*(schema.migrate(c) for c in others))
        for other in others:
            await other.close()
        assert sorted(before) == [1, schema.LATEST]
        assert await schema.migrate(connection) == schema.LATEST
        assert await connection.fetchval("SELECT count(*) FROM journal_schema") == schema.LATEST
        assert await connection.fetchval(
            "SELECT count(*) FROM pg_indexes WHERE indexname = 'journal_results_correlation_id'") == 1
        await connection.execute("INSERT INTO journal_schema (version, description) VALUES (99, 'future')")
        with pytest.raises(ConfigurationError, match="version 99, newer than this calc-journal knows"):
            await schema.migrate(connection)
    finally:
        await connection.close()
