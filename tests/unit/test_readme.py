"""The configuration table of docs/operations.md stays true: every variable Settings reads, once,
with the default Settings has."""

from __future__ import annotations

import re
from dataclasses import MISSING, fields
from pathlib import Path

from messaging.settings import Settings, _env_name

ROOT = Path(__file__).resolve().parents[2]
OPERATIONS = ROOT / "docs" / "operations.md"
ROW = re.compile(r"^\| `([A-Z0-9_]+)` \|([^|]*)\|", flags=re.M)


def _table() -> list[tuple[str, str]]:
    section = OPERATIONS.read_text().split("## Configuration", 1)[1].split("\n## ", 1)[0]
    return [(name, default.strip()) for name, default in ROW.findall(section)]


def _shown(value: object) -> str:
    """A default as the table writes it: `basic,heavy`, `true`, `INFO`; empty for an empty one."""
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, tuple):
        return f"`{','.join(value)}`"
    return f"`{value}`" if value != "" else ""


def test_configuration_table_lists_every_variable_once() -> None:
    names = [name for name, _ in _table()]
    assert len(names) == len(set(names)), "a variable listed twice"
    assert set(names) == {_env_name(f.name) for f in fields(Settings)}


def test_configuration_table_gives_each_default() -> None:
    table = dict(_table())
    for f in fields(Settings):
        if f.default is MISSING:  # computed at start (CALC_INSTANCE_ID: hostname-pid)
            assert table[_env_name(f.name)] and "`" not in table[_env_name(f.name)], f.name
            continue
        cell = table[_env_name(f.name)]
        if isinstance(f.default, (int, float)) and not isinstance(f.default, bool):
            assert float(cell.strip("`")) == f.default, f.name  # `0` for 0.0 is the same number
        else:
            assert cell == _shown(f.default), f.name


def test_the_readme_sends_readers_to_the_configuration() -> None:
    assert "docs/operations.md" in (ROOT / "README.md").read_text()
