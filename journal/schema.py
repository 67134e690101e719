"""The journal's tables, created and migrated by the service at start: versioned, idempotent, locked."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import asyncpg

from messaging.errors import ConfigurationError
from messaging.logs import kv

log = logging.getLogger(__name__)

LOCK_KEY = 0x6A6F75726E616C  # "journal": replicas starting at once migrate one after the other


@dataclass(frozen=True)
class Migration:
    version: int
    description: str
    sql: str


MIGRATIONS = (
    Migration(1, "results (one row per request) and the outcome events seen", """
        CREATE TABLE journal_results (
            request_event_id text PRIMARY KEY,
            status text NOT NULL CHECK (status IN ('completed', 'failed')),
            operation text NOT NULL,
            operands double precision[],
            result double precision,
            reason text,
            detail text,
            attempts integer NOT NULL,
            correlation_id text NOT NULL,
            processed_by text NOT NULL,
            outcome_event_id text NOT NULL,
            outcome_at timestamptz NOT NULL,
            first_outcome_at timestamptz NOT NULL,
            last_outcome_at timestamptz NOT NULL,
            outcomes integer NOT NULL,
            failures integer NOT NULL,
            recorded_at timestamptz NOT NULL DEFAULT now(),
            updated_at timestamptz NOT NULL DEFAULT now()
        );
        CREATE TABLE journal_outcomes (
            event_id text PRIMARY KEY,
            request_event_id text NOT NULL,
            received_at timestamptz NOT NULL DEFAULT now()
        );
    """),
    Migration(2, "look-up by correlation_id", """
        CREATE INDEX journal_results_correlation_id ON journal_results (correlation_id);
    """),
)
"""Every schema change, in order. Append only: a released version is never edited."""

LATEST = MIGRATIONS[-1].version


async def version(connection: asyncpg.Connection) -> int:
    """The schema version of the database (0: no journal tables yet)."""
    exists = await connection.fetchval("SELECT to_regclass('journal_schema') IS NOT NULL")
    if not exists:
        return 0
    found = await connection.fetchval("SELECT max(version) FROM journal_schema")
    return int(found or 0)


async def migrate(connection: asyncpg.Connection) -> int:
    """Bring the schema to LATEST in one transaction; return the version it was at.

    ConfigurationError when the database is newer than this build (a rollback of calc-journal
    after an upgrade): writing to tables it does not know could lose what they record.
    """
    async with connection.transaction():
        await connection.execute("SELECT pg_advisory_xact_lock($1)", LOCK_KEY)
        await connection.execute("""
            CREATE TABLE IF NOT EXISTS journal_schema (
                version integer PRIMARY KEY,
                description text NOT NULL,
                applied_at timestamptz NOT NULL DEFAULT now())""")
        current = await version(connection)
        if current > LATEST:
            raise ConfigurationError(
                f"the database's journal schema is version {current}, newer than this calc-journal "
                f"knows ({LATEST}): run the calc-journal that migrated it, or a later one")
        for migration in MIGRATIONS:
            if migration.version > current:
                await connection.execute(migration.sql)
                await connection.execute(
                    "INSERT INTO journal_schema (version, description) VALUES ($1, $2)",
                    migration.version, migration.description)
                log.info("journal schema migrated", extra=kv(
                    version=migration.version, description=migration.description))
    return current
