"""Each database error becomes the error of its cure, in one line, never with the password."""

from __future__ import annotations

import asyncpg
import pytest

from journal.store import DatabaseRefused, DatabaseUnavailable, RowRefused, Store
from messaging.settings import Settings

STORE = Store(Settings(database_url="postgresql://journal:hunter2-secret@db:5432/calc"))


@pytest.mark.parametrize(("exc", "kind", "says"), [
    (asyncpg.exceptions.ReadOnlySQLTransactionError("cannot execute INSERT in a read-only transaction"),
     DatabaseRefused, "the database is read-only"),
    (asyncpg.exceptions.DiskFullError("could not extend file: No space left on device"),
     DatabaseRefused, "out of disk"),
    (asyncpg.exceptions.InsufficientPrivilegeError("permission denied for table journal_results"),
     DatabaseRefused, "may not write the journal's tables"),
    (asyncpg.exceptions.InvalidPasswordError("password authentication failed for user journal"),
     DatabaseRefused, "refused the user or password"),
    (asyncpg.exceptions.InvalidCatalogNameError('database "calc" does not exist'),
     DatabaseRefused, "does not exist: create it"),
    (asyncpg.exceptions.CannotConnectNowError("the database system is starting up"),
     DatabaseUnavailable, "not reachable"),
    (asyncpg.exceptions.AdminShutdownError("terminating connection due to administrator command"),
     DatabaseUnavailable, "not reachable"),
    (ConnectionRefusedError(111, "Connect call failed ('10.0.0.1', 5432) hunter2-secret"),
     DatabaseUnavailable, "postgresql://journal:***@db:5432/calc not reachable"),
    (TimeoutError(), DatabaseUnavailable, "not reachable"),
    (asyncpg.exceptions.DataError("value out of int32 range"), RowRefused, "value out of int32 range"),
])
def test_errors_by_their_cure(exc: Exception, kind: type[Exception], says: str) -> None:
    error = STORE.error(exc)
    assert type(error) is kind and says in str(error)
    assert "hunter2" not in str(error) and "\n" not in str(error)
