"""(a) Our consumer as shipped: ConsumerService on a robust connection, INFO logs to stderr."""

from __future__ import annotations

import asyncio

from bench.work import Meter
from consumer.service import ConsumerService
from messaging import logs, tracing
from messaging.connection import connect
from messaging.settings import Settings

RSS_MARKS: list[int] = []
"""Settled counts at which to note VmRSS (the 1,000,000-message memory run)."""
RSS_SAMPLES: dict[str, int] = {}


def _rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


async def run(url: str, count: int, prefetch: int | None) -> Meter:
    settings = Settings.from_env()  # as shipped: RABBITMQ_URL and defaults (the runner sets the env)
    logs.configure(settings)
    connection = await connect(settings, "bench ours")
    meter = Meter(count)
    traces = tracing.configure("calc-consumer", on=settings.tracing)  # as __main__ does: off, None
    try:
        service = ConsumerService(settings, connection, tracing=traces)
        meter.start()
        await service.start()
        while service.settled < count:
            await asyncio.sleep(0.002)
            while RSS_MARKS and service.settled >= RSS_MARKS[0]:
                mark = RSS_MARKS.pop(0)
                RSS_SAMPLES[str(mark)] = _rss_kib()
                # for the runner's progress line; only lines starting with "{" are results
                print(f"progress {mark} {RSS_SAMPLES[str(mark)]}", flush=True)
        meter.add(service.settled)
        await service.stop()
    finally:
        await connection.close()
        if traces is not None:
            traces.shutdown()
    return meter
