"""calc-producer's arguments: what is refused (one line, exit 2, before connecting) and what is sent."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path
from typing import NoReturn

import pytest
from hypothesis import given
from hypothesis import strategies as st

from calculator import CalculationError, InvalidArguments, Operation, check_arguments, compute
from messaging import lifecycle
from messaging.connection import BrokerUnavailable
from messaging.settings import Settings
from producer import __main__ as producer_main
from producer.__main__ import main
from producer.generator import FAILING, Spec

# Nothing listens on port 1: any command that got past its checks fails to connect, with exit 1.
CLOSED = "amqp://guest:guest@127.0.0.1:1/"


@pytest.fixture(autouse=True)
def _closed_broker(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RABBITMQ_URL", CLOSED)
    monkeypatch.setenv("CALC_CONNECT_TIMEOUT", "1")
    for name in ("RABBITMQ_PASSWORD_FILE", "CALC_METRICS_PORT", "CALC_LOG_FORMAT", "CALC_FAILURE_SHARE"):
        monkeypatch.delenv(name, raising=False)


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int | str | None, str]:
    """Exit code and stderr of `calc-producer argv`, in-process."""
    try:
        code: int | str | None = main(argv)
    except SystemExit as exited:
        code = exited.code
    return code, capsys.readouterr().err


@pytest.mark.parametrize(("argv", "message"), [
    # the request's shape, by the calculator's rule
    (["send", "add", "1"], "calc-producer send: error: add takes 2 operands, got 1 "
                           "(--unchecked sends it anyway)"),
    (["send", "sqrt", "4", "9"], "calc-producer send: error: sqrt takes 1 operand, got 2"),
    (["send", "sqrt"], "calc-producer send: error: sqrt takes 1 operand, got 0"),
    (["send", "factorial", "1", "2", "3"], "factorial takes 1 operand, got 3"),
    (["send", "add", "nan", "1"], "calc-producer send: error: operand nan is not a finite number"),
    (["send", "multiply", "2", "inf"], "operand inf is not a finite number"),
    (["send", "divide", "1e999", "1"], "operand inf is not a finite number"),  # overflows when parsed
    (["send", "sqrt", "--", "-inf"], "operand -inf is not a finite number"),
    # what is no request at all
    (["send", "ad", "1", "2"], "calc-producer send: error: argument operation: invalid choice: 'ad'"),
    (["send", "add", "one", "2"], "argument OPERAND: invalid float value: 'one'"),
    (["frobnicate"], "calc-producer: error: argument COMMAND: invalid choice: 'frobnicate'"),
    # bulk's options
    (["bulk"], "calc-producer bulk: error: the following arguments are required: --count"),
    (["bulk", "--count", "0"], "argument --count: must be at least 1, got 0"),
    (["bulk", "--count", "-5"], "argument --count: must be at least 1, got -5"),
    (["bulk", "--count", "nan"], "argument --count: expected a whole number, got 'nan'"),
    (["bulk", "--count", "2.5"], "argument --count: expected a whole number, got '2.5'"),
    (["bulk", "--count", "5", "--rate", "-1"], "calc-producer bulk: error: argument --rate: "
                                               "must be a finite number above 0, got -1"),
    (["bulk", "--count", "5", "--rate", "0"], "argument --rate: must be a finite number above 0, got 0"),
    (["bulk", "--count", "5", "--rate", "nan"], "argument --rate: must be a finite number above 0, got nan"),
    (["bulk", "--count", "5", "--rate", "inf"], "argument --rate: must be a finite number above 0, got inf"),
    (["bulk", "--count", "5", "--rate", "fast"], "argument --rate: expected a number, got 'fast'"),
    (["bulk", "--count", "5", "--failure-share", "1.5"],
     "calc-producer bulk: error: argument --failure-share: must be between 0 and 1, got 1.5"),
    (["bulk", "--count", "5", "--failure-share", "-0.1"], "must be between 0 and 1, got -0.1"),
    (["bulk", "--count", "5", "--failure-share", "nan"], "must be between 0 and 1, got nan"),
    (["bulk", "--count", "5", "--failure-share", "inf"], "argument --failure-share: must be between 0 and 1"),
    (["bulk", "--count", "5", "--failure-share", "half"], "argument --failure-share: expected a number"),
    (["bulk", "--count", "5", "--seed", "x"], "argument --seed: invalid int value: 'x'"),
    (["bulk", "--count", "5", "--ids-file", "/no/such/dir/ids.txt"], "argument --ids-file: cannot write"),
])
def test_a_bad_command_exits_2_with_one_line_before_connecting(argv: list[str], message: str,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(argv, capsys)
    assert code == lifecycle.EXIT_USAGE, err
    assert message in err
    assert err.count("\n") == 1 and err.endswith("\n"), err
    assert "not reachable" not in err  # refused before any connection attempt


def test_an_ids_file_that_is_a_directory_is_refused(tmp_path: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    code, err = run(["bulk", "--count", "5", "--ids-file", str(tmp_path)], capsys)
    assert code == lifecycle.EXIT_USAGE and "argument --ids-file: cannot write" in err


@pytest.mark.parametrize("argv", [
    ["send", "add", "1", "2"],
    ["send", "add", "-1", "-2"],
    ["send", "add", "--", "-1e3", "2"],
    # failures only the calculation can tell: valid requests, sent to fail in the consumer
    ["send", "divide", "1", "0"],            # DIVISION_BY_ZERO
    ["send", "modulo", "7", "0"],            # DIVISION_BY_ZERO
    ["send", "sqrt", "-1"],                  # DOMAIN_ERROR
    ["send", "factorial", "3.5"],            # DOMAIN_ERROR
    ["send", "power", "0", "-1"],            # DOMAIN_ERROR
    ["send", "factorial", "171"],            # OVERFLOW (past FACTORIAL_MAX)
    ["send", "multiply", "1e308", "10"],     # OVERFLOW
    # --unchecked sends what the check refuses, for demos of INVALID_ARGUMENTS
    ["send", "--unchecked", "add", "1"],
    ["send", "sqrt", "4", "9", "--unchecked"],
    ["send", "--unchecked", "sqrt"],
    ["send", "--unchecked", "add", "nan", "1"],
    ["bulk", "--count", "1", "--rate", "0.5", "--failure-share", "0"],
    ["bulk", "--count", "1", "--failure-share", "1", "--seed", "-3"],
])
def test_a_valid_command_goes_on_to_connect(argv: list[str], monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    """These get past every check: the first thing that stops them is the connection."""
    async def refused(settings: Settings, name: str) -> NoReturn:
        raise BrokerUnavailable(f"connect reached by {name.split()[0]}")

    monkeypatch.setattr(producer_main, "connect", refused)  # the closed port, without its retry wait
    code, err = run(argv, capsys)
    assert code == lifecycle.EXIT_FAILURE, err
    assert err == "error: connect reached by calc-producer\n"


def test_the_closed_port_is_refused_at_the_connection(capsys: pytest.CaptureFixture[str]) -> None:
    """What every refused command above would have met, had it got that far: exit 1, not 2."""
    code, err = run(["send", "divide", "1", "0"], capsys)
    assert code == lifecycle.EXIT_FAILURE, err
    assert "not reachable" in err


def test_the_console_script_prints_one_line_and_exits_2() -> None:
    result = subprocess.run([str(Path(sys.executable).parent / "calc-producer"), "send", "add", "1"],
                            env={"RABBITMQ_URL": CLOSED, "CALC_CONNECT_TIMEOUT": "1"},
                            capture_output=True, text=True, timeout=60, check=False)
    assert result.returncode == lifecycle.EXIT_USAGE
    assert result.stderr == ("calc-producer send: error: add takes 2 operands, got 1 "
                             "(--unchecked sends it anyway)\n")
    assert result.stdout == ""


@pytest.mark.parametrize("spec", FAILING, ids=lambda s: f"{s.operation.word}{s.operands}")
def test_every_failure_bulk_builds_is_a_well_formed_request(spec: Spec) -> None:
    """bulk's failures are the calculation's (division, domain, overflow), never a request's shape."""
    check_arguments(spec.operation, spec.operands)
    with pytest.raises(CalculationError) as raised:
        compute(spec.operation, spec.operands)
    assert not isinstance(raised.value, InvalidArguments)


@given(st.sampled_from(list(Operation)),
       st.lists(st.floats(allow_nan=True, allow_infinity=True), max_size=3))
def test_check_arguments_is_compute_s_own_rule(operation: Operation, operands: list[float]) -> None:
    """compute fails with InvalidArguments exactly when check_arguments does, with the same detail."""
    try:
        check_arguments(operation, operands)
        refused = None
    except InvalidArguments as exc:
        refused = str(exc)
    try:
        compute(operation, operands)
        computed = None
    except InvalidArguments as exc:
        computed = str(exc)
    except CalculationError:
        computed = None
    assert refused == computed
    assert (refused is None) == (len(operands) == operation.arity and all(map(math.isfinite, operands)))
