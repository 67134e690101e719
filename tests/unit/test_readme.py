"""The README stays true: its configuration table lists every variable Settings reads."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path

from messaging.settings import Settings, _env_name

README = Path(__file__).resolve().parents[2] / "README.md"
JOURNAL = README.parent / "docs" / "journal.md"  # the journal's own variables


def test_configuration_table_lists_every_variable() -> None:
    text = README.read_text() + JOURNAL.read_text()
    table = set(re.findall(r"^\| `([A-Z_]+)` \|", text, flags=re.M))
    assert table == {_env_name(f.name) for f in fields(Settings)}
