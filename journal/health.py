"""What the journal's /livez and /readyz answer: written by the event loop, read by HTTP threads.

Served by messaging.health's HealthServer like every service's; the flags are the journal's own
(the database, besides the broker and the subscription), read through `alive()` and `state()`.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from journal import metrics
from messaging.health import BEAT_S, STALE_S

__all__ = ["BEAT_S", "STALE_S", "Health", "heartbeat"]


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
