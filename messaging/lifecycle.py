"""Process lifecycle shared by the services: signals, metrics endpoint and exit codes."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Awaitable, Callable

from prometheus_client import start_http_server

from messaging.errors import CalcEventsError, ConfigurationError
from messaging.settings import Settings

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


def serve_metrics(settings: Settings) -> None:
    """Serve /metrics on CALC_METRICS_PORT (0: not at all); ConfigurationError if the port is taken."""
    if settings.metrics_port:
        try:
            start_http_server(settings.metrics_port)
        except OSError as exc:
            raise ConfigurationError(f"cannot serve /metrics on port {settings.metrics_port} "
                                     f"(CALC_METRICS_PORT): {exc.strerror or exc}") from None
        log.info("metrics on /metrics", extra={"calc_fields": {"port": settings.metrics_port}})


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
