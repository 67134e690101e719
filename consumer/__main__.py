"""`calc-consumer` / `python -m consumer`: wire settings, connection and the service, then run."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import time
from collections.abc import Sequence

from consumer import metrics
from consumer.pipeline import OnRequest
from consumer.service import ConsumerService
from messaging import commandline, lifecycle, logs, tracing
from messaging.connection import connect, watch
from messaging.health import Readiness
from messaging.logs import kv
from messaging.metrics import expose
from messaging.settings import Settings
from messaging.verdict import Outcome

log = logging.getLogger("consumer")

ENVIRONMENT = (*commandline.BROKER, *commandline.TOPOLOGY, "queues", "prefetch", "max_message_bytes",
               "publish_timeout", "fault_rate", "metrics_port", "test_crash_source", "test_block_source")

CRASH_STATUS = 70
BLOCK_S = 20.0
"""CALC_TEST_BLOCK_SOURCE: how long the hook blocks the event loop (past /livez's 10 s)."""


def crash_hook(source: str) -> OnRequest:
    """CALC_TEST_CRASH_SOURCE (tests only): a request from `source` kills the process unsettled."""
    def crash(outcome: Outcome) -> None:
        if outcome.request is not None and outcome.request.source == source:
            logging.getLogger("consumer.service").critical(
                "test crash hook: exiting without settling",
                extra=kv(event_id=outcome.event_id, correlation_id=outcome.correlation_id))
            os._exit(CRASH_STATUS)
    return crash


def block_hook(source: str) -> OnRequest:
    """CALC_TEST_BLOCK_SOURCE (tests only): a request from `source` blocks the event loop BLOCK_S.

    A synchronous sleep on the loop, like a CPU-bound bug or a blocking call: the HTTP thread
    still answers, the heartbeat does not, so /livez must fail.
    """
    def block(outcome: Outcome) -> None:
        if outcome.request is not None and outcome.request.source == source:
            logging.getLogger("consumer.service").critical(
                "test block hook: blocking the event loop", extra=kv(
                    event_id=outcome.event_id, correlation_id=outcome.correlation_id, seconds=BLOCK_S))
            time.sleep(BLOCK_S)
    return block


def testing_hooks(settings: Settings) -> OnRequest | None:
    """The CALC_TEST_* hooks whose variable is set, as one `on_request`; None when none is."""
    hooks = [make(source) for make, source in ((crash_hook, settings.test_crash_source),
                                               (block_hook, settings.test_block_source)) if source]
    if not hooks:
        return None

    def every(outcome: Outcome) -> None:
        for hook in hooks:
            hook(outcome)
    return every


async def serve(settings: Settings, traces: tracing.Tracing | None = None) -> int:
    stop = lifecycle.shutdown_event()
    readiness = Readiness("connecting")
    expose(metrics.REGISTRY)
    async with lifecycle.health(settings.metrics_port or None, readiness):
        return await _consume(settings, stop, readiness, traces)


async def _consume(settings: Settings, stop: asyncio.Event, readiness: Readiness,
                   traces: tracing.Tracing | None) -> int:
    connection = await connect(settings, f"calc-consumer {settings.instance_id}")
    watch(connection, metrics.BROKER)
    readiness.require(lifecycle.connected(connection))
    connection.close_callbacks.add(lambda *_: readiness.not_ready("broker connection lost; reconnecting"))
    readiness.not_ready("declaring the topology, subscribing")
    try:
        service = ConsumerService(settings, connection, on_request=testing_hooks(settings),
                                  readiness=readiness, tracing=traces)
        await service.start()
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
        description="Consume CalculationRequested from calc.work.* (CALC_QUEUES), publish\n"
                    "CalculationCompleted/CalculationFailed to calc.results. Configured by environment\n"
                    "variables (see docs/operations.md); /metrics, /livez, /readyz on CALC_METRICS_PORT.\n\n"
                    "exit codes: 0 stopped by SIGTERM or Ctrl-C, 1 broker unreachable or a bug stopped\n"
                    "the work, 2 bad configuration or a permanent refusal by the broker.")
    commandline.conventions(parser, ENVIRONMENT)
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
