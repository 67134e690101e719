"""The dlq-inspector command line: what it accepts, and the clear message and exit 2 otherwise."""

from __future__ import annotations

from pathlib import Path

import pytest

from dlq_inspector import cli
from dlq_inspector.__main__ import main


def error_of(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    with pytest.raises(SystemExit) as exited:
        cli.parse(argv)
    assert exited.value.code == cli.EXIT_USAGE
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.endswith("\n"), err  # one line, no usage block
    return err


def test_report_is_the_default_command() -> None:
    args = cli.parse([])
    assert args.command == "report" and not args.json and not args.fail_if_any
    assert args.connect_timeout == 10.0


def test_filters_and_selections() -> None:
    args = cli.parse(["list", "--reason", "division_by_zero", "--reason", "expired", "--operation", "sqrt",
                      "--limit", "0", "--json"])
    selection = cli.selection(args)
    assert selection.reasons == {"DIVISION_BY_ZERO", "EXPIRED"} and selection.operations == {"sqrt"}
    assert args.limit == 0
    replay = cli.parse(["replay", "--id", "a", "b", "--id", "c", "--dry-run", "--rate", "50"])
    assert cli.selection(replay).ids == {"a", "b", "c"} and replay.dry_run and replay.rate == 50
    assert cli.selection(cli.parse(["purge", "--all", "--yes"])).describe() == "every message"
    assert cli.parse(["export", "-"]).output == "-"
    assert cli.parse(["watch", "--interval", "0.5"]).interval == 0.5


@pytest.mark.parametrize(("argv", "message"), [
    (["list", "--reason", "bogus"], "unknown reason 'bogus'; expected one of DIVISION_BY_ZERO"),
    (["list", "--operation", "cube"], "invalid choice: 'cube'"),
    (["list", "--limit", "-1"], "dlq-inspector list: error: argument --limit: must be 0 or more, got -1"),
    (["list", "--limit", "many"], "argument --limit: expected a whole number, got 'many'"),
    (["list", "--limit", "1.5"], "argument --limit: expected a whole number, got '1.5'"),
    (["replay", "--yes"], "one of the arguments --id --reason --all is required"),
    (["replay", "--all", "--reason", "OVERFLOW"], "not allowed with argument"),
    (["replay", "--all", "--rate", "0"], "argument --rate: must be a finite number above 0, got 0"),
    (["replay", "--all", "--rate", "inf"], "argument --rate: must be a finite number above 0, got inf"),
    (["replay", "--all", "--rate", "fast"], "argument --rate: expected a number, got 'fast'"),
    (["watch", "--interval", "nan"], "argument --interval: must be a finite number above 0, got nan"),
    (["purge", "--yes"], "one of the arguments --id --reason --all is required"),
    (["show"], "the following arguments are required: EVENT_ID"),
    (["show", " "], "EVENT_ID must not be empty"),
    (["export"], "the following arguments are required: FILE"),
    (["report", "--file", "/no/such/export.jsonl"],
     "dlq-inspector: error: --file /no/such/export.jsonl: no such file"),
    (["report", "--connect-timeout", "-3"], "argument --connect-timeout: must be a finite number above 0"),
    (["report", "--connect-timeout", "soon"], "argument --connect-timeout: expected a number, got 'soon'"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
])
def test_bad_arguments_exit_2_with_a_clear_message(argv: list[str], message: str,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    assert message in error_of(argv, capsys)


def test_bad_configuration_exits_2(monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CALC_LOG_FORMAT", "xml")
    with pytest.raises(SystemExit) as exited:
        main(["report"])
    assert exited.value.code == cli.EXIT_USAGE
    assert "CALC_LOG_FORMAT must be text or json" in capsys.readouterr().err


def test_offline_report_of_an_export_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    from dlq_inspector.actions import export_line
    from tests.unit.test_inspector_report import SAMPLE

    export = tmp_path / "dlq.jsonl"
    export.write_text("".join(export_line(e) + "\n" for e in SAMPLE))
    for key in ("CALC_LOG_FORMAT", "RABBITMQ_URL"):
        monkeypatch.delenv(key, raising=False)
    assert main(["report", "--file", str(export), "--fail-if-any"]) == cli.EXIT_NOT_EMPTY
    assert capsys.readouterr().out.startswith("calc.dlq: 6 messages")
    assert main(["show", "c", "--file", str(export)]) == cli.EXIT_OK
    assert "DOMAIN_ERROR" in capsys.readouterr().out
    assert main(["show", "nope", "--file", str(export)]) == cli.EXIT_NOT_FOUND
    assert "not in calc.dlq: nope (scanned 6 messages)" in capsys.readouterr().err
    assert main(["list", "--file", str(export), "--reason", "RETRIES_EXHAUSTED"]) == cli.EXIT_OK
    assert "2 messages shown" in capsys.readouterr().out
    export.write_text("{not json\n")
    assert main(["report", "--file", str(export)]) == cli.EXIT_FAILURE
    assert "is not an export line" in capsys.readouterr().err
