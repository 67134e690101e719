"""RabbitMQ containers the chaos tests may break, in place of private nodes: RabbitMQ 4.0.

Where no rabbitmq-server is installed (or with CALC_CHAOS_BROKER=container) the `private_node`
and `private_cluster` fixtures hand these out (image `CALC_TEST_RABBITMQ_IMAGE`, default
rabbitmq:4.0-management), so every chaos scenario runs on the version docker compose ships:
TLS files, extra config and definitions are copied into a container before it starts, and a
cluster is containers on a docker network of their own.
"""

from __future__ import annotations

import os
import secrets
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tests.support.admin import ContainerCtlAdmin
from tests.support.private_node import (
    ClusterMember,
    PrivateNodeError,
    TlsFiles,
    cleanup_all,
    free_port,
    join_cluster,
)
from tests.support.readiness import amqp_handshake_ok, wait_for

DEFAULT_IMAGE = "rabbitmq:4.0-management"
CONFIG_FILE = "/etc/rabbitmq/conf.d/90-calc-tests.conf"
"""Read after the image's own conf.d defaults (which let guest log in from outside loopback)."""
TLS_DIR = "/etc/rabbitmq/calc-tls"
DEFINITIONS_FILE = "/etc/rabbitmq/calc-definitions.json"
AMQP_PORT, AMQPS_PORT = 5672, 5671


