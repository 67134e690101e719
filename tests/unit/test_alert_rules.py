"""The alerts of deploy/prometheus/rules.yml pass promtool's own tests, each of which proves something,
read metrics the services define, and ship the same to Kubernetes and docker compose."""

from __future__ import annotations

import importlib.util
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
RULES = PROMETHEUS / "rules.yml"
RULES_TEST = PROMETHEUS / "rules_test.yml"
CONFIG = PROMETHEUS / "prometheus.yml"
PROMETHEUS_RULE = ROOT / "k8s" / "base" / "prometheus-rules.yaml"
GENERATOR = PROMETHEUS / "generate_prometheusrule.py"
SOURCES = ("producer", "consumer", "dlq_inspector", "messaging", "journal")
NEVER = "vector(0) > 1"

Doc = dict[str, Any]


def _promtool() -> str:
    """make install puts promtool in the venv (scripts/install-tools.sh); a missing one fails."""
    found = shutil.which("promtool", path=str(ROOT / ".venv" / "bin")) or shutil.which("promtool")
    assert found, "promtool is missing: run make install (scripts/install-tools.sh)"
    return found


def _run(*args: str | Path, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([_promtool(), *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)


def _load(path: Path) -> Doc:
    data: Doc = yaml.safe_load(path.read_text())
    return data


def _rules() -> Iterator[Doc]:
    for group in _load(RULES)["groups"]:
        yield from group["rules"]


def _alerts() -> dict[str, Doc]:
    return {rule["alert"]: rule for rule in _rules() if "alert" in rule}


def _cases() -> Iterator[Doc]:
    for test in _load(RULES_TEST)["tests"]:
        yield from test.get("alert_rule_test", [])


def test_promtool_accepts_the_rules_and_the_compose_config() -> None:
    for args in (("check", "rules", RULES), ("check", "config", CONFIG)):
        result = _run(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_unit_tests_pass() -> None:
    result = _run("test", "rules", RULES_TEST)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_firing_case_and_a_quiet_case() -> None:
    firing = {case["alertname"] for case in _cases() if case.get("exp_alerts")}
    quiet = {case["alertname"] for case in _cases() if not case.get("exp_alerts")}
    alerts = set(_alerts())
    assert alerts - firing == set(), "alerts never shown firing"
    assert alerts - quiet == set(), "alerts never shown quiet"
    assert (firing | quiet) - alerts == set(), "cases of alerts that do not exist"


def test_each_firing_case_fails_when_its_alert_can_never_fire(tmp_path: Path) -> None:
    """Every alert replaced by one that never fires: promtool must report every alert's firing case."""
    rules = _load(RULES)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" in rule:
                rule["expr"] = NEVER
    (tmp_path / "rules.yml").write_text(yaml.safe_dump(rules))
    shutil.copy(RULES_TEST, tmp_path / "rules_test.yml")
    result = _run("test", "rules", "rules_test.yml", cwd=tmp_path)
    assert result.returncode != 0
    failed = set(re.findall(r"alertname: (\w+), time:", result.stdout + result.stderr))
    assert failed == set(_alerts())


def test_alerts_say_how_bad_and_where_to_read_on() -> None:
    for name, rule in _alerts().items():
        assert re.fullmatch(r"Calc[A-Z][A-Za-z]+", name), name
        assert rule["labels"]["severity"] in {"warning", "critical"}, name
        assert {"summary", "description", "runbook"} <= set(rule["annotations"]), name
        assert rule["annotations"]["runbook"] == "docs/operations.md#alerts", name


def _metric_names(expr: str) -> set[str]:
    """The calc_* and rabbitmq_detailed_* metrics an expression reads (not recorded calc:* series)."""
    return set(re.findall(r"\b(calc_[a-z0-9_]+|rabbitmq_detailed_[a-z0-9_]+)\b", expr))


def _family(name: str) -> str:
    return re.sub(r"_(bucket|count|sum|total)$", "", name)


def test_rules_read_metrics_the_services_define() -> None:
    """A renamed metric would silence its alert: every calc_* name the rules read is in the code."""
    code = "\n".join(p.read_text() for d in SOURCES for p in (ROOT / d).rglob("*.py"))
    used = {_family(n) for rule in _rules() for n in _metric_names(rule["expr"])
            if n.startswith("calc_")}
    defined = {n for n in used if re.search(rf"['\"]{re.escape(n)}(_total)?['\"]", code)}
    assert used - defined == set(), "metrics the rules read but no service defines"


def test_the_prometheusrule_is_rules_yml() -> None:
    result = subprocess.run([sys.executable, str(GENERATOR), "--check"], capture_output=True, text=True,
                            check=False, timeout=60)
    assert result.returncode == 0, result.stderr
    manifest = _load(PROMETHEUS_RULE)
    assert manifest["kind"] == "PrometheusRule"
    assert manifest["spec"] == _load(RULES)


def test_the_generator_notices_a_stale_prometheusrule(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    spec = importlib.util.spec_from_file_location("generate_prometheusrule", GENERATOR)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    stale = tmp_path / "prometheus-rules.yaml"
    stale.write_text(module.render(RULES.read_text().replace("> 86400", "> 3600")))
    monkeypatch.setattr(module, "OUTPUT", stale)
    assert module.main(["--check"]) == 1
    assert module.main([]) == 0
    assert module.main(["--check"]) == 0


def _jobs() -> dict[str, Doc]:
    return {job["job_name"]: job for job in _load(CONFIG)["scrape_configs"]}


def _compose_app_services() -> dict[str, Doc]:
    services: dict[str, Doc] = _load(ROOT / "docker-compose.yml")["services"]
    return {name: s for name, s in services.items() if s.get("image", "").startswith("calc-events")}


def test_compose_prometheus_scrapes_every_service_on_its_metrics_port() -> None:
    jobs = _jobs()
    for name, service in _compose_app_services().items():
        env = service.get("environment", {})
        port = int(env.get("CALC_METRICS_PORT") or env.get("CALC_INSPECTOR_PORT") or env["CALC_JOURNAL_PORT"])
        assert name in jobs, f"no scrape job for compose service {name}"
        (sd,) = jobs[name]["dns_sd_configs"]
        assert sd["names"] == [name] and sd["port"] == port, name


def test_compose_prometheus_reads_rabbitmq_alarms_and_the_calc_queues() -> None:
    jobs = _jobs()
    assert jobs["rabbitmq"]["static_configs"] == [{"targets": ["rabbitmq:15692"]}]
    assert jobs["rabbitmq"].get("metrics_path", "/metrics") == "/metrics"
    queues = jobs["rabbitmq-queues"]
    assert queues["static_configs"] == [{"targets": ["rabbitmq:15692"]}]
    assert queues["metrics_path"] == "/metrics/detailed"
    assert queues["params"]["vhost"] == ["calc"]
    # The families that hold the per-queue series the work-queue alerts read.
    assert set(queues["params"]["family"]) == {"queue_coarse_metrics", "queue_consumer_count",
                                               "queue_delivery_metrics"}
    detailed = {n for rule in _rules() for n in _metric_names(rule["expr"])
                if n.startswith("rabbitmq_detailed_")}
    assert detailed == {"rabbitmq_detailed_queue_messages_ready", "rabbitmq_detailed_queue_consumers",
                        "rabbitmq_detailed_queue_messages_acked_total"}
    assert _load(CONFIG)["rule_files"] == ["rules.yml"]


def test_an_absent_target_is_noticed_for_every_service_and_the_broker() -> None:
    watched = set(re.findall(r'absent\(up\{job="([a-z-]+)"\}\)', _alerts()["CalcServiceAbsent"]["expr"]))
    assert watched == set(_compose_app_services()) | {"rabbitmq"}
    assert watched <= set(_jobs())


def test_the_operations_guide_lists_every_alert_once() -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text()
    section = doc.split("\n## Alerts\n", 1)[1].split("\n## ", 1)[0]
    listed = re.findall(r"^\| `(Calc\w+)` \|", section, flags=re.M)
    assert sorted(listed) == sorted(_alerts()) and len(listed) == len(set(listed))
