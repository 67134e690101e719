"""Process lifecycle shared by the services: signals, the health endpoint and exit codes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

from aio_pika.abc import AbstractConnection
from prometheus_client import REGISTRY, CollectorRegistry

from messaging.errors import CalcEventsError, ConfigurationError
from messaging.health import Check, HealthServer, Heartbeat, Readiness, Route

log = logging.getLogger(__name__)

EXIT_OK = 0
EXIT_FAILURE = 1  # the broker or the work failed
EXIT_USAGE = 2  # bad arguments or configuration


def shutdown_event() -> asyncio.Event:
    """An event set by SIGTERM or SIGINT (the first one; a second SIGINT interrupts as usual)."""
    event = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, event.set)
    return event


def connected(connection: AbstractConnection) -> Check:
    """A readiness check: the connection is up (a robust one clears `connected` while it reconnects)."""
    def check() -> str | None:
        return None if connection.connected.is_set() else "broker connection lost; reconnecting"
    return check


@contextlib.asynccontextmanager
async def health(port: int | None, readiness: Readiness, *, variable: str = "CALC_METRICS_PORT",
                 registry: CollectorRegistry = REGISTRY, routes: Mapping[str, Route] | None = None,
                 heartbeat: Heartbeat | None = None) -> AsyncIterator[HealthServer | None]:
    """/metrics, /livez and /readyz on `port` while the block runs (0: any free port; None: none).

    The heartbeat runs on this event loop, so /livez fails when the loop is stuck. A port that
    cannot be served is a ConfigurationError naming `variable` (exit 2).
    """
    if port is None:
        yield None
        return
    beat = heartbeat or Heartbeat()
    try:
        server = HealthServer(port, beat, readiness, registry=registry, routes=routes)
    except OSError as exc:
        raise ConfigurationError(f"cannot serve /metrics on port {port} ({variable}): "
                                 f"{exc.strerror or exc}") from None
    beat.start()
    server.start()
    try:
        yield server
    finally:
        server.close()
        await beat.stop()


def run(main: Callable[[], Awaitable[int]]) -> int:
    """Run a service's async main; map our errors to a one-line message and an exit code."""
    try:
        return asyncio.run(main())  # type: ignore[arg-type]
    except ConfigurationError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except CalcEventsError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        return 130
