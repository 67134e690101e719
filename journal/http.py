"""`serve`'s HTTP side in a daemon thread: /results/ID, /metrics, /livez, /readyz."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
from collections.abc import Callable, Coroutine
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import unquote

from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest

from journal import render
from journal.health import Health
from messaging.errors import CalcEventsError, ConfigurationError
from messaging.logs import kv

log = logging.getLogger(__name__)

LOOKUP_TIMEOUT_S = 10.0
PATHS = "/results/ID,/metrics,/livez,/readyz"

Find = Callable[[str], Coroutine[Any, Any, list[dict[str, Any]]]]


def _handler(health: Health, find: Find, loop: asyncio.AbstractEventLoop) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(REGISTRY), CONTENT_TYPE_LATEST)
            elif path in ("/livez", "/readyz"):
                ok, why = health.live() if path == "/livez" else health.ready()
                self._json(200 if ok else 503, {"status": "ok" if ok else "unavailable", "detail": why})
            elif path.startswith("/results/") and len(path) > len("/results/"):
                self._results(unquote(path[len("/results/"):]))
            else:
                self._json(404, {"error": f"no such path {path}; try {PATHS}"})

        def _results(self, key: str) -> None:
            try:
                rows = asyncio.run_coroutine_threadsafe(find(key), loop).result(LOOKUP_TIMEOUT_S)
            except (CalcEventsError, TimeoutError) as exc:
                self._json(503, {"id": key, "error": str(exc) or "the database did not answer in time"})
                return
            answer = render.lookup_json(key, rows)
            self._json(200 if rows else 404, answer)

        def _json(self, status: int, data: Any) -> None:
            self._send(status, (json.dumps(data) + "\n").encode(), "application/json")

        def _send(self, status: int, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("http request", extra=kv(client=self.client_address[0], request=format % args))

    return Handler


def start(port: int, health: Health, find: Find) -> ThreadingHTTPServer:
    """Serve on `port` (0: any free port, logged) in a daemon thread; lookups run on this loop."""
    loop = asyncio.get_running_loop()
    try:
        server = ThreadingHTTPServer(("", port), _handler(health, find, loop))
    except OSError as exc:
        raise ConfigurationError(f"cannot serve on port {port} (CALC_JOURNAL_PORT): "
                                 f"{exc.strerror or exc}") from None
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="calc-journal-http", daemon=True).start()
    log.info("http listening", extra=kv(port=server.server_address[1], paths=PATHS))
    return server
