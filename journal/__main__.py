"""`calc-journal` / `python -m journal`: parse, load settings, configure logs, hand over."""

from __future__ import annotations

from collections.abc import Sequence

from journal import cli, commands
from messaging import lifecycle, logs, tracing
from messaging.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.parse(argv)
    try:
        settings = Settings.from_env()
    except Exception as exc:
        cli.parser().exit(lifecycle.EXIT_USAGE, f"error: {exc}\n")
    logs.configure(settings)
    if args.command == "serve":
        traces = tracing.configure("calc-journal", on=settings.tracing)
        try:
            return lifecycle.run(lambda: commands.serve(settings, traces))
        finally:
            if traces is not None:
                traces.shutdown()  # export the spans still buffered
    if args.command == "get":
        return lifecycle.run(lambda: commands.get(settings, args.id, args.json))
    if args.command == "stats":
        return lifecycle.run(lambda: commands.stats(settings, args.json))
    return lifecycle.run(lambda: commands.migrate(settings))


if __name__ == "__main__":
    raise SystemExit(main())
