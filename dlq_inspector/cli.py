"""The `dlq-inspector` command line: commands, options, their checks, and the exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from dlq_inspector.explain import OPERATION_CHOICES, parse_reason
from dlq_inspector.selection import Selection
from messaging import commandline
from messaging.arguments import OneLineParser, non_negative_int, positive_float

EXIT_OK = 0
EXIT_FAILURE = 1  # the broker failed, or some messages could not be replayed
EXIT_USAGE = 2  # bad arguments or configuration
EXIT_NOT_EMPTY = 3  # report --fail-if-any found messages
EXIT_NOT_FOUND = 4  # show (or replay/purge --id) did not find an event id

ENVIRONMENT = (*commandline.BROKER, *commandline.TOPOLOGY, "publish_timeout", "publish_in_flight",
               "max_message_bytes", "inspector_port", "inspector_interval")

COMMANDS = ("report", "list", "show", "replay", "purge", "export", "watch", "serve")

DESCRIPTION = """\
Read, explain, replay and purge calc.dlq. Reading never removes or reorders a message.
Configured by the environment (RABBITMQ_URL, CALC_*; see docs/operations.md).

exit codes: 0 ok, 1 broker failure or messages not replayed, 2 bad arguments or configuration,
3 report --fail-if-any found messages, 4 an event id is not in the DLQ."""


def _reason(text: str) -> str:
    try:
        return parse_reason(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _filters(p: argparse.ArgumentParser, reason: bool = True) -> None:
    if reason:
        p.add_argument("--reason", type=_reason, action="append", metavar="REASON",
                       help="only this reason (repeatable), e.g. DIVISION_BY_ZERO")
    p.add_argument("--operation", choices=OPERATION_CHOICES, action="append", metavar="OP",
                   help=f"only this operation (repeatable): {', '.join(OPERATION_CHOICES)}")


def _offline(p: argparse.ArgumentParser) -> None:
    p.add_argument("--file", type=Path, metavar="EXPORT",
                   help="read an `export` file instead of the broker (offline inspection)")


def _which(p: argparse.ArgumentParser, verb: str) -> None:
    """The selection of a command that changes the DLQ, and its safety options."""
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--id", action="extend", nargs="+", metavar="EVENT_ID",
                       help=f"{verb} these event ids")
    group.add_argument("--reason", type=_reason, action="append", metavar="REASON",
                       help=f"{verb} every message with this reason (repeatable)")
    group.add_argument("--all", action="store_true", help=f"{verb} every message")
    p.add_argument("--dry-run", action="store_true", help="show what would happen, change nothing")
    p.add_argument("--yes", "-y", action="store_true",
                   help="do not ask for confirmation (required when stdin is not a terminal)")
    p.add_argument("--json", action="store_true", help="print the outcome as JSON")


def parser() -> argparse.ArgumentParser:
    common = OneLineParser(add_help=False)
    common.add_argument("--connect-timeout", type=positive_float, default=10.0, metavar="SECONDS",
                        help="give up connecting to the broker after this long (default 10)")

    top = OneLineParser(prog="dlq-inspector", description=DESCRIPTION,
                        formatter_class=argparse.RawDescriptionHelpFormatter)
    commandline.conventions(top, ENVIRONMENT)
    sub = top.add_subparsers(dest="command", metavar="COMMAND", title="commands")

    report = sub.add_parser("report", parents=[common], help="counts by reason, operation, routing key "
                                                             "(default command)")
    report.add_argument("--json", action="store_true", help="print the report as JSON")
    report.add_argument("--fail-if-any", action="store_true",
                        help=f"exit {EXIT_NOT_EMPTY} when the DLQ is not empty (monitoring, CI)")
    _offline(report)

    listing = sub.add_parser("list", parents=[common], help="one row per message")
    listing.add_argument("--limit", type=non_negative_int, default=100, metavar="N",
                         help="stop after N rows (default 100; 0: all)")
    _filters(listing)
    listing.add_argument("--json", action="store_true", help="one JSON object per line")
    _offline(listing)

    show = sub.add_parser("show", parents=[common], help="everything about one message")
    show.add_argument("event_id", metavar="EVENT_ID")
    show.add_argument("--json", action="store_true", help="one JSON object per matching message")
    _offline(show)

    replay = sub.add_parser("replay", parents=[common],
                            help="republish to calc.requests; removed from the DLQ once confirmed")
    _which(replay, "replay")
    replay.add_argument("--rate", type=positive_float, metavar="PER_SECOND",
                        help="replay at most this many messages per second (default: no limit)")

    purge = sub.add_parser("purge", parents=[common],
                           help="delete the selected messages (the others stay, in order)")
    _which(purge, "purge")

    export = sub.add_parser("export", parents=[common],
                            help="write messages as JSON lines, body base64 included")
    export.add_argument("output", metavar="FILE", help="file to write (`-`: standard output)")
    _filters(export)

    watch = sub.add_parser("watch", parents=[common], help="a live summary, until Ctrl-C")
    watch.add_argument("--interval", type=positive_float, default=5.0, metavar="SECONDS",
                       help="seconds between refreshes (default 5)")

    sub.add_parser("serve", help="long-running: logs the report every CALC_INSPECTOR_INTERVAL s and "
                                 "serves /metrics, /livez, /readyz, /report, /healthz on CALC_INSPECTOR_PORT")
    return top


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    """Parsed arguments; exits 2 with a clear message on anything unusable."""
    top = parser()
    args = top.parse_args(argv)
    if args.command is None:  # `dlq-inspector` alone is `dlq-inspector report`
        args = top.parse_args(["report"])
    path = getattr(args, "file", None)
    if path is not None and not path.is_file():
        top.error(f"--file {path}: no such file")
    if args.command == "show" and not args.event_id.strip():
        top.error("EVENT_ID must not be empty")
    return args


def selection(args: argparse.Namespace) -> Selection:
    return Selection(
        ids=frozenset(getattr(args, "id", None) or ()),
        reasons=frozenset(getattr(args, "reason", None) or ()),
        operations=frozenset(getattr(args, "operation", None) or ()),
    )
