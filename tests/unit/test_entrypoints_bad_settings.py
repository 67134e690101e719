"""A bad setting stops each service at once: exit 2, one line naming the variable, no connect.

The broker URL points at a closed port with the default 120 s connect timeout, so a service that
got as far as connecting would retry for minutes instead of exiting in a second.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

SECRET = "Hunter2Secret"
CLOSED = "amqp://guest:guest@127.0.0.1:1/"  # nothing listens on port 1

CONSUMER = ("consumer",)
PRODUCER = ("producer", "send", "add", "1", "2")
INSPECTOR = ("dlq_inspector", "report")
SERVICES = (CONSUMER, PRODUCER, INSPECTOR)

# (service argv, variable, value): the two cases of issue 13 in every service, then other kinds
# of bad value spread over the services (tests/unit/test_settings_hostile.py has them all).
CASES = [
    *((service, "CALC_LOG_LEVEL", "LOUD") for service in SERVICES),
    *((service, "CALC_METRICS_PORT", "99999") for service in SERVICES),
    (CONSUMER, "RABBITMQ_URL", f"amqp://guest:{SECRET}@127.0.0.1:99999/"),
    (PRODUCER, "RABBITMQ_URL", f"amqp://guest:{SECRET}@127.0.0.1:abc/"),
    (CONSUMER, "CALC_INSTANCE_ID", "\x1b[31m"),
    (PRODUCER, "CALC_INTERVAL", "nan"),
    (INSPECTOR, "CALC_INSPECTOR_INTERVAL", "1e309"),
    (INSPECTOR, "RABBITMQ_PASSWORD_FILE", "/nonexistent/password"),  # read before connecting
]


@dataclass(frozen=True)
class Run:
    code: int | None
    stderr: str
    seconds: float


def _env(variable: str, value: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("CALC_", "RABBITMQ_"))}
    return {**clean, "RABBITMQ_URL": CLOSED, variable: value}


@pytest.fixture(scope="module")
def runs() -> dict[int, Run]:
    """Every case started at once (each is a Python start-up, half a second of CPU)."""
    started: dict[int, tuple[float, subprocess.Popen[str]]] = {}
    for index, (service, variable, value) in enumerate(CASES):
        process = subprocess.Popen([sys.executable, "-m", *service], env=_env(variable, value),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.PIPE, text=True, errors="backslashreplace")
        started[index] = (time.monotonic(), process)
    results: dict[int, Run] = {}
    deadline = time.monotonic() + 30
    while len(results) < len(started) and time.monotonic() < deadline:
        for index, (began, process) in started.items():
            if index not in results and process.poll() is not None:
                results[index] = Run(process.returncode, process.communicate()[1], time.monotonic() - began)
        time.sleep(0.02)
    for index, (began, process) in started.items():  # still trying to connect: stop it
        if index not in results:
            process.kill()
            results[index] = Run(None, process.communicate()[1], time.monotonic() - began)
    return results


@pytest.mark.parametrize("index", range(len(CASES)),
                         ids=[f"{s[0]}-{v}={x[:12]!r}" for s, v, x in CASES])
def test_a_bad_setting_exits_2_at_once_with_one_line_naming_it(runs: dict[int, Run], index: int) -> None:
    service, variable, _ = CASES[index]
    run = runs[index]
    tried = f"{service[0]} ran {run.seconds:.0f} s: it tried to connect"
    assert run.code is not None and run.seconds < 15, tried
    assert "Traceback" not in run.stderr, run.stderr
    lines = run.stderr.splitlines()
    assert len(lines) == 1, run.stderr
    assert lines[0].startswith("error: ") and variable in lines[0], lines[0]
    assert SECRET not in run.stderr
    assert run.code == 2, run.stderr
