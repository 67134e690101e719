"""The journal's PostgreSQL side: a small pool, one transaction per batch, and errors by their cure."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import asyncpg

from journal import schema, sql
from journal.record import Outcome
from messaging.errors import ConfigurationError, Permanent, Transient
from messaging.logs import kv
from messaging.settings import Settings

log = logging.getLogger(__name__)

STATEMENT_TIMEOUT_S = 30.0
"""A batch, a look-up or a ping that takes longer is a database that does not answer."""
CONNECT_TIMEOUT_S = 10.0


class DatabaseUnavailable(Transient):
    """PostgreSQL cannot be reached, or the connection was lost: nothing is acked until it is back."""


class DatabaseRefused(Transient):
    """PostgreSQL answers but will not write (read-only, full, no permission): an operator must act."""


class RowRefused(Permanent):
    """PostgreSQL refuses one outcome's values (a data error): that outcome cannot be recorded."""


_DOWN = (OSError, asyncio.TimeoutError, asyncpg.PostgresConnectionError, asyncpg.InterfaceError,
         asyncpg.exceptions.OperatorInterventionError, asyncpg.exceptions.TooManyConnectionsError)


def _why_refused(exc: BaseException) -> str | None:
    """What an operator must fix for a refusal of writes, or None when it is not one."""
    if isinstance(exc, asyncpg.exceptions.ReadOnlySQLTransactionError):
        return ("the database is read-only (default_transaction_read_only, or a standby): "
                "make it writable; the journal resumes on its own")
    if isinstance(exc, asyncpg.exceptions.InsufficientResourcesError):
        return "the database is out of disk or resources: free space; the journal resumes on its own"
    if isinstance(exc, asyncpg.exceptions.InsufficientPrivilegeError):
        return "the database user may not write the journal's tables: grant it; the journal resumes"
    if isinstance(exc, asyncpg.exceptions.InvalidAuthorizationSpecificationError):
        return "the database refused the user or password (DATABASE_URL, DATABASE_PASSWORD_FILE)"
    if isinstance(exc, asyncpg.exceptions.InvalidCatalogNameError):
        return "the database in DATABASE_URL does not exist: create it"
    return None


@dataclass(frozen=True)
class Recorded:
    """What one batch changed: rows made, rows updated by another outcome, events seen before."""

    new: int
    again: int
    seen: int


class Store:
    """The journal's tables behind a pool of at most three connections (writes, look-ups, probes)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._dsn = settings.database_dsn
        self._password = urlsplit(self._dsn).password
        self._pool: asyncpg.Pool | None = None

    def error(self, exc: BaseException) -> Exception:
        """`exc` as one of our errors, its text without the password."""
        text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        for form in (self._password, unquote(self._password)) if self._password else ():
            text = text.replace(form, "***")
        why = _why_refused(exc)
        if why is not None:
            return DatabaseRefused(f"{why} ({text})")
        if isinstance(exc, asyncpg.DataError | asyncpg.IntegrityConstraintViolationError):
            return RowRefused(text)
        if isinstance(exc, _DOWN):
            return DatabaseUnavailable(f"database {self.settings.safe_database_url} not reachable: {text}")
        return DatabaseUnavailable(f"database error: {text}")

    async def open(self, timeout: float | None = None, *, migrate: bool = True) -> int:
        """Connect (retrying for `timeout` s, default CALC_CONNECT_TIMEOUT) and migrate (unless
        not `migrate`: the queries only read); return the schema version found.

        A refused login or a missing database is a ConfigurationError at once: waiting does not fix it.
        """
        limit = self.settings.connect_timeout if timeout is None else timeout
        deadline = asyncio.get_running_loop().time() + limit
        delay = 0.5
        while True:
            try:
                connection = await asyncpg.connect(self._dsn, timeout=CONNECT_TIMEOUT_S)
                break
            except Exception as exc:
                error = self.error(exc)
                if isinstance(error, DatabaseRefused):
                    raise ConfigurationError(str(error)) from None
                if asyncio.get_running_loop().time() + delay > deadline:
                    raise DatabaseUnavailable(f"{error} (gave up after {limit:.0f}s)") from None
                log.warning("database not reachable, retrying", extra=kv(
                    url=self.settings.safe_database_url, error=type(exc).__name__, retry_in_s=delay))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
        try:
            before = await (schema.migrate(connection) if migrate else schema.version(connection))
            if not migrate and before == 0:
                raise ConfigurationError("the database holds no journal yet: start `calc-journal serve` "
                                         "(or run `calc-journal migrate`) against it first")
        except ConfigurationError:
            raise
        except Exception as exc:
            raise self.error(exc) from None
        finally:
            await connection.close()
        self._pool = await asyncpg.create_pool(self._dsn, min_size=0, max_size=3,
                                               command_timeout=STATEMENT_TIMEOUT_S,
                                               timeout=CONNECT_TIMEOUT_S)
        if migrate:
            log.info("database ready", extra=kv(url=self.settings.safe_database_url,
                                                schema=schema.LATEST, was=before))
        return before

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    @property
    def pool(self) -> asyncpg.Pool:
        assert self._pool is not None, "open() first"
        return self._pool

    async def record(self, outcomes: Sequence[Outcome]) -> Recorded:
        """Record `outcomes` in one transaction: all committed, or none (and an error of ours)."""
        args = [(o.request_event_id, o.event_id, o.status, o.operation, o.operands, o.result, o.reason,
                 o.detail, o.attempts, o.correlation_id, o.processed_by, o.occurred_at) for o in outcomes]
        try:
            async with self.pool.acquire() as connection, connection.transaction():
                rows = await connection.fetchmany(sql.RECORD, args)
        except Exception as exc:
            error = self.error(exc)
            if isinstance(error, DatabaseRefused):
                # a session keeps the read-only default it started with: the next try needs new ones
                await self.pool.expire_connections()
            raise error from None
        new = sum(1 for row in rows if row["outcomes"] == 1)
        return Recorded(new=new, again=len(rows) - new, seen=len(outcomes) - len(rows))

    async def ping(self) -> None:
        try:
            await self.pool.fetchval("SELECT 1", timeout=CONNECT_TIMEOUT_S)
        except Exception as exc:
            raise self.error(exc) from None

    async def find(self, key: str, limit: int = 100) -> list[dict[str, Any]]:
        """Rows whose request_event_id or correlation_id is `key` (the request's own row first)."""
        try:
            rows = await self.pool.fetch(sql.BY_ID, key, limit)
        except Exception as exc:
            raise self.error(exc) from None
        return [dict(row) for row in rows]

    async def stats(self) -> dict[str, Any]:
        """Counts by status, reason and operation, and the duplicates seen."""
        try:
            async with self.pool.acquire() as connection:
                totals = dict(await connection.fetchrow(sql.TOTALS) or {})
                by = {name: {str(k): int(n) for k, n in await connection.fetch(query)}
                      for name, query in (("by_status", sql.BY_STATUS), ("by_reason", sql.BY_REASON),
                                          ("by_operation", sql.BY_OPERATION))}
        except Exception as exc:
            raise self.error(exc) from None
        return {**totals, **by}
