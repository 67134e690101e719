"""What /livez and /readyz answer: written by the event loop, read by the HTTP threads."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

from journal import metrics

BEAT_S = 1.0
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
