"""`serve`: rescan the DLQ every interval, log the report, and serve /metrics, /report and /healthz."""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from aio_pika.abc import AbstractConnection
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from dlq_inspector import metrics
from dlq_inspector.broker import BROKER_ERRORS, declare_topology, open_connection
from dlq_inspector.metrics import DlqCollector
from dlq_inspector.report import Report, scan_report
from messaging.connection import watch
from messaging.errors import CalcEventsError
from messaging.logs import kv
from messaging.metrics import expose
from messaging.settings import Settings

log = logging.getLogger(__name__)


@dataclass
class State:
    """The last report and the health of the refresh loop; written by the loop, read by HTTP threads.

    Each field is replaced whole (never mutated in place), so readers see a consistent report.
    """

    report: Report | None = None
    last_success: float | None = None  # time.time() of the last completed scan
    last_error: str = ""
    scans: int = 0
    errors: int = 0
    interval: float = 30.0

    def healthy(self, now: float | None = None) -> tuple[bool, str]:
        if self.last_success is None:
            return False, self.last_error or "no scan finished yet"
        stale = max(3 * self.interval, 60.0)
        age = (now or time.time()) - self.last_success
        if age > stale:
            return False, f"last successful scan {age:.0f}s ago ({self.last_error or 'no error'})"
        return True, "ok"


def _handler(state: State, registry: CollectorRegistry) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                self._send(200, generate_latest(registry), CONTENT_TYPE_LATEST)
            elif path == "/report":
                report = state.report
                if report is None:
                    self._json(503, {"error": state.last_error or "no scan finished yet"})
                else:
                    self._json(200, report.as_json())
            elif path == "/healthz":
                ok, why = state.healthy()
                self._json(200 if ok else 503, {"status": "ok" if ok else "unhealthy", "detail": why})
            else:
                self._json(404, {"error": f"no such path {path}; try /metrics, /report, /healthz"})

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


def start_http(port: int, state: State) -> ThreadingHTTPServer:
    """Serve on `port` (0: any free port, logged) in a daemon thread."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DlqCollector(state))
    expose(metrics.REGISTRY, registry)
    server = ThreadingHTTPServer(("", port), _handler(state, registry))
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, name="dlq-inspector-http", daemon=True).start()
    log.info("http listening", extra=kv(port=server.server_address[1],
                                        paths="/metrics,/report,/healthz"))
    return server


class _Refresher:
    """One connection, reopened after a failure; each refresh scans and updates the state."""

    def __init__(self, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state
        self.connection: AbstractConnection | None = None

    async def refresh(self) -> None:
        settings, state = self.settings, self.state
        try:
            if self.connection is None or self.connection.is_closed:
                self.connection = await open_connection(
                    settings, f"calc-dlq-inspector {settings.instance_id}",
                    min(settings.connect_timeout, 10.0))
                watch(self.connection, metrics.BROKER)
                async with self.connection.channel() as channel:
                    await declare_topology(channel, settings)
            report = await scan_report(self.connection, settings)
        except (CalcEventsError, *BROKER_ERRORS) as exc:
            state.errors += 1
            state.last_error = str(exc) or repr(exc)
            log.error("dlq scan failed", extra=kv(error=state.last_error))
            await self.close()
            return
        state.report, state.last_success, state.last_error = report, time.time(), ""
        state.scans += 1
        log.info("dlq report", extra=kv(
            total=report.total, by_reason=json.dumps(dict(report.by_reason)),
            by_operation=json.dumps(dict(report.by_operation)),
            oldest_age_s=round(report.oldest_age() or 0.0, 1), complete=report.complete,
            scan_s=round(report.scan_seconds, 3)))

    async def close(self) -> None:
        connection, self.connection = self.connection, None
        if connection is not None and not connection.is_closed:
            try:
                await connection.close()
            except BROKER_ERRORS:
                pass


async def serve(settings: Settings, stop: asyncio.Event) -> int:
    """Until `stop`: scan, publish the report to HTTP and the log, wait CALC_INSPECTOR_INTERVAL.

    A stop in the middle of a scan cancels it: closing its channels hands every message back.
    """
    state = State(interval=settings.inspector_interval)
    server = start_http(settings.inspector_port, state)
    refresher = _Refresher(settings, state)
    stopped = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            refresh = asyncio.ensure_future(refresher.refresh())
            await asyncio.wait({refresh, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if not refresh.done():
                refresh.cancel()
                await asyncio.gather(refresh, return_exceptions=True)
                break
            refresh.result()
            await asyncio.wait({stopped}, timeout=settings.inspector_interval)
        log.info("stopping", extra=kv(scans=state.scans))
    finally:
        stopped.cancel()
        server.shutdown()
        server.server_close()
        await refresher.close()
    return 0
