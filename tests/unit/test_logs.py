"""The log line formats: logfmt-style text for people, one JSON object per line for machines."""

from __future__ import annotations

import io
import json
import logging
import re
import sys

import pytest

from messaging import logs
from messaging.logs import JsonFormatter, TextFormatter, kv
from messaging.settings import Settings

STAMP = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


def record(message: str = "completed", level: int = logging.INFO, exc_info: object = None,
           **fields: object) -> logging.LogRecord:
    return logging.getLogger("consumer.service").makeRecord(
        "consumer.service", level, "", 0, message, (), exc_info, extra=kv(**fields))  # type: ignore[arg-type]


def test_text_line_is_time_level_logger_event_then_fields_in_order() -> None:
    line = TextFormatter().format(record(event_id="e-1", operation="add", operands=[1.5, 2.0],
                                         result=3.5, attempt=1))
    stamp, rest = line.split(" ", 1)
    assert STAMP.match(stamp), stamp
    assert rest == ('INFO consumer.service completed event_id=e-1 operation=add '
                    'operands="[1.5, 2.0]" result=3.5 attempt=1')


@pytest.mark.parametrize(("value", "shown"), [
    ("plain", "plain"),
    ("", '""'),
    ("two words", '"two words"'),
    ("a=b", '"a=b"'),
    ('say "hi"', '"say \\"hi\\""'),
    (3, "3"),
    (-0.5, "-0.5"),
    (float("inf"), "inf"),
    (True, "True"),
    (None, "None"),
    ([1, 2], '"[1, 2]"'),
])
def test_text_field_values_are_quoted_only_when_they_would_not_parse_back(value: object, shown: str) -> None:
    assert TextFormatter().format(record(v=value)).endswith(f" completed v={shown}")


def test_text_line_without_fields_ends_with_the_event() -> None:
    assert TextFormatter().format(record("stopped")).endswith(" INFO consumer.service stopped")


def test_text_exception_stays_on_one_line_as_an_error_field() -> None:
    try:
        raise ValueError("bad\nthing")
    except ValueError:
        line = TextFormatter().format(record("unexpected error", logging.ERROR, sys.exc_info(),
                                             message_id="m"))
    assert "\n" not in line
    assert " message_id=m error=\"Traceback" in line
    assert "ValueError: bad | thing" in line


def test_json_line_has_the_event_and_its_fields_and_is_one_object() -> None:
    line = JsonFormatter().format(record("failed", logging.WARNING, reason="DIVISION_BY_ZERO",
                                         operands=[1.0, 0.0], attempts=1))
    data = json.loads(line)
    assert "\n" not in line
    assert STAMP.match(data.pop("ts"))
    assert data == {"level": "WARNING", "logger": "consumer.service", "event": "failed",
                    "reason": "DIVISION_BY_ZERO", "operands": [1.0, 0.0], "attempts": 1}


def test_configure_sends_the_root_logger_to_stderr_at_the_level_and_quiets_the_clients(
        monkeypatch: pytest.MonkeyPatch) -> None:
    stream = io.StringIO()
    monkeypatch.setattr("sys.stderr", stream)
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        logs.configure(Settings.from_env({"CALC_LOG_LEVEL": "warning", "CALC_LOG_FORMAT": "json"}))
        logging.getLogger("consumer.service").info("completed", extra=kv(event_id="hidden"))
        logging.getLogger("consumer.service").warning("failed", extra=kv(event_id="shown"))
        assert logging.getLogger("aiormq").level == logging.WARNING
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = stream.getvalue().splitlines()
    assert [json.loads(line)["event_id"] for line in lines] == ["shown"]
