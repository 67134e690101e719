"""Publish->result latency at a fixed rate: requests published on a timetable, results timed on arrival."""

from __future__ import annotations

import asyncio
import time

import aiormq
from aiormq.abc import DeliveredMessage

from bench.workload import VERIFY_QUEUE, BenchFailure, make_requests
from messaging import topology


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered)) - 1))
    return ordered[index]


async def drive(url: str, rate: float, count: int, warmup: int = 0,
                timeout: float = 60.0) -> dict[str, float]:
    """Publish `warmup` + `count` requests at `rate`/s to calc.requests; return the latency
    percentiles in ms of the last `count` (the warm-up's results are awaited, not timed).

    The consumer under test must already be consuming. Requests go without publisher confirms
    (the driver must not be the bottleneck); each result's correlation_id names its request.
    """
    messages, _ = make_requests(warmup + count, 0.0, seed=int(rate))
    timed = {props.correlation_id for _, _, props in messages[warmup:]}
    sent: dict[str, float] = {}
    latencies: list[float] = []
    duplicates = 0
    done = asyncio.Event()
    connection = await aiormq.connect(url)
    try:
        listen = await connection.channel()
        await listen.basic_qos(prefetch_count=1000)

        async def on_result(message: DeliveredMessage) -> None:
            nonlocal duplicates
            arrived = time.perf_counter()
            correlation_id = message.header.properties.correlation_id or ""
            published = sent.pop(correlation_id, None)
            if published is None:
                duplicates += 1
            elif correlation_id in timed:
                latencies.append(arrived - published)
            if len(latencies) >= count:
                done.set()

        await listen.basic_consume(VERIFY_QUEUE, on_result, no_ack=True)
        channel = await connection.channel()
        started = time.perf_counter()
        for index, (key, body, props) in enumerate(messages):
            if index == warmup:
                started = time.perf_counter()  # the timed phase keeps the same pace
            due = started + (index - warmup if index >= warmup else index) / rate
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            sent[props.correlation_id] = time.perf_counter()
            await channel.basic_publish(body, exchange=topology.REQUESTS_EXCHANGE, routing_key=key,
                                        properties=props, mandatory=True, wait=False)
        achieved = count / (time.perf_counter() - started)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            raise BenchFailure(f"latency at {rate}/s: {len(latencies)} of {count} results arrived") from None
        await asyncio.sleep(0.3)  # a duplicate would arrive right behind
    finally:
        await connection.close()
    if duplicates:
        raise BenchFailure(f"latency at {rate}/s: {duplicates} duplicate or unknown results")
    ms = [s * 1000 for s in latencies]
    return {"rate": rate, "achieved_rate": achieved, "count": count, "p50": percentile(ms, 50),
            "p90": percentile(ms, 90), "p99": percentile(ms, 99), "max": max(ms)}
