"""`dlq-inspector` / `python -m dlq_inspector`: parse, load settings, configure logs, hand over."""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from dlq_inspector import cli, commands
from messaging import lifecycle, logs, tracing
from messaging.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    args = cli.parse(argv)
    try:
        settings = Settings.from_env()
    except Exception as exc:
        cli.parser().exit(cli.EXIT_USAGE, f"error: {exc}\n")
    logs.configure(settings)
    traces = tracing.configure("calc-dlq-inspector", on=settings.tracing)
    try:
        return lifecycle.run(lambda: commands.run(args, settings, traces))
    except BrokenPipeError:
        # The reader of stdout went away (`dlq-inspector list | head`): stop quietly; whatever
        # the scan held went back to the DLQ when its connection closed.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return cli.EXIT_FAILURE
    finally:
        if traces is not None:
            traces.shutdown()  # export the replay's spans before the process ends


if __name__ == "__main__":
    raise SystemExit(main())
