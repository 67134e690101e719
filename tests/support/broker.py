"""Which RabbitMQ the integration tests talk to, how it is started, and a handle on it.

Order of choice: RABBITMQ_URL (an existing broker), else a testcontainers `rabbitmq:4.0-management`
when Docker answers, else a private rabbitmq-server node. CALC_TEST_BROKER=env|testcontainers|
private forces one of them.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from tests.support.admin import (
    BrokerAdmin,
    BrokerAdminError,
    ContainerCtlAdmin,
    LocalCtlAdmin,
    ManagementApiAdmin,
)
from tests.support.private_node import PrivateNode, PrivateNodeError, TlsFiles, join_cluster, server_script
from tests.support.readiness import amqp_handshake_ok, wait_for

__all__ = [
    "Broker",
    "BrokerAdmin",
    "BrokerAdminError",
    "BrokerKind",
    "BrokerSetupError",
    "ChaosNodeKind",
    "PrivateNode",
    "PrivateNodeError",
    "TlsFiles",
    "choose_broker_kind",
    "choose_chaos_node_kind",
    "join_cluster",
    "open_broker",
    "redact",
    "temporary_vhost",
    "vhost_name",
    "wait_for",
]

BrokerKind = Literal["env", "testcontainers", "private"]
KINDS: tuple[BrokerKind, ...] = ("env", "testcontainers", "private")
ChaosNodeKind = Literal["private", "container"]
CHAOS_NODE_KINDS: tuple[ChaosNodeKind, ...] = ("private", "container")
DEFAULT_IMAGE = "rabbitmq:4.0-management"
LOCAL_HOSTS = frozenset({"localhost", "127.0.0.1", "::1"})


class BrokerSetupError(RuntimeError):
    """No usable test broker: misconfigured environment, or the chosen broker did not come up."""


@dataclass(frozen=True)
class Broker:
    """A running broker for the test session and the means to administer it."""

    url: str
    """AMQP URL of the default vhost, path `/`."""
    host: str
    port: int
    admin: BrokerAdmin
    kind: BrokerKind
    management_url: str | None = None
    """HTTP API base (with credentials) when the broker has the management plugin."""

    @property
    def username(self) -> str:
        return unquote(urlsplit(self.url).username or "guest")

    @property
    def password(self) -> str:
        return unquote(urlsplit(self.url).password or "guest")

    def url_for(self, vhost: str) -> str:
        """The AMQP URL of `vhost` on this broker, e.g. amqp://guest:guest@127.0.0.1:5672/test-abc."""
        parts = urlsplit(self.url)
        return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def vhost_name(url: str) -> str:
    """The vhost an AMQP URL points at ("/" for an empty path)."""
    return unquote(urlsplit(url).path[1:]) or "/"


