"""The broker's committed definitions, its users' permissions and the compose wiring agree with the code."""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import fields
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from consumer.service import DRAIN_TIMEOUT_S, SETTLE_GRACE_S
from messaging import topology
from messaging.settings import Settings, _env_name

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "rabbitmq"
RENDERER = DEPLOY / "render-definitions.sh"
PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
APP_SERVICES = ("producer", "consumer-basic", "consumer-heavy", "dlq-inspector")


def _generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("generate_definitions", DEPLOY / "generate_definitions.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _template() -> dict[str, Any]:
    data: dict[str, Any] = json.loads((DEPLOY / "definitions.template.json").read_text())
    return data


def _permissions() -> dict[str, dict[str, str]]:
    return {p["user"]: p for p in _template()["permissions"]}


def _compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def _dotenv() -> dict[str, str]:
    pairs = (line.split("=", 1) for line in (ROOT / ".env").read_text().splitlines()
             if line.strip() and not line.lstrip().startswith("#"))
    return {key.strip(): value.strip() for key, value in pairs}


def test_committed_files_are_what_the_generator_makes() -> None:
    generator = _generator()
    for path, text in generator.outputs().items():
        assert path.read_text() == text, (
            f"{path.relative_to(ROOT)} is stale: run python deploy/rabbitmq/generate_definitions.py")


def test_template_topology_is_what_messaging_topology_prints() -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("CALC_", "RABBITMQ_"))}
    printed = subprocess.run(
        [sys.executable, "-m", "messaging.topology", "definitions", "--vhost", "calc"],
        cwd=ROOT, env=env, check=True, capture_output=True, text=True).stdout
    expected = json.loads(printed)
    template = _template()
    for key in ("exchanges", "queues", "bindings"):
        assert template[key] == expected[key], key
    assert [v["name"] for v in template["vhosts"]] == ["calc"]


def test_no_guest_and_every_user_has_a_password_placeholder_and_permissions() -> None:
    template = _template()
    users = {u["name"]: u for u in template["users"]}
    assert "guest" not in users
    assert set(users) == set(_permissions()) == {
        "calc-admin", "calc-producer", "calc-consumer", "calc-inspector", "calc-journal", "calc-monitor"}
    for name, user in users.items():
        assert PLACEHOLDER.fullmatch(user["password"]), name
        assert "password_hash" not in user
    assert users["calc-admin"]["tags"] == ["administrator"]
    assert all(not u["tags"] for n, u in users.items() if n != "calc-admin")


def _may(regex: str, name: str) -> bool:
    # RabbitMQ matches permission regexes with PCRE `re:run`; these use nothing Python's re reads
    # differently.
    return re.search(regex, name) is not None


def test_only_the_admin_may_configure() -> None:
    everything = [ex.name for ex in topology.build(Settings()).exchanges] + [
        q.name for q in topology.build(Settings()).queues] + ["calc.e2e.new-queue"]
    for user, perms in _permissions().items():
        if user == "calc-admin":
            continue
        assert not any(_may(perms["configure"], name) for name in everything), user


def test_producer_may_only_publish_requests_and_read_its_own_reply_queue() -> None:
    perms = _permissions()["calc-producer"]
    built = topology.build(Settings(max_attempts=8))
    names = [ex.name for ex in built.exchanges] + [q.name for q in built.queues] + ["amq.default"]
    assert [n for n in names if _may(perms["write"], n)] == [topology.REQUESTS_EXCHANGE]
    # send --wait: bind a server-named queue to calc.results (read on the exchange), consume it
    assert [n for n in names if _may(perms["read"], n)] == [topology.RESULTS_EXCHANGE]
    assert not any(_may(perms["configure"], n) for n in names)
    reply = "amq.gen-JzTY20BRgKO-HjmUJj0wLg"
    assert all(_may(perms[kind], reply) for kind in ("configure", "write", "read"))
    for name in ("calc.requests.extra", "calc.results.audit", "amq.gen", "x.amq.gen-1"):
        assert not _may(perms["write"], name) and not _may(perms["read"], name), name


def test_consumer_reads_work_queues_and_publishes_results_every_retry_tier_and_dead_letters() -> None:
    perms = _permissions()["calc-consumer"]
    built = topology.build(Settings(max_attempts=8))
    queues = [q.name for q in built.queues]
    exchanges = [ex.name for ex in built.exchanges] + ["amq.default"]
    assert sorted(q for q in queues if _may(perms["read"], q)) == [
        topology.work_queue("basic"), topology.work_queue("heavy")]
    retry = [topology.retry_exchange(tier) for tier in range(1, 8)]
    # calc.dlx: a request with a forged x-death is dead-lettered by the consumer, not the broker
    assert sorted(ex for ex in exchanges if _may(perms["write"], ex)) == sorted(
        [topology.RESULTS_EXCHANGE, topology.DEAD_LETTER_EXCHANGE, *retry])
    assert not _may(perms["write"], "calc.retry.x")


def test_inspector_reads_the_dlq_and_replays_to_requests() -> None:
    perms = _permissions()["calc-inspector"]
    built = topology.build(Settings())
    names = [ex.name for ex in built.exchanges] + [q.name for q in built.queues] + ["amq.default"]
    assert [n for n in names if _may(perms["read"], n)] == [topology.DLQ]
    assert [n for n in names if _may(perms["write"], n)] == [topology.REQUESTS_EXCHANGE]


def test_monitor_may_do_nothing_but_look() -> None:
    perms = _permissions()["calc-monitor"]
    assert perms["configure"] == perms["write"] == perms["read"] == "^$"


