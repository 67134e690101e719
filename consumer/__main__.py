"""`calc-consumer` / `python -m consumer`: wire settings, connection and the service, then run."""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Sequence

from consumer.service import ConsumerService
from messaging import lifecycle, logs
from messaging.connection import connect
from messaging.settings import Settings

log = logging.getLogger("consumer")


async def serve(settings: Settings) -> int:
    stop = lifecycle.shutdown_event()
    connection = await connect(settings, f"calc-consumer {settings.instance_id}")
    try:
        service = ConsumerService(settings, connection)
        await service.start()
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
    return lifecycle.run(lambda: serve(settings))


if __name__ == "__main__":
    raise SystemExit(main())