def redact(url: str) -> str:
    """`url` with its password replaced by ***, for logs and reports."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.rsplit("@", 1)[1]
    return urlunsplit(parts._replace(netloc=f"{parts.username}:***@{netloc}"))


def docker_answers() -> bool:
    """True when a Docker engine answers a ping (DOCKER_HOST or the default socket)."""
    try:
        import docker  # type: ignore[import-untyped]

        client = docker.from_env(timeout=5)
    except Exception:
        return False
    try:
        return bool(client.ping())
    except Exception:
        return False
    finally:
        client.close()


def choose_broker_kind(env: Mapping[str, str] | None = None) -> BrokerKind:
    """Which kind of broker this run uses; CALC_TEST_BROKER overrides the automatic choice."""
    env = os.environ if env is None else env
    forced = env.get("CALC_TEST_BROKER", "").strip().lower()
    if forced and forced != "auto":
        if forced not in KINDS:
            raise BrokerSetupError(f"CALC_TEST_BROKER={forced!r}: expected one of auto, {', '.join(KINDS)}")
        if forced == "env" and not env.get("RABBITMQ_URL"):
            raise BrokerSetupError("CALC_TEST_BROKER=env needs RABBITMQ_URL")
        return forced
    if env.get("RABBITMQ_URL"):
        return "env"
    if docker_answers():
        return "testcontainers"
    return "private"


def choose_chaos_node_kind(env: Mapping[str, str] | None = None) -> tuple[ChaosNodeKind, str]:
    """Where the nodes that chaos tests break come from, and why: private rabbitmq-server nodes
    when the server is installed (CALC_RABBITMQ_SERVER is where to look), else RabbitMQ
    containers; CALC_CHAOS_BROKER=private|container forces one."""
    env = os.environ if env is None else env
    forced = env.get("CALC_CHAOS_BROKER", "").strip().lower()
    if forced and forced != "auto":
        if forced not in CHAOS_NODE_KINDS:
            raise BrokerSetupError(
                f"CALC_CHAOS_BROKER={forced!r}: expected one of auto, {', '.join(CHAOS_NODE_KINDS)}")
        return forced, f"CALC_CHAOS_BROKER={forced}"
    try:
        return "private", f"rabbitmq-server at {server_script()}"
    except PrivateNodeError as exc:
        return "container", str(exc).split(";")[0]


@contextmanager
def open_broker(kind: BrokerKind, env: Mapping[str, str] | None = None) -> Iterator[Broker]:
    """Start (or attach to) a broker of `kind`, yield it ready for AMQP, and tear it down after."""
    env = os.environ if env is None else env
    if kind == "env":
        yield _env_broker(env)
    elif kind == "testcontainers":
        with _testcontainers_broker(env.get("CALC_TEST_RABBITMQ_IMAGE", DEFAULT_IMAGE)) as broker:
            yield broker
    else:
        with _private_broker() as broker:
            yield broker


@contextmanager
def temporary_vhost(broker: Broker, prefix: str = "test") -> Iterator[str]:
    """A fresh vhost `<prefix>-<uuid8>` the broker's user may fully use; yields its AMQP URL.

    The vhost (and every queue and exchange in it) is deleted on exit, also when the body raises.
    """
    name = f"{prefix}-{uuid.uuid4().hex[:8]}"
    broker.admin.create_vhost(name)
    try:
        broker.admin.set_permissions(name, broker.username)
        yield broker.url_for(name)
    finally:
        broker.admin.delete_vhost(name)


def _env_broker(env: Mapping[str, str]) -> Broker:
    raw_url = env.get("RABBITMQ_URL", "")
    parts = urlsplit(raw_url)
    if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
        raise BrokerSetupError(f"RABBITMQ_URL must look like amqp://user:pass@host:5672/: {raw_url!r}")
    port = parts.port or (5671 if parts.scheme == "amqps" else 5672)
    management_url = env.get("RABBITMQ_MANAGEMENT_URL") or None
    admin: BrokerAdmin
    if management_url:
        admin = ManagementApiAdmin(management_url)
    elif parts.hostname in LOCAL_HOSTS:
        admin = LocalCtlAdmin()
    else:
        raise BrokerSetupError(
            f"RABBITMQ_URL points at {parts.hostname}, where local rabbitmqctl cannot reach; "
            "set RABBITMQ_MANAGEMENT_URL=http://user:pass@host:15672 so tests can create vhosts"
        )
    if not amqp_handshake_ok(parts.hostname, port, timeout=5.0):
        raise BrokerSetupError(f"RABBITMQ_URL {redact(raw_url)} does not answer AMQP")
    return Broker(
        url=urlunsplit(parts._replace(path="/")),
        host=parts.hostname,
        port=port,
        admin=admin,
        kind="env",
        management_url=management_url,
    )


@contextmanager
def _testcontainers_broker(image: str, timeout: float = 120.0) -> Iterator[Broker]:
    # Ryuk (the reaper container) cannot be pulled here; testcontainers reads this at import.
    os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
    from testcontainers.core.container import DockerContainer

    container = DockerContainer(image).with_exposed_ports(5672, 15672)
    try:
        container.start()
        host = container.get_container_host_ip()
        port = int(container.get_exposed_port(5672))

        def amqp_up() -> bool:
            wrapped = container.get_wrapped_container()
            wrapped.reload()
            if wrapped.status != "running":
                logs = wrapped.logs(tail=40).decode(errors="replace")
                raise BrokerSetupError(f"container {image} is {wrapped.status}:\n{logs}")
            return amqp_handshake_ok(host, port)

        # Not `rabbitmq-diagnostics ping`: it succeeds before port 5672 accepts connections,
        # and docker's port proxy accepts TCP even earlier. Connection.Start is the signal.
        wait_for(amqp_up, timeout, 0.5, f"AMQP from {image} on {host}:{port}")
    except Exception as exc:
        container.stop()
        if isinstance(exc, BrokerSetupError):
            raise
        raise BrokerSetupError(f"RabbitMQ container {image} did not start: {exc}") from exc
    try:
        management_port = int(container.get_exposed_port(15672))
        management_url = f"http://guest:guest@{host}:{management_port}"
        admin: BrokerAdmin = ManagementApiAdmin(management_url)
        # The HTTP API makes a vhost in ~0.07 s against ~1.5 s for rabbitmqctl via docker exec;
        # fall back to the CLI if the management listener is not up in time.
        if not _answers(admin, timeout=30):
            admin = ContainerCtlAdmin(container)
        yield Broker(
            url=f"amqp://guest:guest@{host}:{port}/",
            host=host,
            port=port,
            admin=admin,
            kind="testcontainers",
            management_url=management_url,
        )
    finally:
        container.stop()


@contextmanager
def _private_broker() -> Iterator[Broker]:
    node = PrivateNode(name=f"calc-session-{uuid.uuid4().hex[:6]}")
    try:
        try:
            node.start()
        except PrivateNodeError as exc:
            raise BrokerSetupError(str(exc)) from exc
        yield Broker(url=node.url, host=node.host, port=node.amqp_port, admin=node.admin, kind="private")
    finally:
        node.cleanup()


def _answers(admin: BrokerAdmin, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            admin.list_vhosts()
            return True
        except Exception:
            time.sleep(0.5)
    return False
