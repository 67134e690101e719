"""`calc-producer` / `python -m producer`: run, send or bulk; parses, wires and hands over."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import random
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

from calculator import InvalidArguments, Operation, check_arguments
from messaging import commandline, lifecycle, logs, tracing
from messaging.arguments import OneLineParser, positive_float, positive_int, share
from messaging.connection import connect, watch
from messaging.errors import UnroutableError
from messaging.health import Readiness
from messaging.metrics import expose
from messaging.settings import Settings
from producer import answer, metrics
from producer.generator import Spec, random_spec
from producer.service import Producer

log = logging.getLogger("producer")

EXIT_UNROUTABLE = 3
EXIT_REQUEST_FAILED = 5
"""`send --wait`: the request's outcome was a CalculationFailed."""

DESCRIPTION = f"""\
Publish CalculationRequested events to calc.requests (publisher confirms).
Configured by environment variables (see docs/operations.md).

exit codes: {lifecycle.EXIT_OK} done (send --wait: completed), {lifecycle.EXIT_FAILURE} broker failure \
(send --wait: or no outcome within --timeout),
{lifecycle.EXIT_USAGE} bad arguments or configuration, {EXIT_UNROUTABLE} unroutable message, \
{EXIT_REQUEST_FAILED} send --wait: the request failed."""

ENVIRONMENT = (*commandline.BROKER, *commandline.TOPOLOGY, "publish_timeout", "publish_in_flight",
               "interval", "failure_share", "metrics_port")


