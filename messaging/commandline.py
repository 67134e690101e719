"""What every command line shares: `--version`, and the environment its `--help` lists.

The variables are rendered from `Settings`' field docstrings (the same text as the
configuration table of docs/operations.md), so a command's help cannot drift from them.
"""

from __future__ import annotations

import argparse
import ast
import functools
import inspect
import itertools
import textwrap
from collections.abc import Iterable
from dataclasses import fields
from importlib import metadata

from messaging import settings as settings_module
from messaging.settings import Settings, _env_name

DISTRIBUTION = "calc-events"

BROKER = ("rabbitmq_url", "rabbitmq_password_file", "rabbitmq_ca_file", "connect_timeout",
          "instance_id", "log_level", "log_format", "otel_exporter_otlp_endpoint",
          "otel_exporter_otlp_traces_endpoint", "otel_sdk_disabled", "otel_traces_exporter")
"""What every command that talks to the broker reads (each of them traces when told to)."""
TOPOLOGY = ("declare_topology", "max_attempts", "work_queue_max_length", "delivery_limit",
            "audit_max_length", "retry_base_delay", "retry_max_delay")
"""What declaring or checking the topology reads (the queues' arguments)."""


def version() -> str:
    """The installed package's version (pyproject.toml's), or `unknown` when run from a bare tree."""
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:
        return "unknown"


@functools.cache
def field_docs() -> dict[str, str]:
    """Each Settings field's docstring (`VARIABLE: what it means`), read from the source."""
    tree = ast.parse(inspect.getsource(settings_module))
    body = next(node for node in tree.body if isinstance(node, ast.ClassDef)
                and node.name == Settings.__name__).body
    docs: dict[str, str] = {}
    for node, after in itertools.pairwise(body):
        if (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)
                and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                and isinstance(after.value.value, str)):
            docs[node.target.id] = " ".join(after.value.value.split())
    return docs


def environment(names: Iterable[str], width: int = 100) -> str:
    """The `environment variables:` section of a --help: each variable and its meaning."""
    known = {f.name for f in fields(Settings)}
    docs = field_docs()
    lines = ["environment variables (docs/operations.md#configuration):"]
    for name in dict.fromkeys(names):
        if name not in known:
            raise ValueError(f"{name} is not a Settings field")
        variable = _env_name(name)
        meaning = docs.get(name, "").removeprefix(f"{variable}:").strip()
        lines.append(textwrap.fill(meaning, width, initial_indent=f"  {variable:<27} ",
                                   subsequent_indent=" " * 30))
    return "\n".join(lines)


def conventions(parser: argparse.ArgumentParser, names: Iterable[str]) -> argparse.ArgumentParser:
    """Give `parser` `--version` and an epilog listing the variables in `names`; returns it."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = environment(names) if parser.epilog is None else (
        f"{parser.epilog}\n\n{environment(names)}")
    return parser
