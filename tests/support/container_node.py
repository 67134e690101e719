"""A RabbitMQ container the chaos tests may break, in place of a private node: RabbitMQ 4.0.

`CALC_CHAOS_BROKER=container` makes the `private_node` fixture hand these out (image
`CALC_TEST_RABBITMQ_IMAGE`, default rabbitmq:4.0-management), so the chaos scenarios that only
need a broker to kill, restart, freeze or alarm run against the version docker compose ships.
Tests that need a private node's files (TLS, config, clusters) are marked `private_only`.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

from tests.support.admin import ContainerCtlAdmin
from tests.support.private_node import PrivateNodeError, cleanup_all, free_port
from tests.support.readiness import amqp_handshake_ok, wait_for

DEFAULT_IMAGE = "rabbitmq:4.0-management"


class ContainerNode:
    """One broker container with what the portable chaos tests use of a PrivateNode: `url`,
    `admin.ctl`, `kill()` and `start()` (same data, same port), `freeze()` and `thaw()`."""

    host = "127.0.0.1"

    def __init__(self, image: str | None = None) -> None:
        # Ryuk (the reaper container) cannot be pulled here; testcontainers reads this at import.
        os.environ.setdefault("TESTCONTAINERS_RYUK_DISABLED", "true")
        from testcontainers.core.container import DockerContainer

        self.image = image or os.environ.get("CALC_TEST_RABBITMQ_IMAGE", DEFAULT_IMAGE)
        self.name = f"calc-chaos-{uuid.uuid4().hex[:8]}"
        self.nodename = self.name
        # a fixed host port: a container started again after a kill keeps its address
        self.amqp_port = free_port(set())
        self._container = (DockerContainer(self.image).with_name(self.name)
                           .with_bind_ports(5672, self.amqp_port))
        self.admin = ContainerCtlAdmin(self._container)
        self.starts = 0

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@{self.host}:{self.amqp_port}/"

    def _wrapped(self) -> Any:
        wrapped = self._container.get_wrapped_container()
        wrapped.reload()
        return wrapped

    def start(self, wait: bool = True, timeout: float = 120.0) -> None:
        """Run the container the first time, start it again (same data) after `kill()`."""
        started = time.monotonic()
        if self.starts == 0:
            self._container.start()
        else:
            self._wrapped().start()
        self.starts += 1
        if wait:
            def up() -> bool:
                wrapped = self._wrapped()
                if wrapped.status != "running":
                    raise PrivateNodeError(f"{self.name} is {wrapped.status}:\n{self.log_tail()}")
                return amqp_handshake_ok(self.host, self.amqp_port)

            wait_for(up, timeout, 0.5, f"AMQP from {self.name} ({self.image})")
            print(f"broker container {self.name} ({self.image}, start #{self.starts}) ready in "
                  f"{time.monotonic() - started:.1f}s (amqp {self.amqp_port})")

    def kill(self) -> None:
        """SIGKILL the broker (docker kill): the container stops, its data stays."""
        self._wrapped().kill()
        wait_for(lambda: self._wrapped().status != "running", 30, 0.2, f"{self.name} to stop")

    def freeze(self) -> None:
        """docker pause (the cgroup freezer): as SIGSTOP, no reads, writes or confirms."""
        self._wrapped().pause()

    def thaw(self) -> None:
        self._wrapped().unpause()

    def log_tail(self, lines: int = 40) -> str:
        try:
            return str(self._container.get_wrapped_container().logs(tail=lines).decode(errors="replace"))
        except Exception as exc:  # the container is gone
            return f"(no logs: {exc})"

    def cleanup(self) -> None:
        """Remove the container, paused or stopped; safe to call more than once."""
        try:
            wrapped = self._wrapped()
        except Exception:
            return
        if wrapped.status == "paused":
            wrapped.unpause()
        self._container.stop()

    def __repr__(self) -> str:
        return f"ContainerNode({self.name}, {self.image}, amqp {self.amqp_port})"


class ContainerNodePool:
    """Starts broker containers for one test and removes every one of them afterwards."""

    def __init__(self) -> None:
        self.nodes: list[ContainerNode] = []

    def node(self, *, tls: object = None, extra_config: object = ()) -> ContainerNode:
        if tls is not None or extra_config:
            raise PrivateNodeError("a broker container takes no TLS files or extra config: "
                                   "mark the test private_only")
        node = ContainerNode()
        self.nodes.append(node)
        node.start()
        return node

    def cleanup(self) -> None:
        cleanup_all(self.nodes)
