"""The `calc-journal` command line: commands, options and exit codes."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from journal.commands import EXIT_PENDING
from messaging import commandline, lifecycle

DESCRIPTION = f"""\
Record every request's outcome once in PostgreSQL, and answer what became of a request.
Configured by the environment (DATABASE_URL, RABBITMQ_URL, CALC_*; see docs/journal.md).

exit codes: {lifecycle.EXIT_OK} ok, {lifecycle.EXIT_FAILURE} the database or the broker failed, \
{lifecycle.EXIT_USAGE} bad arguments or configuration,
{EXIT_PENDING} get: no outcome recorded for the id (pending, or never sent)."""


ENVIRONMENT = (*commandline.BROKER, *commandline.TOPOLOGY, "publish_timeout", "database_url",
               "database_password_file", "journal_batch", "journal_port")


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="calc-journal", description=DESCRIPTION,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commandline.conventions(top, ENVIRONMENT)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    commands.add_parser("serve", help="the service: consume calc.results.journal, record, serve "
                                      "/results/ID, /metrics, /livez, /readyz on CALC_JOURNAL_PORT")
    get = commands.add_parser("get", help="the outcome of a request (event_id or correlation_id)")
    get.add_argument("id", help="a request's event_id, or a correlation_id (every request it names)")
    get.add_argument("--json", action="store_true", help="JSON instead of text")
    stats = commands.add_parser("stats", help="counts by status, reason and operation; duplicates seen")
    stats.add_argument("--json", action="store_true", help="JSON instead of a table")
    commands.add_parser("migrate", help="create or upgrade the journal's tables, then exit "
                                        "(serve does it too, at every start)")
    return top


def parse(argv: Sequence[str] | None = None) -> argparse.Namespace:
    args = parser().parse_args(argv)
    if args.command == "get" and (not args.id.strip() or len(args.id) > 255):
        parser().error("get: the id must be 1 to 255 characters")
    return args