# The official rabbitmq image has mawk; other images gawk or busybox: the renderer is POSIX awk.
AWKS = [name for name in ("mawk", "gawk", "original-awk") if shutil.which(name)] or ["awk"]


def _render(tmp_path: Path, env: dict[str, str], awk: str = "awk") -> subprocess.CompletedProcess[str]:
    out = tmp_path / "definitions.json"
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "awk").symlink_to(shutil.which(awk) or awk)
    return subprocess.run(
        ["sh", str(RENDERER)], capture_output=True, text=True,
        env={"PATH": f"{bin_dir}:{os.environ.get('PATH', '/usr/bin:/bin')}",
             "CALC_DEFINITIONS_TEMPLATE": str(DEPLOY / "definitions.template.json"),
             "CALC_DEFINITIONS_FILE": str(out), **env})


@pytest.mark.parametrize("awk", AWKS)
def test_renderer_fills_passwords_from_variables_and_files(tmp_path: Path, awk: str) -> None:
    hard = 'a "quoted" \\ back&slash $HOME ${NOT_A_VAR} ünï'
    secret = tmp_path / "producer"
    secret.write_text("  from-a-file\n")
    env = {"CALC_ADMIN_PASSWORD": hard, "CALC_PRODUCER_PASSWORD_FILE": str(secret),
           "CALC_CONSUMER_PASSWORD": "c", "CALC_INSPECTOR_PASSWORD": "i", "CALC_MONITOR_PASSWORD": "m",
           "CALC_JOURNAL_PASSWORD": "j"}
    result = _render(tmp_path, env, awk)
    assert result.returncode == 0, result.stderr
    rendered = json.loads((tmp_path / "definitions.json").read_text())
    passwords = {u["name"]: u["password"] for u in rendered["users"]}
    assert passwords == {"calc-admin": hard, "calc-producer": "from-a-file", "calc-consumer": "c",
                         "calc-inspector": "i", "calc-monitor": "m", "calc-journal": "j"}
    assert oct((tmp_path / "definitions.json").stat().st_mode & 0o777) == "0o600"
    template = _template()
    for key in ("permissions", "exchanges", "queues", "bindings", "vhosts"):
        assert rendered[key] == template[key]


def test_renderer_refuses_a_missing_password(tmp_path: Path) -> None:
    result = _render(tmp_path, {"CALC_ADMIN_PASSWORD": "a", "CALC_PRODUCER_PASSWORD": "  ",
                                "CALC_CONSUMER_PASSWORD": "c", "CALC_INSPECTOR_PASSWORD": "i"})
    assert result.returncode != 0
    assert "CALC_PRODUCER_PASSWORD is empty or not set" in result.stderr
    assert not (tmp_path / "definitions.json").exists()


def test_compose_broker_gets_every_password_the_template_needs() -> None:
    compose = _compose()
    placeholders = set(PLACEHOLDER.findall((DEPLOY / "definitions.template.json").read_text()))
    broker_env = compose["services"]["rabbitmq"]["environment"]
    assert {k.removesuffix("_FILE") for k in broker_env if k.endswith("_PASSWORD_FILE")} == placeholders
    # the broker's users' passwords; the database's (postgres_password) is no broker placeholder
    secrets = {name: s for name, s in compose["secrets"].items() if not name.startswith("postgres_")}
    assert {s["environment"] for s in secrets.values()} == placeholders
    assert placeholders <= set(_dotenv()), ".env must give every password a local default"
    for path in broker_env.values():
        assert Path(path).name in secrets
    for volume in compose["services"]["rabbitmq"]["volumes"]:
        source = volume.split(":")[0]
        if source.startswith("./"):
            assert (ROOT / source).is_file(), source


@pytest.mark.parametrize("service", APP_SERVICES)
def test_compose_services_log_in_as_their_own_user(service: str) -> None:
    compose = _compose()
    spec = compose["services"][service]
    env = spec["environment"]
    known = {_env_name(f.name) for f in fields(Settings)}
    assert set(env) <= known, f"{service}: unknown variables {set(env) - known}"
    assert env["CALC_DECLARE_TOPOLOGY"] == "false"
    url = re.fullmatch(r"amqp://([a-z-]+)@rabbitmq:5672/calc", env["RABBITMQ_URL"])
    assert url, env["RABBITMQ_URL"]
    user = url.group(1)
    assert user in _permissions()
    assert user != "calc-admin"
    (secret,) = spec["secrets"]
    assert env["RABBITMQ_PASSWORD_FILE"] == f"/run/secrets/{secret}"
    assert compose["secrets"][secret]["environment"] == f"{user.replace('-', '_').upper()}_PASSWORD"
    dotenv = _dotenv()
    interpolated = {k: re.sub(r"\$\{(\w+):-([^}]*)\}", lambda m: dotenv.get(m[1], m[2]), str(v))
                    for k, v in env.items()}
    Settings.from_env(interpolated)  # valid as the service will read it


@pytest.mark.parametrize("service", ["consumer-basic", "consumer-heavy"])
def test_compose_gives_a_consumer_time_to_drain_and_let_its_acks_land(service: str) -> None:
    period = str(_compose()["services"][service]["stop_grace_period"])
    match = re.fullmatch(r"(\d+)s", period)
    assert match, f"{service}: stop_grace_period {period!r} is not in seconds"
    needed = DRAIN_TIMEOUT_S + SETTLE_GRACE_S + 5  # and 5 s to close and exit
    assert int(match.group(1)) >= needed, f"{service}: SIGKILL after {period}, a stop may take {needed} s"
