"""Which PostgreSQL the journal's tests use, a fresh database per test, and private servers to break.

Chosen like the broker: DATABASE_URL (an existing server; each test makes its own database on it),
else a testcontainers `postgres:17` (CALC_TEST_POSTGRES_IMAGE) when Docker answers and has that
image (nothing can be pulled here), else the machine's 127.0.0.1:5432 as user postgres.
CALC_TEST_DATABASE=env|testcontainers|local forces one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import pytest

from tests.support.broker import docker_answers
from tests.support.readiness import wait_for

DatabaseKind = Literal["env", "testcontainers", "local"]
KINDS: tuple[DatabaseKind, ...] = ("env", "testcontainers", "local")
DEFAULT_IMAGE = "postgres:17"
LOCAL_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
PG_BIN = Path(os.environ.get("CALC_PG_BIN", "/usr/lib/postgresql/15/bin"))

T = TypeVar("T")


class DatabaseSetupError(RuntimeError):
    """No usable test database server."""


def run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run `coroutine` to its end on a loop of its own, in a thread: callable from sync code
    whether or not an event loop is running in this thread (a fixture of an async test)."""
    box: list[Any] = []

    def target() -> None:
        try:
            box.append((True, asyncio.run(coroutine)))
        except BaseException as exc:
            box.append((False, exc))

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    ok, value = box[0]
    if not ok:
        raise value
    return value  # type: ignore[no-any-return]


@dataclass(frozen=True)
class DatabaseServer:
    """A PostgreSQL server the tests may create and drop databases on."""

    url: str
    """URL of its maintenance database (`postgres`) as a superuser."""
    kind: DatabaseKind

    def url_for(self, database: str) -> str:
        return urlunsplit(urlsplit(self.url)._replace(path="/" + database))

    async def execute(self, statement: str, database: str = "postgres") -> None:
        connection = await asyncpg.connect(self.url_for(database), timeout=10)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    async def fetch(self, query: str, database: str, *args: object) -> list[dict[str, Any]]:
        connection = await asyncpg.connect(self.url_for(database), timeout=10)
        try:
            return [dict(row) for row in await connection.fetch(query, *args)]
        finally:
            await connection.close()


def image_present(image: str) -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=5)
        try:
            client.images.get(image)
            return True
        finally:
            client.close()
    except Exception:
        return False


def choose_database_kind(env: Mapping[str, str] | None = None) -> DatabaseKind:
    env = os.environ if env is None else env
    forced = env.get("CALC_TEST_DATABASE", "").strip().lower()
    if forced and forced != "auto":
        if forced not in KINDS:
            raise DatabaseSetupError(
                f"CALC_TEST_DATABASE={forced!r}: expected one of auto, {', '.join(KINDS)}")
        if forced == "env" and not env.get("DATABASE_URL"):
            raise DatabaseSetupError("CALC_TEST_DATABASE=env needs DATABASE_URL")
        return forced
    if env.get("DATABASE_URL"):
        return "env"
    image = env.get("CALC_TEST_POSTGRES_IMAGE", DEFAULT_IMAGE)
    if docker_answers() and image_present(image):
        return "testcontainers"
    return "local"


async def _answers(url: str) -> bool:
    try:
        connection = await asyncpg.connect(url, timeout=3)
    except Exception:
        return False
    await connection.close()
    return True


@contextlib.contextmanager
def open_server(kind: DatabaseKind, env: Mapping[str, str] | None = None) -> Iterator[DatabaseServer]:
    env = os.environ if env is None else env
    if kind in ("env", "local"):
        url = env.get("DATABASE_URL", "") if kind == "env" else LOCAL_URL
        url = urlunsplit(urlsplit(url)._replace(path="/postgres"))
        if not run(_answers(url)):
            raise DatabaseSetupError(f"PostgreSQL at {urlsplit(url).hostname}:{urlsplit(url).port} "
                                     f"({kind}) does not answer")
        yield DatabaseServer(url, kind)
        return
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.container import DockerContainer

    image = env.get("CALC_TEST_POSTGRES_IMAGE", DEFAULT_IMAGE)
    container = (DockerContainer(image).with_exposed_ports(5432)
                 .with_env("POSTGRES_PASSWORD", "test").with_env("POSTGRES_HOST_AUTH_METHOD", "md5"))
    container.start()
    try:
        host = container.get_container_host_ip()
        url = f"postgresql://postgres:test@{host}:{container.get_exposed_port(5432)}/postgres"
        wait_for(lambda: run(_answers(url)), 90, 0.5, f"PostgreSQL from {image}")
        yield DatabaseServer(url, "testcontainers")
    finally:
        container.stop()


@contextlib.contextmanager
def temporary_database(server: DatabaseServer, prefix: str = "test_journal") -> Iterator[str]:
    """A fresh database `<prefix>_<hex8>`; yields its URL; dropped (connections ended) on exit."""
    name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    run(server.execute(f'CREATE DATABASE "{name}"'))
    try:
        yield server.url_for(name)
    finally:
        run(server.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class PrivatePostgres:
    """A PostgreSQL cluster of its own (Debian's binaries, a temp dir, a free port) to stop and start.

    Never the machine's server on 5432. As root it runs as the `postgres` OS user (initdb refuses root).
    """

    def __init__(self) -> None:
        if not (PG_BIN / "pg_ctl").exists():
            raise DatabaseSetupError(f"no PostgreSQL server binaries in {PG_BIN} (CALC_PG_BIN)")
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="calc-pg-"))
        self.data = self.root / "data"
        self.log = self.root / "server.log"
        self._as: list[str] = []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            self._as = ["runuser", "-u", "postgres", "--"]
        self._ctl(["initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8",
                   "--no-sync"], timeout=120)

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _ctl(self, args: list[str], timeout: float = 60) -> None:
        done = subprocess.run([*self._as, str(PG_BIN / args[0]), *args[1:]], capture_output=True,
                              text=True, timeout=timeout, check=False)
        if done.returncode != 0:
            raise DatabaseSetupError(f"{args[0]} failed ({done.returncode}): {done.stderr[-2000:]}")

    def start(self) -> None:
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self._ctl(["pg_ctl", "-D", str(self.data), "-l", str(self.log), "-o", options, "-w", "start"])
        wait_for(lambda: run(_answers(self.url)), 30, 0.2, f"private PostgreSQL on {self.port}")

    def stop(self, mode: str = "fast") -> None:
        """`fast`: ends every session (the journal sees its connection drop); `immediate`: a crash."""
        self._ctl(["pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop"])

    def server(self) -> DatabaseServer:
        return DatabaseServer(self.url, "local")

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            self.stop("immediate")
        time.sleep(0.1)
        shutil.rmtree(self.root, ignore_errors=True)


# -- fixtures (tests/conftest.py imports them) ---------------------------------------------------


@pytest.fixture(scope="session")
def database_server() -> Iterator[DatabaseServer]:
    """The session's PostgreSQL server (see the module docstring for which)."""
    with open_server(choose_database_kind()) as server:
        yield server


@pytest.fixture
def database_url(database_server: DatabaseServer) -> Iterator[str]:
    """URL of a fresh database, dropped after the test whatever its outcome."""
    with temporary_database(database_server) as url:
        yield url


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A started PostgreSQL cluster of this test's own, to stop and start; deleted after."""
    server = PrivatePostgres()
    try:
        server.start()
        yield server
    finally:
        server.cleanup()
