"""The journal step: ours consumes a backlog, then the journal records its outcomes; both rates.

Issue 16 asks that the journal keep up with the consumer: its sustained rate (here: draining the
consumer's outcomes from calc.results.journal into a fresh database, as shipped, one transaction
and one multiple ack per CALC_JOURNAL_BATCH) at least ours' consumer rate, measured in the same run.

    python -m bench.journal --count N   # (the runner's child) record N outcomes, print one JSON line
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import sys
import time
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit, urlunsplit

import aiormq
import asyncpg

from bench import workload
from bench.work import Meter
from journal.service import JournalService
from journal.store import Store
from messaging import logs, topology
from messaging.connection import connect
from messaging.settings import Settings

if TYPE_CHECKING:
    from bench.run import Run

DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"
"""Where the step makes its database when DATABASE_URL is not set (the machine's PostgreSQL)."""


async def record(count: int) -> Meter:
    """In this process: the journal as shipped until `count` outcomes are acked."""
    settings = Settings.from_env()
    logs.configure(settings)
    store = Store(settings)
    await store.open(timeout=30)
    connection = await connect(settings, "bench journal")
    meter = Meter(count)
    try:
        service = JournalService(settings, connection, store)
        meter.start()
        await service.start()
        while service.acked < count:  # noqa: ASYNC110 (polling, as the consumer variants measure)
            await asyncio.sleep(0.002)
        meter.add(service.acked)
        await service.stop()
    finally:
        await connection.close()
        await store.close()
    return meter


def _database_url(name: str) -> str:
    base = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE
    return urlunsplit(urlsplit(base)._replace(path="/" + name))


async def _admin(statement: str) -> None:
    connection = await asyncpg.connect(_database_url("postgres"), timeout=10)
    try:
        await connection.execute(statement)
    finally:
        await connection.close()


async def _rows(url: str) -> dict[str, int]:
    connection = await asyncpg.connect(url, timeout=10)
    try:
        rows = await connection.fetch("SELECT status, count(*) AS n, sum(outcomes - 1) AS dup "
                                      "FROM journal_results GROUP BY status")
    finally:
        await connection.close()
    out = {str(r["status"]): int(r["n"]) for r in rows}
    out["duplicates"] = sum(int(r["dup"]) for r in rows)
    return out


async def _declare(url: str) -> None:
    settings = replace(workload.bench_settings(url), declare_topology=True)
    connection = await connect(settings, "bench declare journal", robust=False)
    try:
        await topology.declare(await connection.channel(), settings, service=topology.JOURNAL)
    finally:
        await connection.close()


async def _undeclare(url: str) -> None:
    connection = await aiormq.connect(url)
    try:
        channel = await connection.channel()
        for queue in (topology.JOURNAL_QUEUE, topology.JOURNAL_DLQ):
            await channel.queue_delete(queue)
        await channel.exchange_delete(topology.JOURNAL_DLX)
    finally:
        await connection.close()


async def _repetition(run: Run, count: int, rep: int) -> dict[str, Any]:
    await workload.reset(run.url)
    database = f"bench_journal_{uuid.uuid4().hex[:8]}"
    await _admin(f'CREATE DATABASE "{database}"')
    try:
        preloaded = await workload.preload(run.url, count, run.plan.failure_share, seed=40 + rep)
        tag = f"journal-consumer-{rep}"
        consumer = run.finish(run.spawn(["-m", "bench.variants", "ours", "--count", str(count)], tag),
                              tag, timeout=30 + count / 200)
        await workload.verify(run.url, preloaded, "ours")
        backlog = await workload.depth(run.url, topology.JOURNAL_QUEUE)
        if backlog != count:
            raise workload.BenchFailure(f"calc.results.journal holds {backlog} outcomes, expected {count}")
        tag = f"journal-{rep}"
        env = {"DATABASE_URL": _database_url(database)}
        journal = run.finish(run.spawn(["-m", "bench.journal", "--count", str(count)], tag, env),
                             tag, timeout=30 + count / 200)
        rows = await _rows(_database_url(database))
        expected = {"completed": len(preloaded.ok), "failed": len(preloaded.failing), "duplicates": 0}
        if {k: rows.get(k, 0) for k in expected} != expected:
            raise workload.BenchFailure(f"journal rows {rows}, expected {expected}")
    finally:
        await _admin(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
    print(f"  journal rep {rep + 1}: consumer {consumer['rate']:8,.0f} msg/s, journal "
          f"{journal['rate']:8,.0f} outcomes/s ({journal['cpu_us_per_message']:.0f} us CPU each), "
          f"{count} rows verified", file=sys.stderr, flush=True)
    return {"consumer": consumer, "journal": journal, "rows": rows}


async def step(run: Run) -> None:
    """Per repetition: preload, ours consumes (its rate), the journal records it all (its rate)."""
    count = run.plan.messages
    await _declare(run.url)
    try:
        runs = [await _repetition(run, count, rep) for rep in range(run.plan.repeat)]
    finally:
        await _undeclare(run.url)  # later steps' outcomes must not pile up in an unread queue
    consumer_rate = statistics.median(r["consumer"]["rate"] for r in runs)
    journal_rate = statistics.median(r["journal"]["rate"] for r in runs)
    run.results["journal"] = {
        "messages": count, "runs": runs, "consumer_rate": consumer_rate, "journal_rate": journal_rate,
        "journal_cpu_us_per_message": statistics.median(r["journal"]["cpu_us_per_message"] for r in runs),
        "ratio": journal_rate / consumer_rate if consumer_rate else float("nan"),
        "batch": Settings().journal_batch}
    await workload.reset(run.url)


def render(result: dict[str, Any]) -> list[str]:
    ratio = result["ratio"]
    verdict = "met" if ratio >= 1.0 else "NOT met"
    return [f"Journal (issue 16): ours consumes {result['messages']:,} requests, then calc-journal records "
            f"their outcomes in PostgreSQL (batch {result['batch']})",
            f"  ours consumer {result['consumer_rate']:8,.0f} msg/s; journal {result['journal_rate']:8,.0f} "
            f"outcomes/s ({result['journal_cpu_us_per_message']:.0f} us CPU each): "
            f"{ratio:.2f}x, journal >= consumer: {verdict}", ""]


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.journal")
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    started = time.perf_counter()
    meter = asyncio.run(record(args.count))
    json.dump({"variant": "journal", "settled": meter.settled, "seconds": meter.seconds,
               "rate": meter.settled / meter.seconds if meter.seconds else 0.0, "cpu_seconds": meter.cpu,
               "cpu_us_per_message": meter.cpu / meter.settled * 1e6 if meter.settled else 0.0,
               "wall": time.perf_counter() - started}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