class ContainerNode(ClusterMember):
    """One broker container with what the chaos tests use of a PrivateNode: `url`, `tls_url`,
    `admin.ctl`, `kill()`, `start()` and `restart()` (same data, same ports), `stop()`,
    `freeze()` and `thaw()`, and joining a cluster (ClusterMember).

    The host name is the container's name, so the node is rabbit@<name> before and after a
    restart, and other containers on its network reach it by that name.
    """

    host = "127.0.0.1"

    def __init__(
        self,
        name: str | None = None,
        *,
        image: str | None = None,
        tls: TlsFiles | None = None,
        extra_config: Sequence[str] = (),
        definitions: Path | None = None,
        network: Any = None,
        cookie: str | None = None,
    ) -> None:
        # Ryuk (the reaper container) cannot be pulled here; testcontainers reads this at import.
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        from testcontainers.core.container import DockerContainer

        self.image = image or os.environ.get("CALC_TEST_RABBITMQ_IMAGE", DEFAULT_IMAGE)
        self.name = name or f"calc-chaos-{uuid.uuid4().hex[:8]}"
        self.nodename = f"rabbit@{self.name}"
        self.cookie = cookie or secrets.token_hex(16)
        self.tls = tls
        self.definitions = definitions
        # Fixed host ports on loopback only (guest may log in from outside the container): a
        # container started again after a kill keeps its addresses.
        taken: set[int] = set()
        self.amqp_port = free_port(taken)
        self.tls_port: int | None = free_port(taken) if tls else None
        container = (DockerContainer(self.image).with_name(self.name)
                     .with_kwargs(hostname=self.name)
                     .with_env("RABBITMQ_ERLANG_COOKIE", self.cookie))
        container.ports[f"{AMQP_PORT}/tcp"] = (self.host, self.amqp_port)  # type: ignore[assignment]
        if self.tls_port is not None:
            container.ports[f"{AMQPS_PORT}/tcp"] = (self.host, self.tls_port)  # type: ignore[assignment]
        if network is not None:
            container.with_network(network).with_network_aliases(self.name)
        # Copied in, not bind-mounted: works with any Docker engine (a VM, a remote host), and the
        # mode makes them readable by the image's rabbitmq user (the key too: throwaway test PKI).
        config = self._config(tuple(extra_config))
        if config:
            container.with_copy_into_container(config.encode(), CONFIG_FILE, 0o644)
        if tls is not None:
            for source, target in ((tls.ca, "ca.pem"), (tls.cert, "cert.pem"), (tls.key, "key.pem")):
                container.with_copy_into_container(source.read_bytes(), f"{TLS_DIR}/{target}", 0o644)
        if definitions is not None:
            container.with_copy_into_container(definitions.read_bytes(), DEFINITIONS_FILE, 0o644)
        self._container = container
        self.admin = ContainerCtlAdmin(container)
        self.starts = 0
        self._launched_at = 0.0

    def _config(self, extra: tuple[str, ...]) -> str:
        lines: list[str] = []
        if self.tls is not None:
            lines += [
                f"listeners.ssl.default = {AMQPS_PORT}",
                f"ssl_options.cacertfile = {TLS_DIR}/ca.pem",
                f"ssl_options.certfile = {TLS_DIR}/cert.pem",
                f"ssl_options.keyfile = {TLS_DIR}/key.pem",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        if self.definitions is not None:
            # As deploy/rabbitmq/rabbitmq.conf does it; no guest user is created then.
            lines.append(f"load_definitions = {DEFINITIONS_FILE}")
        lines += extra
        return "\n".join(lines) + "\n" if lines else ""

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """AMQP URL of the default vhost as guest (absent when definitions were loaded)."""
        return f"amqp://guest:guest@{self.host}:{self.amqp_port}/"

    @property
    def tls_url(self) -> str:
        """AMQPS URL of the default vhost; the name `localhost` is in the test certificate."""
        if self.tls_port is None:
            raise PrivateNodeError(f"{self.name} was created without tls=")
        return f"amqps://guest:guest@localhost:{self.tls_port}/"

    # -- lifecycle -------------------------------------------------------------------------

    def _wrapped(self) -> Any:
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        return wrapped

    def start(self, wait: bool = True, timeout: float = 120.0) -> None:
        """Run the container the first time, start it again (same data) after a kill or stop."""
        self._launched_at = time.monotonic()
        if self.starts == 0:
            self._container.start()
        else:
            self._wrapped().start()
        self.starts += 1
        if wait:
            self.wait_ready(timeout)

    def wait_ready(self, timeout: float = 120.0) -> float:
        """Block until AMQP answers (and, with TLS, boot has finished: every listener is up)."""
        def up() -> bool:
            wrapped = self._wrapped()
            if wrapped.status != "running":
                raise PrivateNodeError(f"{self.name} is {wrapped.status}:\n{self.log_tail()}")
            return amqp_handshake_ok(self.host, self.amqp_port)

        deadline = time.monotonic() + timeout
        wait_for(up, timeout, 0.5, f"AMQP from {self.name} ({self.image})")
        if self.tls is not None:
            remaining = max(5.0, deadline - time.monotonic())
            self.admin.ctl(["await_startup", "--timeout", str(int(remaining))], remaining + 15)
        elapsed = time.monotonic() - self._launched_at
        print(f"broker container {self.name} ({self.image}, start #{self.starts}) ready in "
              f"{elapsed:.1f}s (amqp {self.amqp_port})")
        return elapsed

    def is_running(self) -> bool:
        """True while the container runs (also while it is paused)."""
        try:
            return self._wrapped().status in ("running", "paused")
        except Exception:  # never created, or removed
            return False

    def stop(self, timeout: float = 60.0) -> None:
        """Stop gracefully (docker stop: SIGTERM, then SIGKILL after `timeout`); the data stays."""
        if self.is_running():
            self._wrapped().stop(timeout=int(timeout))

    def kill(self) -> None:
        """SIGKILL the broker (docker kill): the container stops, its data stays."""
        self._wrapped().kill()
        wait_for(lambda: self._wrapped().status != "running", 30, 0.2, f"{self.name} to stop")

    def restart(self, timeout: float = 120.0) -> None:
        """Stop gracefully if running, then start again on the same ports and data."""
        self.stop()
        self.start(wait=True, timeout=timeout)

    def freeze(self) -> None:
        """docker pause (the cgroup freezer): as SIGSTOP, no reads, writes or confirms.

        The freezer gives up ("unable to freeze") while a thread sits in an uninterruptible
        wait, such as an fsync on a busy disk; a moment later it succeeds.
        """
        from docker.errors import APIError  # type: ignore[import-untyped]

        for attempt in range(5):
            try:
                self._wrapped().pause()
                return
            except APIError as exc:
                if "unable to freeze" not in str(exc) or attempt == 4:
                    raise
                time.sleep(0.2)

    def thaw(self) -> None:
        self._wrapped().unpause()

    def beam_pids(self) -> list[int]:
        """Host PIDs of the Erlang VMs in the container; none when it is not running."""
        try:
            listing = self._wrapped().top(ps_args="-o pid,comm")
        except Exception:  # not running, or gone
            return []
        return [int(row[0]) for row in listing.get("Processes") or [] if row[1].startswith("beam")]

    def cleanup(self) -> None:
        """Remove the container and its volume, paused or stopped; safe to call more than once."""
        try:
            wrapped = self._wrapped()
        except Exception:
            return
        if wrapped.status == "paused":
            wrapped.unpause()
        self._container.stop()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return str(self._container.get_wrapped_container().logs(tail=lines).decode(errors="replace"))
        except Exception as exc:  # the container is gone
            return f"(no logs: {exc})"

    def __repr__(self) -> str:
        return f"ContainerNode({self.name}, {self.image}, amqp {self.amqp_port})"


class ContainerNodePool:
    """Starts broker containers (and cluster networks) for one test and removes them all after."""

    def __init__(self) -> None:
        self.nodes: list[ContainerNode] = []
        self.networks: list[Any] = []

    def node(self, *, tls: TlsFiles | None = None, extra_config: Sequence[str] = (),
             definitions: Path | None = None) -> ContainerNode:
        """A started, ready container."""
        node = ContainerNode(tls=tls, extra_config=extra_config, definitions=definitions)
        self.nodes.append(node)
        node.start()
        return node

    def cluster(self, size: int = 3, *, extra_config: Sequence[str] = ()) -> list[ContainerNode]:
        """`size` started containers joined into one cluster on a network of their own."""
        from testcontainers.core.network import Network

        network = Network()
        network.name = f"calc-chaos-{uuid.uuid4().hex[:8]}"
        network.create()
        self.networks.append(network)
        cookie = secrets.token_hex(16)
        nodes = [ContainerNode(f"{network.name}-{i}", network=network, cookie=cookie,
                               extra_config=extra_config) for i in range(size)]
        self.nodes.extend(nodes)
        for node in nodes:  # boot in parallel, then wait for each
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
        join_cluster(nodes)
        return nodes

    def cleanup(self) -> None:
        """Remove every container, then the networks they were on."""
        try:
            cleanup_all(self.nodes)
        finally:
            errors = []
            for network in self.networks:
                try:
                    network.remove()
                except Exception as exc:
                    errors.append(f"network {network.name}: {exc}")
            self.networks.clear()
            if errors:
                raise PrivateNodeError("cleanup failed: " + "; ".join(errors))
