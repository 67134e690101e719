"""`serve`'s HTTP side: /results/ID beside messaging.health's /metrics, /livez and /readyz."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Coroutine
from typing import Any

from journal import render
from journal.health import Health
from messaging.errors import CalcEventsError, ConfigurationError
from messaging.health import HealthServer

LOOKUP_TIMEOUT_S = 10.0

Find = Callable[[str], Coroutine[Any, Any, list[dict[str, Any]]]]


def _lookup(find: Find, loop: asyncio.AbstractEventLoop) -> Callable[[str], tuple[int, bytes, str]]:
    """/results/ID, answered on the event loop's database pool from an HTTP thread."""
    def answer(key: str) -> tuple[int, bytes, str]:
        try:
            rows = asyncio.run_coroutine_threadsafe(find(key), loop).result(LOOKUP_TIMEOUT_S)
        except (CalcEventsError, TimeoutError) as exc:
            return _json(503, {"id": key, "error": str(exc) or "the database did not answer in time"})
        return _json(200 if rows else 404, render.lookup_json(key, rows))
    return answer


def _json(status: int, data: Any) -> tuple[int, bytes, str]:
    return status, (json.dumps(data) + "\n").encode(), "application/json"


def start(port: int, health: Health, find: Find) -> HealthServer:
    """Serve on `port` (0: any free port, logged) in a daemon thread; lookups run on this loop."""
    loop = asyncio.get_running_loop()
    try:
        server = HealthServer(port, health, health, prefixes={"/results/": _lookup(find, loop)})
    except OSError as exc:
        raise ConfigurationError(f"cannot serve on port {port} (CALC_JOURNAL_PORT): "
                                 f"{exc.strerror or exc}") from None
    server.start()
    return server
