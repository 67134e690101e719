"""Hostile environment values: every Settings field gives a usable value or one ConfigurationError line."""

from __future__ import annotations

import logging
import math
import os
import tempfile
from dataclasses import Field, fields
from urllib.parse import urlsplit

import pytest
import yarl
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from messaging import topology
from messaging.errors import ConfigurationError
from messaging.settings import (
    IN_FLIGHT_MAX,
    MAX_ATTEMPTS_MAX,
    MESSAGE_BYTES_MAX,
    NAME_MAX,
    PASSWORD_FILE_MAX,
    QUEUE_BOUND_MAX,
    RETRY_DELAY_MAX,
    Settings,
    _env_name,
    redact_url,
)

SECRET = "Pw0rdSecr3t"

KNOWN_BAD = [
    "LOUD", "loud", "WARN", "CRITICAL", "\u0131nfo", "TEXT", "xml",
    "99999", "65536", "-1", "0", "-0", "+0", "1", "00001", "4294967296", "9" * 31, "9" * 5000,
    "1e309", "-1e309", "1e-400", "nan", "NaN", "-nan", "inf", "-inf", "Infinity", "1e3", "1.5", "0.5", "5.0",
    "0x10", "0o7", "0b1", "1_000", "1,5", "½", "\u0665", "\uff15", " 5 ", "\t5\n", "5 5",
    "\x00", "a\x00b", "\x1b[31m", "a\nb", "a\rb", "\x7f", "\x85", "\u2028", "\u200b", "\udcff", "\ud800",
    "é", "名前", "x" * 10_000, " ", ",", ",,", "basic,basic", "basic,medium", "BASIC", "heavy , basic",
    "maybe", "TRUE", "Off",
    "amqp://guest:guest@127.0.0.1:99999/", "amqp://guest:guest@127.0.0.1:abc/", "amqp://guest:guest@h:0/",
    "amqp://h:-1/", "amqp://h:+5/", "amqp://h:\u0665/", "amqp://h:5672:1/", "amqp://[::1", "amqp://[::1]x/",
    "amqp://[]/", "amqp://[zz]/", "amqp://\u0080/", "amqp://" + "a" * 70 + "/", "amqp://ex..ample/",
    "amqp:///vhost", "amqp://", "amqp://:5672/", "amqp://u:p@/", "AMQP://localhost/", "amqps//localhost",
    "http://localhost/", "localhost:5672", "amqp://h/" + "v" * 300, "amqp://h/%zz", "amqp://a@b@c/",
    "amqp://h\x00/", "amqp://ho st/", "amqp://héllo/", "amqp://h/?heartbeat=abc", "amqp://[::1]:5672/v",
    f"amqp://guest:{SECRET}@127.0.0.1:99999/", f"amqp://guest:{SECRET}/vhost", f"guest:{SECRET}@localhost",
    f"http://guest:{SECRET}@localhost/", f"amqp://guest:{SECRET}@[::1/", f"amqp://guest:{SECRET}@\x00/",
    f"amqp://guest:{SECRET}@{'a' * 300}/", f"amqp://guest:{SECRET}@h:{SECRET}/",
    "/dev/null", "/nonexistent/ca.pem", "relative/path", "/" + "p" * 5000,
]

hostile = st.one_of(
    st.sampled_from(KNOWN_BAD),
    st.text(max_size=60),
    st.text(st.characters(min_codepoint=0, max_codepoint=0x7F), max_size=30),
    st.text(st.characters(min_codepoint=0xDC80, max_codepoint=0xDCFF), min_size=1, max_size=5),
    st.from_regex(r"\A\s*[+-]?[0-9_.eE+-]{0,12}\s*\Z"),
    st.integers().map(str),
    st.floats().map(str),
    st.builds("{}://{}:{}@{}{}/{}".format, st.sampled_from(["amqp", "amqps", "http", "AMQP", ""]),
              st.text(max_size=8), st.just(SECRET), st.text(max_size=20),
              st.sampled_from(["", ":5672", ":0", ":99999", ":abc", ":", "::"]), st.text(max_size=8)),
)


