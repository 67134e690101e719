"""Publish->result latency at a fixed rate: requests published on a timetable, results timed on arrival.

The driver is pika's AsyncioConnection with plain callbacks (no task or future per message, no
publisher confirms), so that it, sharing the cores with the broker and the consumer, still keeps
2,000 msg/s; the rate it achieved is reported beside the figures.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pika
from pika.adapters.asyncio_connection import AsyncioConnection

from bench.workload import VERIFY_QUEUE, BenchFailure, make_requests
from messaging import topology


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


def _pika_properties(props: Any) -> pika.BasicProperties:
    return pika.BasicProperties(content_type=props.content_type, type=props.message_type,
                                message_id=props.message_id, correlation_id=props.correlation_id,
                                delivery_mode=props.delivery_mode, app_id=props.app_id,
                                timestamp=int(props.timestamp.timestamp()), headers=props.headers)


class _Driver:
    def __init__(self, url: str, rate: float, messages: list[tuple[str, bytes, Any]], warmup: int,
                 count: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.rate, self.messages, self.warmup, self.count = rate, messages, warmup, count
        self.timed = {props.correlation_id for _, _, props in messages[warmup:]}
        self.sent: dict[str, float] = {}
        self.latencies: list[float] = []
        self.duplicates = 0
        self.index = 0
        self.started = 0.0
        self.finished_publishing = 0.0
        self.timing = warmup == 0
        self.done: asyncio.Future[None] = self.loop.create_future()
        self.connection = AsyncioConnection(pika.URLParameters(url), on_open_callback=self.on_open,
                                            on_open_error_callback=self.fail, custom_ioloop=self.loop)

    def fail(self, _connection: object, error: object) -> None:
        if not self.done.done():
            self.done.set_exception(BenchFailure(f"latency driver: {error}"))

    def on_open(self, connection: AsyncioConnection) -> None:
        connection.channel(on_open_callback=self.on_channel)

    def on_channel(self, channel: Any) -> None:
        self.channel = channel
        channel.add_on_close_callback(lambda _ch, reason: self.fail(None, reason))
        channel.basic_consume(VERIFY_QUEUE, self.on_result, auto_ack=True,
                              callback=lambda _frame: self.start())

    def start(self) -> None:
        self.started = time.perf_counter()
        self.tick()

    def tick(self) -> None:
        """Publish every request that is due, then come back when the next one is."""
        now = time.perf_counter()
        while self.index < len(self.messages):
            if self.index == self.warmup and not self.timing:
                self.timing = True  # the timed phase keeps the pace, counted from here
                self.started = now
            phase = self.index - self.warmup if self.timing else self.index
            due = self.started + phase / self.rate
            if due > now:
                self.loop.call_later(due - now, self.tick)
                return
            key, body, props = self.messages[self.index]
            self.sent[props.correlation_id] = time.perf_counter()
            self.channel.basic_publish(topology.REQUESTS_EXCHANGE, key, body, _pika_properties(props),
                                       mandatory=True)
            self.index += 1
        self.finished_publishing = time.perf_counter()

    def on_result(self, _channel: Any, _method: Any, properties: Any, _body: bytes) -> None:
        arrived = time.perf_counter()
        published = self.sent.pop(properties.correlation_id or "", None)
        if published is None:
            self.duplicates += 1
        elif properties.correlation_id in self.timed:
            self.latencies.append(arrived - published)
            if len(self.latencies) >= self.count and not self.done.done():
                self.done.set_result(None)


async def drive(url: str, rate: float, count: int, warmup: int = 0,
                timeout: float = 60.0) -> dict[str, float]:
    """Publish `warmup` + `count` requests at `rate`/s to calc.requests; return the latency
    percentiles in ms of the last `count` (the warm-up's are sent at the same pace, not timed).

    The consumer under test must already be consuming; each result's correlation_id names its
    request.
    """
    messages, _ = make_requests(warmup + count, 0.0, seed=int(rate))
    driver = _Driver(url, rate, messages, warmup, count)
    try:
        await asyncio.wait_for(driver.done, timeout + (warmup + count) / rate)
        await asyncio.sleep(0.3)  # a duplicate would arrive right behind
    except TimeoutError:
        raise BenchFailure(f"latency at {rate}/s: {len(driver.latencies)} of {count} results "
                           "arrived") from None
    finally:
        if driver.connection.is_open:
            driver.connection.close()
    if driver.duplicates:
        raise BenchFailure(f"latency at {rate}/s: {driver.duplicates} duplicate or unknown results")
    achieved = count / (driver.finished_publishing - driver.started)
    ms = [s * 1000 for s in driver.latencies]
    return {"rate": rate, "achieved_rate": achieved, "count": count, "p50": percentile(ms, 50),
            "p90": percentile(ms, 90), "p99": percentile(ms, 99), "max": max(ms)}
