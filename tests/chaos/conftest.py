"""The chaos tier: every test here is marked `chaos`, and rows it records form the Reliability table."""

from __future__ import annotations

import json
import os
import platform
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest

from scripts import doc_tables
from tests.support.broker import choose_chaos_node_kind

CHAOS_DIR = Path(__file__).parent.resolve()
DEFAULT_REPORT = CHAOS_DIR / "reliability.json"
COMMAND = ".venv/bin/pytest tests/chaos"


@dataclass(frozen=True)
class Row:
    """One line of the table in docs/reliability.md."""

    scenario: str
    sent: int
    lost: int
    duplicates: int
    recover_s: float | None
    """Seconds from the failure until results (and confirms, where a producer ran) flowed again."""
    notes: str = ""
    journal_rows: int | None = None
    """Rows the journal holds for the `sent` requests (one each, asserted), where it ran."""


def _row(row: Row) -> dict[str, object]:
    """A row for the JSON: without journal_rows where the journal did not run (no empty column)."""
    return {k: v for k, v in asdict(row).items() if not (k == "journal_rows" and v is None)}


_ROWS = pytest.StashKey[list[Row]]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if item.path.resolve().is_relative_to(CHAOS_DIR):
            item.add_marker(pytest.mark.chaos)


@pytest.fixture
def reliability(request: pytest.FixtureRequest) -> Callable[[Row], None]:
    """Record a row of the Reliability table (written when the session ends)."""
    rows = request.config.stash.setdefault(_ROWS, [])
    return rows.append


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    config = terminalreporter.config
    rows = config.stash.get(_ROWS, [])
    if not rows:
        return
    path = Path(os.environ.get("CALC_RELIABILITY_REPORT", DEFAULT_REPORT))
    containers = choose_chaos_node_kind()[0] == "container"
    document = {
        "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": "make test-chaos-docker" if containers else COMMAND,
        "broker": (f"containers of {os.environ.get('CALC_TEST_RABBITMQ_IMAGE', 'rabbitmq:4.0-management')}"
                   if containers else "private rabbitmq-server nodes"),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}",
        "rows": [_row(r) for r in rows],
    }
    path.write_text(json.dumps(document, indent=2) + "\n")
    table = doc_tables.reliability(document)
    path.with_suffix(".md").write_text(table + "\n")
    terminalreporter.section(f"reliability ({document['broker']})")
    for line in table.splitlines():
        terminalreporter.write_line(line)
    try:  # a run of every scenario becomes the table of docs/reliability.md
        terminalreporter.write_line(doc_tables.publish("reliability-docker" if containers else "reliability",
                                                       document))
    except doc_tables.DocError as exc:
        terminalreporter.write_line(str(exc))
    terminalreporter.write_line(f"written to {path} and {path.with_suffix('.md')}")
