"""What the journal's /livez and /readyz answer: written by the event loop, read by HTTP threads.

Served by messaging.health's HealthServer like every service's; the flags are the journal's own
(the database, besides the broker and the subscription), read through `alive()` and `state()`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from journal import metrics
from messaging.health import BEAT_S, STALE_S
from messaging.logs import kv

__all__ = ["BEAT_S", "PROBE_S", "STALE_S", "Health", "heartbeat"]

log = logging.getLogger(__name__)

PROBE_S = 5.0
"""While no batch was written for this long, a ping says whether the database is still there."""


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

    def alive(self) -> tuple[bool, str]:
        """/livez (messaging.health.Liveness)."""
        return self.live()

    def state(self) -> tuple[bool, str]:
        """/readyz (messaging.health.ReadinessState)."""
        return self.ready()


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
