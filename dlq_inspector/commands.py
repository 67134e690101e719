"""Each command as one function: open the source, run the action, print for people or machines."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import sys
import time
from collections.abc import AsyncIterator, Callable, Coroutine
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from dlq_inspector import actions, cli, render
from dlq_inspector import serve as serving
from dlq_inspector.broker import connected
from dlq_inspector.errors import InspectorError, UsageError
from dlq_inspector.explain import Explanation, explain
from dlq_inspector.letters import DeadLetter
from dlq_inspector.reader import DlqScan, read_export
from dlq_inspector.report import Report, scan_report, summarize
from dlq_inspector.selection import Found
from messaging import lifecycle, topology, tracing
from messaging.logs import kv
from messaging.publisher import confirmed_channel
from messaging.settings import Settings

log = logging.getLogger(__name__)


def _name(settings: Settings, command: str) -> str:
    return f"calc-dlq-inspector {command} {settings.instance_id}"


async def _file_letters(path: Path) -> AsyncIterator[DeadLetter]:
    for letter in read_export(path):
        yield letter


@contextlib.asynccontextmanager
async def _letters(args: argparse.Namespace, settings: Settings
                   ) -> AsyncIterator[tuple[AsyncIterator[DeadLetter], DlqScan | None]]:
    """The letters to read: an export file (`--file`), or a scan of calc.dlq."""
    if getattr(args, "file", None) is not None:
        yield _file_letters(args.file), None
        return
    async with connected(settings, _name(settings, args.command), args.connect_timeout) as connection:
        async with DlqScan(connection) as scan:
            yield scan.letters(), scan


async def _report(args: argparse.Namespace, settings: Settings) -> Report:
    started = time.monotonic()
    async with _letters(args, settings) as (letters, scan):
        report = await summarize(letters, settings.max_message_bytes, settings.max_attempts)
        if scan is not None:
            report.expected, report.complete = scan.expected, scan.complete
    report.scan_seconds = time.monotonic() - started
    log.debug("report", extra=kv(total=report.total, scan_s=round(report.scan_seconds, 3)))
    return report


async def report(args: argparse.Namespace, settings: Settings) -> int:
    result = await _report(args, settings)
    print(json.dumps(result.as_json()) if args.json else render.report_text(result))
    if args.fail_if_any and result.total:
        return cli.EXIT_NOT_EMPTY
    return cli.EXIT_OK


async def list_messages(args: argparse.Namespace, settings: Settings) -> int:
    selection = cli.selection(args)
    shown = 0
    limited = False
    if not args.json:
        print(render.list_header())
    async with _letters(args, settings) as (letters, _scan):
        async for letter in letters:
            explanation = explain(letter, settings.max_message_bytes, settings.max_attempts)
            if not selection.matches(explanation):
                continue
            if args.limit and shown >= args.limit:
                limited = True
                break
            shown += 1
            print(json.dumps({"position": letter.position, **explanation.summary()})
                  if args.json else render.list_row(explanation))
    if not args.json:
        more = f" (stopped at --limit {args.limit}; --limit 0 lists all)" if limited else ""
        print(f"{shown} message{'s' if shown != 1 else ''} shown{more}")
    return cli.EXIT_OK


async def show(args: argparse.Namespace, settings: Settings) -> int:
    wanted = args.event_id.strip()
    found = Found(frozenset({wanted}))
    matches: list[Explanation] = []
    scanned = 0
    async with _letters(args, settings) as (letters, _scan):
        async for letter in letters:
            scanned += 1
            explanation = explain(letter, settings.max_message_bytes, settings.max_attempts)
            found.note(explanation)
            if wanted in (explanation.event_id, letter.text("message_id")):
                matches.append(explanation)
    if not matches:
        print(f"not in calc.dlq: {wanted} (scanned {scanned} messages)", file=sys.stderr)
        return cli.EXIT_NOT_FOUND
    for number, explanation in enumerate(matches):
        if args.json:
            print(json.dumps(render.show_json(explanation)))
        else:
            print(("\n" if number else "") + render.show_text(explanation))
    if len(matches) > 1 and not args.json:
        print(f"\n{len(matches)} messages in calc.dlq carry event id {wanted}", file=sys.stderr)
    return cli.EXIT_OK


async def _confirm(question: str, args: argparse.Namespace, stdin: TextIO) -> None:
    """Go on with --yes or a `y` on a terminal; refuse (exit 2) when nobody can be asked."""
    if args.yes or args.dry_run:
        return
    if not stdin.isatty():
        raise UsageError(f"refusing to {args.command} without --yes: stdin is not a terminal "
                         f"(use --dry-run to see what it would do)")
    answer = await asyncio.to_thread(input, f"{question} [y/N] ")
    if answer.strip().lower() not in ("y", "yes"):
        raise InspectorError(f"{args.command} aborted; nothing changed")


def _outcome(result: actions.ActionResult, args: argparse.Namespace,
             lines: list[dict[str, str]]) -> int:
    verb = {"replay": "replayed", "purge": "purged"}[result.action]
    log.info("%s finished", result.action, extra=kv(
        selection=result.selection, dry_run=result.dry_run, scanned=result.scanned,
        selected=result.selected, done=result.done, failed=len(result.failed),
        missing=len(result.missing_ids), complete=result.complete, seconds=round(result.seconds, 3)))
    if args.json:
        print(json.dumps({**result.as_json(), "messages": lines}))
    else:
        would = "would have been " if result.dry_run else ""
        by_reason = ", ".join(f"{r} {n}" for r, n in sorted(result.done_by_reason.items()))
        print(f"{result.done} message{'s' if result.done != 1 else ''} {would}{verb} of "
              f"{result.selected} selected ({result.selection}); {result.scanned} scanned in "
              f"{result.seconds:.1f}s" + (f"; {by_reason}" if by_reason else ""))
    if not result.complete:
        print("warning: not every message of calc.dlq was read (another reader holds some); "
              "run again to cover the rest", file=sys.stderr)
    if result.missing_ids:
        print(f"not in calc.dlq: {' '.join(result.missing_ids)}", file=sys.stderr)
    if result.failed:
        print(f"{len(result.failed)} message{'s' if len(result.failed) != 1 else ''} not {verb}; "
              "they stay in calc.dlq", file=sys.stderr)
        return cli.EXIT_FAILURE
    return cli.EXIT_NOT_FOUND if result.missing_ids else cli.EXIT_OK


def _printer(args: argparse.Namespace, status: str, lines: list[dict[str, str]]
             ) -> Callable[[Explanation], None]:
    def done(explanation: Explanation) -> None:
        log.debug(status, extra=kv(event_id=explanation.event_id,
                                  correlation_id=explanation.correlation_id,
                                  reason=explanation.reason,
                                  routing_key=explanation.original_routing_key))
        if args.json:
            lines.append({"event_id": explanation.event_id, "reason": explanation.reason,
                          "routing_key": explanation.original_routing_key, "status": status})
        else:
            print(f"{status} {explanation.event_id or '-'} {explanation.reason} "
                  f"{explanation.original_routing_key or '-'}", flush=True)
    return done


async def replay(args: argparse.Namespace, settings: Settings, traces: tracing.Tracing | None = None) -> int:
    selection = cli.selection(args)
    lines: list[dict[str, str]] = []
    status = "would_replay" if args.dry_run else "replayed"

    def failed(explanation: Explanation, error: str) -> None:
        log.error("replay failed", extra=kv(event_id=explanation.event_id,
                                            correlation_id=explanation.correlation_id, error=error))
        lines.append({"event_id": explanation.event_id, "reason": explanation.reason,
                      "routing_key": explanation.original_routing_key, "status": "failed",
                      "error": error})
        if not args.json:
            print(f"failed {explanation.event_id or '-'} {explanation.reason}: {error}", file=sys.stderr)

    async with connected(settings, _name(settings, "replay"), args.connect_timeout) as connection:
        channel = await confirmed_channel(connection)
        async with DlqScan(connection) as scan:
            await _confirm(f"Replay {selection.describe()} of the {scan.expected} messages in calc.dlq "
                           f"to {topology.REQUESTS_EXCHANGE}?", args, sys.stdin)
            result = await actions.replay(
                scan, channel, selection, settings, dry_run=args.dry_run,
                on_done=_printer(args, status, lines), on_failed=failed,
                progress=render.Progress(sys.stderr, "replay"), rate=args.rate, traces=traces)
        await channel.close()
    return _outcome(result, args, lines)


async def purge(args: argparse.Namespace, settings: Settings) -> int:
    selection = cli.selection(args)
    lines: list[dict[str, str]] = []
    status = "would_purge" if args.dry_run else "purged"
    async with connected(settings, _name(settings, "purge"), args.connect_timeout) as connection:
        async with DlqScan(connection) as scan:
            await _confirm(f"Delete {selection.describe()} of the {scan.expected} messages in calc.dlq "
                           "for good?", args, sys.stdin)
            result = await actions.purge(scan, selection, settings, dry_run=args.dry_run,
                                         on_done=_printer(args, status, lines),
                                         progress=render.Progress(sys.stderr, "purge"))
    return _outcome(result, args, lines)


async def export(args: argparse.Namespace, settings: Settings) -> int:
    selection = cli.selection(args)
    to_stdout = args.output == "-"
    path = Path(args.output)
    try:
        out = sys.stdout if to_stdout else await asyncio.to_thread(path.open, "w", encoding="utf-8")
    except OSError as exc:
        raise UsageError(f"cannot write {args.output}: {exc.strerror}") from None
    try:
        async with _letters(args, settings) as (letters, scan):
            written = await actions.export(letters, out, selection, settings,
                                           render.Progress(sys.stderr, "export"))
            complete = scan.complete if scan is not None else True
    finally:
        if not to_stdout:
            out.close()
    by_reason = ", ".join(f"{r} {n}" for r, n in sorted(written.items()))
    print(f"exported {written.total()} messages to {args.output}" + (f" ({by_reason})" if by_reason else ""),
          file=sys.stderr)
    if not complete:
        print("warning: not every message of calc.dlq was read (another reader holds some)",
              file=sys.stderr)
    return cli.EXIT_OK


async def watch(args: argparse.Namespace, settings: Settings) -> int:
    stop = lifecycle.shutdown_event()
    clear = sys.stdout.isatty()
    previous: Report | None = None
    async with connected(settings, _name(settings, "watch"), args.connect_timeout) as connection:
        while not stop.is_set():
            current = await scan_report(connection, settings)
            change = "" if previous is None else f" ({current.total - previous.total:+d} since last)"
            stamp = datetime.now(UTC).strftime("%H:%M:%SZ")
            text = (f"{stamp}  every {args.interval:g}s, Ctrl-C to stop{change}\n"
                    + render.report_text(current))
            print(("\033[H\033[J" if clear else "\n") + text, flush=True)
            previous = current
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), args.interval)
    return cli.EXIT_OK


async def serve(args: argparse.Namespace, settings: Settings) -> int:
    return await serving.serve(settings, lifecycle.shutdown_event())


COMMANDS: dict[str, Callable[[argparse.Namespace, Settings], Coroutine[Any, Any, int]]] = {
    "report": report, "list": list_messages, "show": show, "replay": replay, "purge": purge,
    "export": export, "watch": watch, "serve": serve,
}


async def run(args: argparse.Namespace, settings: Settings, traces: tracing.Tracing | None = None) -> int:
    """Run the command; `traces` (None: off) traces a replay's republishes."""
    if args.command == "replay":
        return await replay(args, settings, traces)
    return await COMMANDS[args.command](args, settings)