def _assert_one_line_naming(exc: ConfigurationError, variable: str, raw: str = "") -> None:
    """One short line naming `variable`; no password of a URL, even one in the wrong variable."""
    message = str(exc)
    assert variable in message, message
    assert len(message.splitlines()) == 1 and "\n" not in message and "\r" not in message, repr(message)
    assert len(message) < 300, message
    if variable == "RABBITMQ_URL" or _password_of(raw) == SECRET:
        assert SECRET not in message, message


def _password_of(url: str) -> str | None:
    try:
        return urlsplit(url).password if url.count(SECRET) == 1 else None
    except ValueError:
        return None


def _assert_usable(settings: Settings) -> None:
    """What the services do with the values at start, done here without a broker."""
    settings.validate()
    assert isinstance(logging.getLevelName(settings.log_level.upper()), int)
    table = topology.build(settings)  # every tier's queue, with the bounds as arguments
    delays = [topology.retry_delay(settings, tier) for tier in range(1, settings.max_attempts)]
    assert all(0 < d <= RETRY_DELAY_MAX and math.isfinite(d) for d in delays)
    for queue in table.queues:
        assert all(not isinstance(v, int) or -(2**63) <= v < 2**63 for v in queue.arguments.values())
    try:
        broker_url = settings.broker_url  # reads RABBITMQ_PASSWORD_FILE, as connecting does first
    except ConfigurationError as exc:
        _assert_one_line_naming(exc, "RABBITMQ_PASSWORD_FILE")
        broker_url = settings.rabbitmq_url
    url = yarl.URL(broker_url)
    assert url.scheme in ("amqp", "amqps") and url.host and (url.port or 1) <= 65535
    settings.instance_id.encode("utf-8")  # it goes into protobuf strings and a connection name
    redact_url(settings.rabbitmq_url)


def _try(field: Field[object], raw: str) -> None:
    variable = _env_name(field.name)
    try:
        built = Settings.from_env({variable: raw})
    except ConfigurationError as exc:
        _assert_one_line_naming(exc, variable, raw)
        return
    _assert_usable(built)


@pytest.mark.parametrize("field", fields(Settings), ids=lambda f: f.name)
def test_every_known_bad_value_is_usable_or_one_line_naming_the_variable(field: Field[object]) -> None:
    for raw in KNOWN_BAD:
        _try(field, raw)


@pytest.mark.parametrize("field", fields(Settings), ids=lambda f: f.name)
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(raw=hostile)
def test_any_value_is_usable_or_one_line_naming_the_variable(field: Field[object], raw: str) -> None:
    _try(field, raw)


@given(st.text())
def test_redact_url_takes_any_text(url: str) -> None:
    assert isinstance(redact_url(url), str)


@given(scheme=st.sampled_from(["amqp://", "amqps://", "http://", ""]),
       user=st.text(st.characters(exclude_characters=":@/?#"), max_size=10),
       rest=st.text(st.characters(exclude_characters="@"), max_size=30))
def test_redact_url_hides_the_password(scheme: str, user: str, rest: str) -> None:
    assert SECRET not in redact_url(f"{scheme}{user}:{SECRET}@{rest}")