def _parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="calc-producer",
        description=DESCRIPTION)
    commandline.conventions(parser, ENVIRONMENT)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.add_parser("run", help="publish one random request every CALC_INTERVAL seconds (default)")
    send = sub.add_parser("send", help="publish one request and print its event_id")
    send.add_argument("operation", choices=[op.word for op in Operation])
    # "*", not "+": the operand count is the calculator's rule, checked after parsing.
    send.add_argument("operands", nargs="*", type=float, metavar="OPERAND")
    send.add_argument("--correlation-id", help="defaults to the request's event_id")
    send.add_argument("--unchecked", action="store_true",
                      help="send even a wrong operand count or a NaN/inf operand (to demo INVALID_ARGUMENTS)")
    send.add_argument("--wait", action="store_true",
                      help="wait for the outcome and print it: exit 0 completed, "
                           f"{EXIT_REQUEST_FAILED} failed, 1 no outcome within --timeout")
    send.add_argument("--timeout", type=positive_float, default=answer.DEFAULT_TIMEOUT_S, metavar="SECONDS",
                      help="--wait: seconds to wait for the outcome once the request is confirmed "
                           f"(default {answer.DEFAULT_TIMEOUT_S:g})")
    send.add_argument("--json", action="store_true", help="print one JSON object (see docs/operations.md)")
    bulk = sub.add_parser("bulk", help="publish N mixed requests with a progress line")
    bulk.add_argument("--count", type=positive_int, required=True)
    bulk.add_argument("--rate", type=positive_float,
                      help="requests per second (default: as fast as confirmed)")
    bulk.add_argument("--failure-share", type=share,
                      help="share built to fail, 0..1 (default CALC_FAILURE_SHARE)")
    bulk.add_argument("--seed", type=int, help="random seed, for a reproducible mix")
    bulk.add_argument("--ids-file", type=Path, help="write every confirmed event_id here, one a line")
    bulk.add_argument("--json", action="store_true", help="print the summary as JSON")
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parsed arguments; exits 2 with a one-line reason on anything unusable, before any connection."""
    parser = _parser()
    args = parser.parse_args(argv)
    if args.command == "send" and not args.unchecked:
        # The calculator's own rule for a request's shape; what only the arithmetic can tell
        # (divide 1 0, sqrt -1, factorial 171) is a valid request and is sent to fail downstream.
        try:
            check_arguments(Operation(args.operation), args.operands)
        except InvalidArguments as exc:
            parser.exit(lifecycle.EXIT_USAGE, f"calc-producer send: error: {exc} "
                                              "(--unchecked sends it anyway)\n")
    ids_file: Path | None = getattr(args, "ids_file", None)
    if ids_file is not None and (ids_file.is_dir() or not ids_file.parent.is_dir()):
        # found only after the whole bulk was sent otherwise, as a traceback
        parser.exit(lifecycle.EXIT_USAGE, f"calc-producer bulk: error: argument --ids-file: cannot "
                                          f"write {str(ids_file)!r}: not a file in an existing directory\n")
    return args


def _specs(rng: random.Random, share: float) -> Iterator[Spec]:
    while True:
        yield random_spec(rng, share)


async def _main(args: argparse.Namespace, settings: Settings,
                traces: tracing.Tracing | None = None) -> int:
    stop = lifecycle.shutdown_event()
    command = args.command or "run"
    readiness = Readiness("connecting")
    # a one-shot send serves nothing; run and a long bulk can be watched and probed like a service
    port = None if command == "send" else settings.metrics_port or None
    async with lifecycle.health(port, readiness):
        connection = await connect(settings, f"calc-producer {settings.instance_id}")
        watch(connection, metrics.BROKER)
        expose(metrics.REGISTRY)
        readiness.require(lifecycle.connected(connection))
        try:
            producer = Producer(settings, connection, traces)
            await producer.start()
            readiness.ready()
            if command == "send":
                return await _send(args, producer)
            if command == "bulk":
                return await _bulk(args, settings, producer, stop)
            sent = await producer.run(stop, random.Random())
            log.info("stopped", extra=logs.kv(sent=sent))
        except UnroutableError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_UNROUTABLE
        finally:
            readiness.not_ready("stopping")
            await connection.close()
    return lifecycle.EXIT_OK


async def _send(args: argparse.Namespace, producer: Producer) -> int:
    spec = Spec(Operation(args.operation), tuple(args.operands))
    if not args.wait:
        event_id = await producer.send(spec, args.correlation_id)
        print(json.dumps({"event_id": event_id}) if args.json else event_id)
        return lifecycle.EXIT_OK
    event_id, outcome = await producer.ask(spec, args.correlation_id, args.timeout)
    if args.json:
        shown = outcome.as_json() if outcome is not None else {
            "status": "timeout", "event_id": event_id, "correlation_id": args.correlation_id or event_id,
            "timeout_s": args.timeout}
        print(json.dumps(shown))
    elif outcome is None:
        print(f"error: no outcome for {event_id} within {args.timeout:g}s; it is queued, and a "
              f"consumer of {spec.operation.word} may still answer (is one running?)", file=sys.stderr)
    elif outcome.status == "completed":
        print(f"{event_id} completed: {_number(outcome.result)}")
    else:
        print(f"{event_id} failed: {outcome.reason}: {outcome.detail} (attempts {outcome.attempts})")
    if outcome is None:
        return lifecycle.EXIT_FAILURE
    return lifecycle.EXIT_OK if outcome.status == "completed" else EXIT_REQUEST_FAILED


def _number(value: float | None) -> str:
    """A result as people write it: 5, 0.5, 1e+300 (repr's digits, no trailing .0)."""
    text = repr(value)
    return text[:-2] if text.endswith(".0") else text


async def _bulk(args: argparse.Namespace, settings: Settings, producer: Producer, stop: asyncio.Event) -> int:
    share = settings.failure_share if args.failure_share is None else args.failure_share
    report = await producer.bulk(_specs(random.Random(args.seed), share), args.count,
                                 args.rate, stop, progress=True)
    if args.ids_file:
        args.ids_file.write_text("".join(f"{i}\n" for i in report.event_ids))
    stopped = stop.is_set() and report.confirmed < report.requested
    summary = {"requested": report.requested, "confirmed": report.confirmed,
               "seconds": round(report.seconds, 3), "rate_per_s": round(report.rate, 1),
               "stopped_by_signal": stopped}
    print(json.dumps(summary) if args.json else
          f"confirmed {report.confirmed} of {report.requested} in {report.seconds:.1f}s "
          f"({report.rate:,.0f} msg/s)" + (", stopped by a signal" if stopped else ""))
    # SIGTERM stops a bulk like a service: what was sent is confirmed, the rest never
    # sent, exit 0 (the contract's rule); any other shortfall is a failure.
    if report.confirmed != report.requested and not stopped:
        return lifecycle.EXIT_FAILURE
    return lifecycle.EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    args = parse(argv)
    try:
        settings = Settings.from_env()
    except Exception as exc:
        print(f"error: {exc}", file=sys.stderr)
        return lifecycle.EXIT_USAGE
    logs.configure(settings)
    traces = tracing.configure("calc-producer", on=settings.tracing)
    try:
        return lifecycle.run(lambda: _main(args, settings, traces))
    finally:
        if traces is not None:
            traces.shutdown()  # export the spans still buffered (a `send` exits right away)


if __name__ == "__main__":
    raise SystemExit(main())


