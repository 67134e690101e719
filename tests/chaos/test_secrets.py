"""Passwords never reach a log line or an error message, on success and on every failure path."""

from __future__ import annotations

import secrets
import subprocess
import time
from pathlib import Path
from urllib.parse import quote

from tests.chaos.harness import Service
from tests.integration.pipeline import BIN, service_env
from tests.support.private_node import NodeFactory

USER = "calc-secret"

SERVICES = {
    "producer send": ["calc-producer", "send", "add", "1", "2"],
    "producer bulk": ["calc-producer", "bulk", "--count", "5"],
    "consumer": ["calc-consumer"],
    "inspector report": ["dlq-inspector", "report", "--json", "--connect-timeout", "3"],
}


def run(args: list[str], env: dict[str, str], log: Path) -> str:
    """Run a service to its end (the consumer: until it consumes, then SIGTERM); its whole output."""
    if args[0] != "calc-consumer":
        done = subprocess.run([str(BIN / args[0]), *args[1:]], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
        return done.stdout + done.stderr
    service = Service(args, env, log)
    try:
        deadline = time.monotonic() + 60
        while service.running() and "consuming" not in service.text() and time.monotonic() < deadline:
            time.sleep(0.1)
        service.terminate(30)
    finally:
        service.cleanup()
    return service.text()


def test_no_password_in_any_output(private_node: NodeFactory, tmp_path: Path) -> None:
    node = private_node()
    # Characters that need quoting in a URL: a leak of the quoted form counts too.
    password = f"pw-{secrets.token_hex(6)}/%:@+"
    wrong = f"wrong-{secrets.token_hex(6)}"
    node.admin.add_user(USER, password)
    node.admin.set_permissions("/", USER)
    host = f"127.0.0.1:{node.amqp_port}"
    password_file = tmp_path / "password"
    password_file.write_text(password + "\n")
    wrong_file = tmp_path / "wrong-password"
    wrong_file.write_text(wrong + "\n")
    debug = {"CALC_LOG_LEVEL": "DEBUG", "CALC_CONNECT_TIMEOUT": "3"}
    cases = {
        "right password": service_env(f"amqp://{USER}:{quote(password, safe='')}@{host}/", **debug),
        "password file": service_env(f"amqp://{USER}:placeholder@{host}/",
                                     RABBITMQ_PASSWORD_FILE=str(password_file), **debug),
        "wrong password": service_env(f"amqp://{USER}:{wrong}@{host}/", **debug),
        "wrong password file": service_env(f"amqp://{USER}:placeholder@{host}/",
                                           RABBITMQ_PASSWORD_FILE=str(wrong_file), **debug),
        "unreachable broker": service_env(f"amqp://{USER}:{quote(password, safe='')}@127.0.0.1:1/", **debug),
        "missing vhost": service_env(f"amqp://{USER}:{quote(password, safe='')}@{host}/nowhere", **debug),
    }
    secrets_ = {password, quote(password, safe=""), wrong}
    leaks: list[str] = []
    outputs: dict[tuple[str, str], str] = {}
    for case, env in cases.items():
        for service, args in SERVICES.items():
            output = run(args, env, tmp_path / f"{service}-{case}.log".replace(" ", "_"))
            outputs[(service, case)] = output
            leaks += [f"{service} / {case}" for s in secrets_ if s in output]
    assert not leaks, f"a password is in the output of: {leaks}"
    # Each run did what its case says, so the grep looked at real successes and real failures.
    expected = {"right password": None, "password file": None, "wrong password": "refused",
                "wrong password file": "refused", "unreachable broker": "not reachable",
                "missing vhost": "refused"}
    for (service, case), output in outputs.items():
        if expected[case] is None:
            assert "error:" not in output, (service, case, output[-2000:])
        else:
            assert f"{expected[case]}" in output, (service, case, output[-2000:])