# The two cases of issue 13, then each bound from both sides.
@pytest.mark.parametrize(("variable", "raw", "words"), [
    ("CALC_LOG_LEVEL", "LOUD", "must be DEBUG, INFO, WARNING or ERROR, got 'LOUD'"),
    ("CALC_METRICS_PORT", "99999", "from 0 to 65535, got 99999"),
    ("CALC_METRICS_PORT", "-1", "from 0 to 65535"),
    ("CALC_INSPECTOR_PORT", "65536", "from 0 to 65535"),
    ("CALC_PREFETCH", "0", "from 1 to 65535"),
    ("CALC_PREFETCH", "65536", "from 1 to 65535"),
    ("CALC_MAX_ATTEMPTS", "0", f"from 1 to {MAX_ATTEMPTS_MAX}"),
    ("CALC_MAX_ATTEMPTS", str(MAX_ATTEMPTS_MAX + 1), f"from 1 to {MAX_ATTEMPTS_MAX}"),
    ("CALC_WORK_QUEUE_MAX_LENGTH", str(QUEUE_BOUND_MAX + 1), f"from 1 to {QUEUE_BOUND_MAX}"),
    ("CALC_DELIVERY_LIMIT", "0", "from 1 to"),
    ("CALC_AUDIT_MAX_LENGTH", "0", "from 1 to"),
    ("CALC_MAX_MESSAGE_BYTES", str(MESSAGE_BYTES_MAX + 1), f"from 1 to {MESSAGE_BYTES_MAX}"),
    ("CALC_PUBLISH_IN_FLIGHT", str(IN_FLIGHT_MAX + 1), f"from 1 to {IN_FLIGHT_MAX}"),
    ("CALC_INTERVAL", "0", "more than 0"),
    ("CALC_INTERVAL", "1e309", "more than 0, got inf"),
    ("CALC_INTERVAL", "nan", "has an invalid value 'nan': it must be a decimal number"),
    ("CALC_PUBLISH_TIMEOUT", "-0", "more than 0"),
    ("CALC_CONNECT_TIMEOUT", "0", "more than 0"),
    ("CALC_INSPECTOR_INTERVAL", "0", "more than 0"),
    ("CALC_FAILURE_SHARE", "1.01", "from 0 to 1"),
    ("CALC_FAULT_RATE", "-0.01", "from 0 to 1"),
    ("CALC_RETRY_BASE_DELAY", "0", "more than 0"),
    ("CALC_RETRY_MAX_DELAY", str(RETRY_DELAY_MAX + 1), f"at most {RETRY_DELAY_MAX:g}"),
    ("CALC_RETRY_MAX_DELAY", "0.5", "CALC_RETRY_MAX_DELAY (0.5) must be at least CALC_RETRY_BASE_DELAY (1)"),
    ("CALC_RETRY_BASE_DELAY", "61", "at least CALC_RETRY_BASE_DELAY (61)"),
    ("CALC_PREFETCH", "0x10", "has an invalid value '0x10': it must be a whole number"),
    ("CALC_PREFETCH", "1_000", "whole number"),
    ("CALC_PREFETCH", "many", "CALC_PREFETCH has an invalid value 'many'"),  # as tests/integration expect
    ("CALC_PREFETCH", "5.0", "whole number"),
    ("CALC_INSTANCE_ID", "x" * (NAME_MAX + 1), f"at most {NAME_MAX} characters"),
    ("CALC_INSTANCE_ID", "a\x00b", "control or unprintable"),
    ("CALC_INSTANCE_ID", "\udcff", "control or unprintable"),
    ("CALC_TEST_CRASH_SOURCE", "a\nb", "control or unprintable"),
    ("RABBITMQ_CA_FILE", "ca\x00.pem", "control or unprintable"),
    ("RABBITMQ_PASSWORD_FILE", "/run/secrets/\x1b", "control or unprintable"),
    ("CALC_QUEUES", "basic,basic", "each once"),
    ("CALC_QUEUES", "basic,medium", "basic, heavy or both"),
    ("CALC_LOG_FORMAT", "xml", "text or json"),
    ("CALC_DECLARE_TOPOLOGY", "maybe", "true or false"),
    ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:99999/", "port that is not a number from 1 to 65535"),
    ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:abc/", "port that is not a number"),
    ("RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:0/", "port that is not a number"),
    ("RABBITMQ_URL", "amqp://[::1", "malformed IPv6"),
    ("RABBITMQ_URL", "amqp://" + "a" * 64 + "/", "not a valid name"),
    ("RABBITMQ_URL", "amqp:///calc", "names no host"),
    ("RABBITMQ_URL", "AMQPS://broker/", "must start with amqp:// or amqps://"),
    ("RABBITMQ_URL", "http://x", "got http://"),
    ("RABBITMQ_URL", "amqp://h/" + "v" * 256, "vhost longer than 255 bytes"),
    ("RABBITMQ_URL", "amqp://h/?cadata=x", "takes only the query parameter heartbeat, not cadata"),
    ("RABBITMQ_URL", "amqps://h/?cafile=/ca.pem", "RABBITMQ_CA_FILE"),
    ("RABBITMQ_URL", "amqp://h/?heartbeat=abc", "heartbeat must be a whole number"),
    ("RABBITMQ_URL", "amqp://h/?heartbeat=65535", "from 0 to 65534"),
])
def test_each_bound_names_its_variable(variable: str, raw: str, words: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        Settings.from_env({variable: raw})
    _assert_one_line_naming(caught.value, variable, raw)
    assert words in str(caught.value)


@pytest.mark.parametrize(("variable", "raw", "value"), [
    ("CALC_LOG_LEVEL", "debug", "debug"),
    ("CALC_METRICS_PORT", "65535", 65535),
    ("CALC_METRICS_PORT", "0", 0),
    ("CALC_INSPECTOR_PORT", "0", 0),  # any free port (the integration tests ask for one)
    ("CALC_PREFETCH", " 65535 ", 65535),
    ("CALC_MAX_ATTEMPTS", str(MAX_ATTEMPTS_MAX), MAX_ATTEMPTS_MAX),
    ("CALC_FAULT_RATE", "-0", 0.0),
    ("CALC_FAILURE_SHARE", "1", 1.0),
    ("CALC_RETRY_MAX_DELAY", f"{RETRY_DELAY_MAX:.0f}", RETRY_DELAY_MAX),
    ("CALC_INTERVAL", "1e-3", 0.001),
    ("CALC_INSTANCE_ID", "x" * NAME_MAX, "x" * NAME_MAX),
    ("CALC_INSTANCE_ID", "名前-1", "名前-1"),
    ("CALC_INSTANCE_ID", "   ", None),  # blank is unset: the default
    ("RABBITMQ_URL", "amqps://u:p@[::1]:5671/calc", "amqps://u:p@[::1]:5671/calc"),
    ("RABBITMQ_URL", "amqp://u:p@h/calc?heartbeat=0", "amqp://u:p@h/calc?heartbeat=0"),
])
def test_values_at_the_bounds_are_taken(variable: str, raw: str, value: object) -> None:
    field = {_env_name(f.name): f.name for f in fields(Settings)}[variable]
    expected = getattr(Settings(), field) if value is None else value
    assert getattr(Settings.from_env({variable: raw}), field) == expected


def _password_file(content: bytes) -> str:
    with tempfile.NamedTemporaryFile(delete=False, suffix=".pw") as file:
        file.write(content)
    return file.name


@pytest.mark.parametrize(("content", "words"), [
    (b"", "is empty"),
    (b"  \n", "is empty"),
    (b"\xff\xfe" + SECRET.encode(), "not UTF-8"),
    (f"{SECRET}\nsecond line".encode(), "on one line"),
    (f"{SECRET}\x00".encode(), "on one line"),
    (b"x" * (PASSWORD_FILE_MAX + 1), f"larger than {PASSWORD_FILE_MAX} bytes"),
])
def test_a_bad_password_file_is_one_line_that_never_shows_it(content: bytes, words: str) -> None:
    path = _password_file(content)
    try:
        built = Settings.from_env({"RABBITMQ_PASSWORD_FILE": path})  # read later, before connecting
        with pytest.raises(ConfigurationError) as caught:
            built.broker_url  # noqa: B018
    finally:
        os.unlink(path)
    _assert_one_line_naming(caught.value, "RABBITMQ_PASSWORD_FILE")
    assert words in str(caught.value)


@pytest.mark.parametrize("path", ["/nonexistent/pw", "/", "/dev/zero"])
def test_an_unreadable_password_file_is_one_line(path: str) -> None:
    built = Settings.from_env({"RABBITMQ_PASSWORD_FILE": path})
    with pytest.raises(ConfigurationError) as caught:
        built.broker_url  # noqa: B018
    _assert_one_line_naming(caught.value, "RABBITMQ_PASSWORD_FILE")


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=64))
def test_any_password_file_gives_a_url_or_one_line(content: bytes) -> None:
    path = _password_file(content)
    try:
        built = Settings.from_env({"RABBITMQ_URL": "amqp://app@[::1]:5672/calc",
                                   "RABBITMQ_PASSWORD_FILE": path})
        try:
            url = built.broker_url
        except ConfigurationError as exc:
            _assert_one_line_naming(exc, "RABBITMQ_PASSWORD_FILE")
            return
    finally:
        os.unlink(path)
    parsed = yarl.URL(url)
    assert (parsed.user, parsed.host, parsed.port, parsed.path) == ("app", "::1", 5672, "/calc")
    assert parsed.password == content.decode().strip()
