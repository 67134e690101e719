"""/metrics, /livez and /readyz for every service, from one small HTTP server thread.

Liveness is the event loop's own heartbeat, not the HTTP thread (which answers even when the
loop is wedged), and never depends on the broker: a broker outage must not restart-loop a
service. Readiness is what the service says it is (connected, topology checked, consuming).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Protocol
from urllib.parse import unquote

from prometheus_client import REGISTRY, CollectorRegistry
from prometheus_client.exposition import choose_encoder

log = logging.getLogger(__name__)

BEAT_S = 1.0
"""How often the event loop proves it runs."""

STALE_S = 10.0
"""/livez fails when the loop has not beaten for this long (a blocked loop, a deadlock)."""

Route = Callable[[], tuple[int, bytes, str]]
"""A path's answer: status, body, content type."""
Lookup = Callable[[str], tuple[int, bytes, str]]
"""The answer for the rest of a path under a prefix (`/results/ID`: ID, URL-decoded)."""


class Liveness(Protocol):
    """What /livez reads: `Heartbeat`, or a service's own beat (the journal's)."""

    def alive(self) -> tuple[bool, str]: ...


class ReadinessState(Protocol):
    """What /readyz reads: `Readiness`, or a service's own flags (the journal's)."""

    def state(self) -> tuple[bool, str]: ...


class Heartbeat:
    """A task on the event loop that records when it last ran; read from the HTTP thread."""

    def __init__(self, beat: float = BEAT_S, stale_after: float = STALE_S) -> None:
        self.beat = beat
        self.stale_after = stale_after
        self._last = time.monotonic()  # a float assignment is atomic: no lock for the reader
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._last = time.monotonic()
        self._task = asyncio.get_running_loop().create_task(self._run(), name="heartbeat")

    async def _run(self) -> None:
        while True:
            self._last = time.monotonic()
            await asyncio.sleep(self.beat)

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def alive(self) -> tuple[bool, str]:
        silent = time.monotonic() - self._last
        if self._task is None or self._task.done():
            return False, "heartbeat not running"
        if silent > self.stale_after:
            return False, f"event loop silent for {silent:.1f}s"
        return True, f"event loop beat {silent:.1f}s ago"


Check = Callable[[], "str | None"]
"""A condition of readiness read at each probe: None when it holds, else why not."""


class Readiness:
    """Whether the service should get traffic now, and why not; set from the event loop.

    `require(check)` adds a condition read at each probe (the broker connection's state), so a
    loss shows at once without the service having to notice it first.
    """

    def __init__(self, why_not: str = "starting") -> None:
        self._why_not: str | None = why_not
        self._checks: list[Check] = []

    def require(self, check: Check) -> None:
        self._checks.append(check)

    def ready(self) -> None:
        self._why_not = None

    def not_ready(self, why: str) -> None:
        self._why_not = why

    @property
    def is_ready(self) -> bool:
        return self.state()[0]

    def state(self) -> tuple[bool, str]:
        for check in self._checks:
            failing = check()
            if failing is not None:
                return False, failing
        why = self._why_not
        return (True, "ready") if why is None else (False, why)


def _json(status: int, data: Mapping[str, Any]) -> tuple[int, bytes, str]:
    return status, (json.dumps(data) + "\n").encode(), "application/json"


def _probe(check: Callable[[], tuple[bool, str]]) -> Route:
    def answer() -> tuple[int, bytes, str]:
        ok, detail = check()
        return _json(200 if ok else 503, {"status": "ok" if ok else "failing", "detail": detail})
    return answer


class HealthServer:
    """Serves /metrics, /livez, /readyz (and any extra routes) on `port` in a daemon thread.

    `prefixes` answer every path under them (`{"/results/": find}` serves `/results/<id>`).
    """

    def __init__(self, port: int, heartbeat: Liveness, readiness: ReadinessState, *,
                 registry: CollectorRegistry = REGISTRY, routes: Mapping[str, Route] | None = None,
                 prefixes: Mapping[str, Lookup] | None = None, host: str = "") -> None:
        self.heartbeat = heartbeat
        self.readiness = readiness
        self._registry = registry
        self._routes: dict[str, Route] = {
            "/livez": _probe(heartbeat.alive), "/readyz": _probe(readiness.state), **(routes or {})}
        self._prefixes = dict(prefixes or {})
        self._server = ThreadingHTTPServer((host, port), self._handler())
        self._server.daemon_threads = True
        self._serving = False

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def start(self) -> None:
        self._serving = True
        threading.Thread(target=self._server.serve_forever, name="health-http", daemon=True).start()
        log.info("http listening", extra={"calc_fields": {
            "port": self.port, "paths": ",".join(["/metrics", *self._routes, *self._paths_under()])}})

    def _paths_under(self) -> list[str]:
        return [f"{prefix}ID" for prefix in self._prefixes]

    def _under(self, path: str) -> tuple[int, bytes, str] | None:
        for prefix, lookup in self._prefixes.items():
            if path.startswith(prefix) and len(path) > len(prefix):
                return lookup(unquote(path[len(prefix):]))
        return None

    def close(self) -> None:
        if self._serving:  # shutdown() waits for serve_forever, forever if it never started
            self._server.shutdown()
        self._server.server_close()

    def _metrics(self, accept: str) -> tuple[int, bytes, str]:
        encoder, content_type = choose_encoder(accept)
        return 200, encoder(self._registry), content_type

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                path = self.path.split("?", 1)[0]
                route = outer._routes.get(path)
                if path == "/metrics":
                    status, body, content_type = outer._metrics(self.headers.get("Accept", ""))
                elif route is not None:
                    status, body, content_type = route()
                else:
                    status, body, content_type = outer._under(path) or _json(404, {
                        "error": f"no such path {path}; try /metrics, "
                                 f"{', '.join([*outer._routes, *outer._paths_under()])}"})
                self.send_response(status)
                self.send_header("Content-Type", content_type)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                log.debug("http request", extra={"calc_fields": {"request": format % args}})

        return Handler
