"""`serve`: rescan the DLQ every interval, log the report; serve /metrics, health, /report, /healthz."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from aio_pika.abc import AbstractConnection
from prometheus_client import CollectorRegistry

from dlq_inspector import metrics
from dlq_inspector.broker import BROKER_ERRORS, declare_topology, open_connection
from dlq_inspector.metrics import DlqCollector
from dlq_inspector.report import Report, scan_report
from messaging import lifecycle
from messaging.connection import watch
from messaging.errors import CalcEventsError
from messaging.health import Readiness, Route
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


def _json(status: int, data: Any) -> tuple[int, bytes, str]:
    return status, (json.dumps(data) + "\n").encode(), "application/json"


def routes(state: State) -> dict[str, Route]:
    """/report (the last scan) and /healthz (kept for older probes: it follows the scans, so it
    fails while the broker is away, which is why the probes now use /livez and /readyz)."""
    def report() -> tuple[int, bytes, str]:
        found = state.report
        if found is None:
            return _json(503, {"error": state.last_error or "no scan finished yet"})
        return _json(200, found.as_json())

    def healthz() -> tuple[int, bytes, str]:
        ok, why = state.healthy()
        return _json(200 if ok else 503, {"status": "ok" if ok else "unhealthy", "detail": why})

    return {"/report": report, "/healthz": healthz}


def registry_of(state: State) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DlqCollector(state))
    expose(metrics.REGISTRY, registry)
    return registry


class _Refresher:
    """One connection, reopened after a failure; each refresh scans and updates the state."""

    def __init__(self, settings: Settings, state: State) -> None:
        self.settings = settings
        self.state = state
        self.connection: AbstractConnection | None = None

    def ready(self) -> str | None:
        """/readyz: connected, and the last scan succeeded (and is recent); else why not."""
        if self.connection is None or self.connection.is_closed:
            return self.state.last_error or "not connected to the broker"
        ok, why = self.state.healthy()
        return None if ok else why

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
    refresher = _Refresher(settings, state)
    readiness = Readiness("no scan finished yet")
    readiness.ready()  # the refresher's own state decides, through require()
    readiness.require(refresher.ready)
    async with lifecycle.health(settings.inspector_port, readiness, variable="CALC_INSPECTOR_PORT",
                                registry=registry_of(state), routes=routes(state)):
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
            await refresher.close()
    return 0
