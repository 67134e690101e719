"""The `calc-journal` commands: serve (the service), get, stats and migrate."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from journal import http, metrics, render, schema
from journal.health import Health, heartbeat
from journal.service import JournalService
from journal.store import Store
from messaging import lifecycle
from messaging.connection import connect, watch
from messaging.logs import kv
from messaging.metrics import expose
from messaging.settings import Settings
from messaging.tracing import Tracing

log = logging.getLogger("journal")

EXIT_PENDING = 3
"""`get`: no outcome is recorded for the id (the request is pending, or was never sent)."""


async def serve(settings: Settings, traces: Tracing | None = None) -> int:
    """Migrate, consume and record until SIGTERM; /results, /metrics, /livez, /readyz meanwhile."""
    stop = lifecycle.shutdown_event()
    health = Health()
    store = Store(settings)
    await store.open()
    try:
        connection = await connect(settings, f"calc-journal {settings.instance_id}")
        watch(connection, metrics.BROKER)
        expose(metrics.REGISTRY)
        try:
            service = JournalService(settings, connection, store, health, traces)
            beating = asyncio.create_task(heartbeat(health, lambda: not connection.is_closed))
            server = http.start(settings.journal_port, health, store.find)
            try:
                await service.start()
                await stop.wait()
                log.info("shutting down", extra=kv(held=service.held))
                await service.stop()
            finally:
                beating.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await beating
                server.close()
        finally:
            await connection.close()
    finally:
        await store.close()
    return lifecycle.EXIT_OK


async def get(settings: Settings, key: str, as_json: bool) -> int:
    store = Store(settings)
    await store.open(migrate=False)
    try:
        rows = await store.find(key)
    finally:
        await store.close()
    print(render.dumps(render.lookup_json(key, rows)) if as_json else render.lookup_text(key, rows))
    return lifecycle.EXIT_OK if rows else EXIT_PENDING


async def stats(settings: Settings, as_json: bool) -> int:
    store = Store(settings)
    await store.open(migrate=False)
    try:
        found = await store.stats()
    finally:
        await store.close()
    print(render.dumps(found) if as_json else render.stats_text(found))
    return lifecycle.EXIT_OK


async def migrate(settings: Settings) -> int:
    store = Store(settings)
    before = await store.open()
    await store.close()
    was = "" if before == schema.LATEST else f" (was {before})"
    print(f"journal schema: version {schema.LATEST}{was}")
    return lifecycle.EXIT_OK
