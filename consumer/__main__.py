"""`calc-consumer` / `python -m consumer`: wire settings, connection and the service, then run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
from collections.abc import Sequence

from consumer import metrics
from consumer.pipeline import OnRequest
from consumer.service import ConsumerService
from messaging import lifecycle, logs, tracing
from messaging.connection import connect, watch
from messaging.logs import kv
from messaging.metrics import expose
from messaging.settings import Settings
from messaging.verdict import Outcome

log = logging.getLogger("consumer")

CRASH_STATUS = 70


def crash_hook(source: str) -> OnRequest:
    """CALC_TEST_CRASH_SOURCE (tests only): a request from `source` kills the process unsettled."""
    def crash(outcome: Outcome) -> None:
        if outcome.request is not None and outcome.request.source == source:
            logging.getLogger("consumer.service").critical(
                "test crash hook: exiting without settling",
                extra=kv(event_id=outcome.event_id, correlation_id=outcome.correlation_id))
            os._exit(CRASH_STATUS)
    return crash


async def serve(settings: Settings, traces: tracing.Tracing | None = None) -> int:
    stop = lifecycle.shutdown_event()
    connection = await connect(settings, f"calc-consumer {settings.instance_id}")
    watch(connection, metrics.BROKER)
    try:
        hook = crash_hook(settings.test_crash_source) if settings.test_crash_source else None
        service = ConsumerService(settings, connection, on_request=hook, tracing=traces)
        await service.start()
        expose(metrics.REGISTRY)
        lifecycle.serve_metrics(settings)
        stopping = asyncio.ensure_future(stop.wait())
        failing = asyncio.ensure_future(service.failed.wait())
        await asyncio.wait((stopping, failing), return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        failing.cancel()
        log.info("shutting down", extra=logs.kv(in_flight=service.in_flight))
        await service.stop()
        if service.failure is not None:
            raise service.failure  # lifecycle.run: one line, and exit 2 for a configuration error
        if service.failed.is_set():
            return lifecycle.EXIT_FAILURE  # a bug stopped the work (logged where it happened)
    finally:
        await connection.close()
    return lifecycle.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="calc-consumer",
        description="Consume CalculationRequested from calc.work.* (CALC_QUEUES), publish "
                    "CalculationCompleted/CalculationFailed to calc.results. Configured by "
                    "environment variables (see docs/operations.md).")
    parser.parse_args(argv)
    try:
        settings = Settings.from_env()
    except Exception as exc:
        parser.exit(lifecycle.EXIT_USAGE, f"error: {exc}\n")
    logs.configure(settings)
    traces = tracing.configure("calc-consumer", on=settings.tracing)
    try:
        return lifecycle.run(lambda: serve(settings, traces))
    finally:
        if traces is not None:
            traces.shutdown()  # the spans still buffered are exported before the process ends


if __name__ == "__main__":
    raise SystemExit(main())
