"""Broker fixtures for the test tiers: the session broker, a vhost per test, private nodes."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import private_node as private_nodes
from tests.support.broker import (
    Broker,
    BrokerKind,
    BrokerSetupError,
    choose_broker_kind,
    choose_chaos_node_kind,
    open_broker,
    redact,
    temporary_vhost,
)
from tests.support.container_node import ContainerNodePool
from tests.support.database import database_server, database_url, private_postgres  # noqa: F401
from tests.support.private_node import ClusterFactory, NodeFactory, PrivateNodePool

INTEGRATION_DIR = Path(__file__).parent.resolve() / "integration"

_KIND = pytest.StashKey[BrokerKind | BrokerSetupError]()
_REPORT = pytest.StashKey[list[str]]()


def _broker_kind(config: pytest.Config) -> BrokerKind:
    """The broker kind for this run, decided once (it may ping Docker)."""
    if _KIND not in config.stash:
        try:
            config.stash[_KIND] = choose_broker_kind()
        except BrokerSetupError as exc:
            config.stash[_KIND] = exc
    kind = config.stash[_KIND]
    if isinstance(kind, BrokerSetupError):
        raise kind
    return kind


def _announce(config: pytest.Config, line: str) -> None:
    """Show `line` now (past output capture) and again in the end-of-run summary."""
    config.stash.setdefault(_REPORT, []).append(line)
    reporter = config.pluginmanager.get_plugin("terminalreporter")
    capture = config.pluginmanager.get_plugin("capturemanager")
    if reporter is None:
        return
    suspended = capture.global_and_fixture_disabled() if capture else contextlib.nullcontext()
    with suspended:
        reporter.write_line(line)


def pytest_report_header(config: pytest.Config) -> list[str]:
    try:
        lines = [f"test broker: {_broker_kind(config)} (CALC_TEST_BROKER=env|testcontainers|private)"]
    except BrokerSetupError as exc:
        lines = [f"test broker: unusable: {exc}"]
    try:
        kind, reason = choose_chaos_node_kind()
        lines.append(f"chaos nodes: {kind}, {reason} (CALC_CHAOS_BROKER=auto|private|container)")
    except BrokerSetupError as exc:
        lines.append(f"chaos nodes: unusable: {exc}")
    return lines


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(INTEGRATION_DIR):
            item.add_marker(pytest.mark.integration)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    stash = terminalreporter.config.stash
    reported: list[str] = stash[_REPORT] if _REPORT in stash else []
    lines = [*reported]
    lines += [
        f"private node {name} start #{nth}: ready in {seconds:.1f}s"
        for name, nth, seconds in private_nodes.STARTUP_TIMES
    ]
    if lines:
        terminalreporter.section("test brokers")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def broker(request: pytest.FixtureRequest) -> Iterator[Broker]:
    """The session's RabbitMQ: RABBITMQ_URL, else a testcontainer, else a private node."""
    kind = _broker_kind(request.config)
    began = time.monotonic()
    with open_broker(kind) as session_broker:
        version = session_broker.admin.version()
        _announce(
            request.config,
            f"test broker: {kind}, RabbitMQ {version} at {redact(session_broker.url)}, "
            f"admin {session_broker.admin!r}, ready in {time.monotonic() - began:.1f}s",
        )
        yield session_broker


@pytest.fixture
def vhost_url(broker: Broker) -> Iterator[str]:
    """AMQP URL of a fresh vhost `test-<uuid8>`, deleted after the test whatever its outcome."""
    with temporary_vhost(broker) as url:
        yield url


def _node_pool() -> PrivateNodePool | ContainerNodePool:
    """Private rabbitmq-server nodes where the server is installed, else RabbitMQ containers."""
    kind, _ = choose_chaos_node_kind()
    return ContainerNodePool() if kind == "container" else PrivateNodePool()


@pytest.fixture
def private_node() -> Iterator[NodeFactory]:
    """Factory: `private_node(tls=None, definitions=None)` returns a started node; all are killed
    and deleted after. Without a local rabbitmq-server they are RabbitMQ 4.0 containers."""
    pool = _node_pool()
    yield pool.node  # type: ignore[misc]
    pool.cleanup()


@pytest.fixture
def private_cluster() -> Iterator[ClusterFactory]:
    """Factory: `private_cluster(3)` returns nodes joined in one cluster; killed and deleted after.
    Without a local rabbitmq-server they are containers on a docker network of their own."""
    pool = _node_pool()
    yield pool.cluster  # type: ignore[misc]
    pool.cleanup()
