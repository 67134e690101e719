"""CLI conventions: every command has --version and lists in --help the variables it reads."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import fields
from importlib import metadata

import pytest

from consumer import __main__ as consumer_main
from dlq_inspector import __main__ as inspector_main
from dlq_inspector import cli as inspector_cli
from journal import __main__ as journal_main
from journal import cli as journal_cli
from messaging import commandline
from messaging.settings import Settings, _env_name
from producer import __main__ as producer_main

Main = Callable[[Sequence[str] | None], int]
COMMANDS: dict[str, tuple[Main, tuple[str, ...]]] = {
    "calc-producer": (producer_main.main, producer_main.ENVIRONMENT),
    "calc-consumer": (consumer_main.main, consumer_main.ENVIRONMENT),
    "dlq-inspector": (inspector_main.main, inspector_cli.ENVIRONMENT),
    "calc-journal": (journal_main.main, journal_cli.ENVIRONMENT),
}


def _run(main: Main, argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    with pytest.raises(SystemExit) as exited:
        main(argv)
    return int(exited.value.code or 0), capsys.readouterr().out


@pytest.mark.parametrize("prog", COMMANDS)
def test_version_is_the_package_metadata(prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(COMMANDS[prog][0], ["--version"], capsys)
    assert (code, out) == (0, f"{prog} {metadata.version('calc-events')}\n")


@pytest.mark.parametrize("prog", COMMANDS)
def test_help_lists_each_variable_the_command_reads_with_its_settings_docstring(
        prog: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out = _run(COMMANDS[prog][0], ["--help"], capsys)
    assert code == 0
    section = out.split("environment variables (docs/operations.md#configuration):\n", 1)[1]
    listed = [line.split()[0] for line in section.splitlines() if line.startswith("  ") and
              not line.startswith("   ")]
    assert listed == [_env_name(name) for name in dict.fromkeys(COMMANDS[prog][1])]
    flat = " ".join(section.split())
    for name in COMMANDS[prog][1]:
        meaning = commandline.field_docs()[name].split(":", 1)[1].strip()
        assert meaning in flat, name


def test_every_setting_is_read_by_some_command() -> None:
    """A new Settings field must be added to the ENVIRONMENT of each command that reads it."""
    listed = {name for _, names in COMMANDS.values() for name in names}
    assert listed == {f.name for f in fields(Settings)}


def test_every_settings_field_has_a_docstring_naming_its_variable() -> None:
    docs = commandline.field_docs()
    for f in fields(Settings):
        assert docs[f.name].startswith(f"{_env_name(f.name)}: "), f.name


def test_an_unknown_field_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="no_such_knob is not a Settings field"):
        commandline.environment(["no_such_knob"])


def test_a_bare_tree_says_unknown(monkeypatch: pytest.MonkeyPatch) -> None:
    def missing(_: str) -> str:
        raise metadata.PackageNotFoundError("calc-events")

    monkeypatch.setattr(metadata, "version", missing)
    assert commandline.version() == "unknown"
