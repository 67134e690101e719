"""What /livez and /readyz answer: written by the event loop, read by the HTTP threads."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from journal import metrics
from messaging.logs import kv

log = logging.getLogger(__name__)

BEAT_S = 1.0
PROBE_S = 5.0
"""While no batch was written for this long, a ping says whether the database is still there."""
STALE_S = 10.0
"""/livez fails when the event loop has not beaten for this long (it is stuck, not slow)."""


@dataclass
class Health:
    """Flags replaced whole by the loop; a reader sees each one either before or after a change."""

    beat: float = 0.0  # time.monotonic() of the last heartbeat
    broker: bool = False
    database: bool = False
    consuming: bool = False
    error: str = ""

    def live(self, now: float | None = None) -> tuple[bool, str]:
        age = (time.monotonic() if now is None else now) - self.beat
        if not self.beat or age > STALE_S:
            return False, f"event loop has not answered for {age:.0f}s" if self.beat else "not started"
        return True, "ok"

    def ready(self) -> tuple[bool, str]:
        missing = [name for name, ok in (("broker", self.broker), ("database", self.database),
                                         ("consuming", self.consuming)) if not ok]
        if missing:
            detail = "not " + ", ".join(missing)
            return False, f"{detail}: {self.error}" if self.error and not self.database else detail
        return True, "ok"


async def heartbeat(health: Health, broker_up: Callable[[], bool]) -> None:
    """Beat every second until cancelled; `broker_up()` says whether the connection is open."""
    while True:
        health.beat = time.monotonic()
        health.broker = broker_up()
        metrics.READY.set(1.0 if health.ready()[0] else 0.0)
        await asyncio.sleep(BEAT_S)


class DatabaseProbe:
    """Readiness between batches: an idle journal must still notice a database that went away.

    Only a failed ping marks the database down here, and only such a mark is cleared by a ping:
    a database that answers SELECT 1 but refuses writes stays not ready until a write succeeds.
    """

    def __init__(self, health: Health, ping: Callable[[], Awaitable[None]],
                 errors: tuple[type[Exception], ...], every: float = PROBE_S) -> None:
        self.health = health
        self.ping = ping
        self.errors = errors
        self.every = every
        self.last_write = time.monotonic()
        self._down = False

    def written(self) -> None:
        """A batch was committed: the database is there and writable."""
        self.last_write = time.monotonic()
        self._down = False
        self.health.database = True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(self.every)
            if time.monotonic() - self.last_write < self.every:
                continue
            try:
                await self.ping()
            except self.errors as exc:
                if self.health.database:
                    log.warning("database not reachable", extra=kv(error=str(exc)))
                self._down, self.health.database, self.health.error = True, False, str(exc)
                continue
            if self._down:
                self._down, self.health.database = False, True
