"""Generate the broker's definitions template (vhost, users, permissions, topology) from messaging.topology.

The output is committed: `deploy/rabbitmq/definitions.template.json` for docker compose and
`k8s/base/rabbitmq-definitions.yaml` (the same template and its renderer as a ConfigMap) for
Kubernetes. tests/unit/test_deploy_definitions.py fails when either disagrees with this script.

    python deploy/rabbitmq/generate_definitions.py          # rewrite both files
    python deploy/rabbitmq/generate_definitions.py --check  # exit 1 if they are stale

Passwords are `${NAME}` placeholders; render-definitions.sh fills them in when the broker starts,
so the plain text lives only in `.env` (compose) or a Secret (Kubernetes), never in git.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

import yaml

from messaging import topology
from messaging.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "deploy" / "rabbitmq" / "definitions.template.json"
RENDERER = ROOT / "deploy" / "rabbitmq" / "render-definitions.sh"
K8S_CONFIGMAP = ROOT / "k8s" / "base" / "rabbitmq-definitions.yaml"
K8S_CONFIGMAP_NAME = "calc-rabbitmq-definitions"

VHOST = "calc"
NOTHING = "^$"
EVERYTHING = ".*"
REPLY_QUEUES = r"^amq\.gen-.*$"
"""The names the broker gives a queue declared without one (send --wait's reply queue)."""


def _only(*names: str) -> str:
    """A permission regex matching exactly these resource names."""
    escaped = sorted(re.escape(name) for name in names)
    return f"^{escaped[0]}$" if len(escaped) == 1 else "^(" + "|".join(escaped) + ")$"


def _and_replies(name: str) -> str:
    """`name`, or a reply queue of send --wait."""
    return f"^({re.escape(name)}|{REPLY_QUEUES[1:-1]})$"


def _retry_exchanges() -> str:
    # Any tier: CALC_MAX_ATTEMPTS may grow without a new permission.
    return re.escape(topology.RETRY_PREFIX) + "[0-9]+"


def users() -> list[dict[str, Any]]:
    """Who may do what in the vhost, with why.

    RabbitMQ checks `configure` for declaring (not passively) and deleting, `write` for
    publishing to an exchange and for the queue side of queue.bind, `read` for basic.get,
    basic.consume and queue.purge. A passive declare (CALC_DECLARE_TOPOLOGY=false) needs none of
    them, nor does dead-lettering or a retry queue's expiry back to calc.requests (the broker
    moves those messages itself). No service may configure: the topology comes from here.
    """
    work_queues = [topology.work_queue(kind) for kind in ("basic", "heavy")]
    consumer_write = "^(" + "|".join(
        [re.escape(topology.RESULTS_EXCHANGE), _retry_exchanges(),
         re.escape(topology.DEAD_LETTER_EXCHANGE)]) + ")$"
    return [
        # The management UI and operators: everything in the vhost.
        {"name": "calc-admin", "password_env": "CALC_ADMIN_PASSWORD", "tags": ["administrator"],
         "configure": EVERYTHING, "write": EVERYTHING, "read": EVERYTHING},
        # Publishes requests. `send --wait` declares a server-named exclusive queue (amq.gen-*,
        # configure), binds it to calc.results (write on the queue, read on the exchange) and
        # consumes it (read): it cannot publish results, nor read any queue but its own.
        {"name": "calc-producer", "password_env": "CALC_PRODUCER_PASSWORD", "tags": [],
         "configure": REPLY_QUEUES, "write": _and_replies(topology.REQUESTS_EXCHANGE),
         "read": _and_replies(topology.RESULTS_EXCHANGE)},
        # Consumes its work queues; publishes outcomes, delayed retries and (forged x-death) dead letters.
        {"name": "calc-consumer", "password_env": "CALC_CONSUMER_PASSWORD", "tags": [],
         "configure": NOTHING, "write": consumer_write, "read": _only(*work_queues)},
        # Reads, acks and purges the DLQ; replays to calc.requests.
        {"name": "calc-inspector", "password_env": "CALC_INSPECTOR_PASSWORD", "tags": [],
         "configure": NOTHING, "write": _only(topology.REQUESTS_EXCHANGE), "read": _only(topology.DLQ)},
        # Reads the journal's inbox; sends what it cannot record to its own DLQ (docs/journal.md).
        {"name": "calc-journal", "password_env": "CALC_JOURNAL_PASSWORD", "tags": [],
         "configure": NOTHING, "write": _only(topology.JOURNAL_DLX), "read": _only(topology.JOURNAL_QUEUE)},
        # Queue depth for autoscaling (KEDA's amqp mode is a passive declare): no permission at all.
        {"name": "calc-monitor", "password_env": "CALC_MONITOR_PASSWORD", "tags": [],
         "configure": NOTHING, "write": NOTHING, "read": NOTHING},
    ]


def template(settings: Settings | None = None) -> dict[str, Any]:
    """The whole definitions document, passwords as `${NAME}` placeholders."""
    # Defaults, never the environment: the committed file must not depend on who generated it.
    settings = settings or Settings()
    topo = topology.definitions(settings, VHOST)
    return {
        "vhosts": [{"name": VHOST, "description": "calc-events", "tags": [],
                    "default_queue_type": "quorum"}],
        "users": [{"name": u["name"], "password": "${" + u["password_env"] + "}", "tags": u["tags"],
                   "limits": {}} for u in users()],
        "permissions": [{"user": u["name"], "vhost": VHOST, "configure": u["configure"],
                         "write": u["write"], "read": u["read"]} for u in users()],
        "topic_permissions": [],
        "parameters": [],
        "global_parameters": [],
        "policies": [],
        **topo,
    }


def template_text() -> str:
    return json.dumps(template(), indent=2) + "\n"


class _Literal(str):
    """A multi-line string dumped as a YAML block scalar."""


def _literal(dumper: yaml.SafeDumper, value: _Literal) -> yaml.Node:
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style="|")


def configmap_text(template_json: str, renderer: str) -> str:
    yaml.SafeDumper.add_representer(_Literal, _literal)
    document = {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": K8S_CONFIGMAP_NAME,
                     "labels": {"app.kubernetes.io/part-of": "calc-events",
                                "app.kubernetes.io/component": "broker"}},
        "data": {"definitions.template.json": _Literal(template_json),
                 "render-definitions.sh": _Literal(renderer)},
    }
    header = ("# Generated by deploy/rabbitmq/generate_definitions.py from messaging/topology.py and\n"
              "# deploy/rabbitmq/render-definitions.sh; do not edit.\n")
    return header + yaml.safe_dump(document, sort_keys=False, width=120)


def outputs() -> dict[Path, str]:
    """Every generated file and the content it must have."""
    template_json = template_text()
    return {TEMPLATE: template_json,
            K8S_CONFIGMAP: configmap_text(template_json, RENDERER.read_text())}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a generated file is stale")
    args = parser.parse_args(argv)
    stale = [path for path, text in outputs().items()
             if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"stale: {path.relative_to(ROOT)} (run python {Path(__file__).relative_to(ROOT)})",
                  file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs().items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
