#!/usr/bin/env python3
"""`rabbitmqctl` for a container whose tests use the host's broker (scripts/test-py313.sh).

The integration tests make a vhost (and some a user) per test with `rabbitmqctl` when
RABBITMQ_URL is a local broker without the management plugin. A container has no rabbitmqctl,
and the one on the host talks to the node with the host's Erlang cookie, which stays there:

    rabbitmqctl_relay.py serve DIR     on the host: runs rabbitmqctl for requests on DIR/sock
    rabbitmqctl -q add_vhost x         in the container (this file, named rabbitmqctl on PATH,
                                       DIR mounted at /run/rabbitmqctl-relay): asks the host

Only the commands tests/support/admin.py runs are relayed, on the host's default node.
Standard library only: the host side runs on any python3, the container side before pip.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import socketserver
import subprocess
import sys
from pathlib import Path

# Not a CALC_ variable: some tests start processes with those removed from the environment.
ENV = "RABBITMQCTL_RELAY"
SOCKET = "/run/rabbitmqctl-relay/sock"
COMMANDS = frozenset({"add_vhost", "delete_vhost", "list_vhosts", "set_permissions", "add_user",
                      "delete_user", "list_users", "status"})
TIMEOUT_S = 60.0


def _allowed(args: list[str]) -> bool:
    rest = [a for a in args if a != "-q"]
    return bool(rest) and rest[0] in COMMANDS


class _Handler(socketserver.StreamRequestHandler):
    def handle(self) -> None:
        try:
            args = json.loads(self.rfile.readline())["args"]
            if not (isinstance(args, list) and all(isinstance(a, str) for a in args)):
                raise ValueError("args: a list of strings")
        except (ValueError, KeyError, TypeError) as exc:
            reply = {"rc": 2, "stdout": "", "stderr": f"rabbitmqctl relay: bad request: {exc}\n"}
        else:
            reply = _run(args)
        self.wfile.write(json.dumps(reply).encode() + b"\n")


def _run(args: list[str]) -> dict[str, object]:
    if not _allowed(args):
        return {"rc": 64, "stdout": "",
                "stderr": f"rabbitmqctl relay: not relayed: {' '.join(args)} (only {sorted(COMMANDS)})\n"}
    executable = shutil.which("rabbitmqctl")
    if executable is None:
        return {"rc": 127, "stdout": "", "stderr": "rabbitmqctl relay: no rabbitmqctl on the host's PATH\n"}
    try:
        done = subprocess.run([executable, *args], capture_output=True, text=True, timeout=TIMEOUT_S,
                              check=False, cwd="/")
    except subprocess.TimeoutExpired:
        return {"rc": 124, "stdout": "", "stderr": f"rabbitmqctl relay: timed out after {TIMEOUT_S}s\n"}
    return {"rc": done.returncode, "stdout": done.stdout, "stderr": done.stderr}


class _Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


def serve(directory: Path) -> None:
    path = directory / "sock"
    path.unlink(missing_ok=True)
    with _Server(str(path), _Handler) as server:
        os.chmod(path, 0o600)
        print(f"rabbitmqctl relay on {path}", file=sys.stderr, flush=True)
        server.serve_forever()


def client(args: list[str]) -> int:
    address = os.environ.get(ENV) or SOCKET
    if not os.path.exists(address):
        print(f"rabbitmqctl (relay): no relay at {address} (scripts/test-py313.sh starts one)",
              file=sys.stderr)
        return 69
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(TIMEOUT_S + 10)
        sock.connect(address)
        sock.sendall(json.dumps({"args": args}).encode() + b"\n")
        with sock.makefile("rb") as answer:
            reply = json.loads(answer.readline())
    sys.stdout.write(reply["stdout"])
    sys.stderr.write(reply["stderr"])
    return int(reply["rc"])


if __name__ == "__main__":
    if Path(sys.argv[0]).name == "rabbitmqctl":
        sys.exit(client(sys.argv[1:]))
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(Path(sys.argv[2]))
    else:
        sys.exit(f"usage: {sys.argv[0]} serve DIR   (or run it as rabbitmqctl)")
