"""Private RabbitMQ nodes on free ports, for tests that stop, kill or cluster brokers on purpose."""

from __future__ import annotations

import atexit
import contextlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol, TypeVar

from tests.support.admin import BrokerAdminError, LocalCtlAdmin, RabbitmqctlAdmin
from tests.support.readiness import amqp_handshake_ok, wait_for

NODE_USER = "rabbitmq"
"""The account a private node runs as when the tests run as root."""

# The real start script. /usr/sbin/rabbitmq-server on Debian is a wrapper that, run as user
# rabbitmq, redirects output into /var/log/rabbitmq/startup_log: the shared node's log.
_SERVER_SCRIPTS = (Path("/usr/lib/rabbitmq/bin/rabbitmq-server"),)

# Ports a private node must not take: epmd, the usual broker ports (the shared node's among them)
# and the range rabbitmqctl itself listens on while it runs (35672-35682).
_RESERVED_PORTS = frozenset({4369, 5671, 5672, 15672, 15692, 25672, *range(35672, 35683)})

STARTUP_TIMES: list[tuple[str, int, float]] = []
"""(node name, nth start of that node, seconds from launch to ready) for the run's report."""

_LIVE_NODES: dict[int, PrivateNode] = {}


class PrivateNodeError(RuntimeError):
    """A private RabbitMQ node could not be started, stopped or clustered."""


@dataclass(frozen=True)
class TlsFiles:
    """PEM files for a TLS listener: the CA, the server certificate it signed, and its key."""

    ca: Path
    cert: Path
    key: Path


def free_port(taken: set[int]) -> int:
    """A TCP port on 127.0.0.1 that is free now and not in `taken` (which it is added to)."""
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port not in taken and port not in _RESERVED_PORTS:
            taken.add(port)
            return port
    raise PrivateNodeError("no free TCP port found")


def server_script() -> Path:
    """The rabbitmq-server start script to run directly (not a distribution's wrapper)."""
    override = os.environ.get("CALC_RABBITMQ_SERVER")
    candidates = [Path(override)] if override else list(_SERVER_SCRIPTS)
    on_path = shutil.which("rabbitmq-server")
    if not override and on_path and Path(on_path).resolve().name == "rabbitmq-server":
        candidates.append(Path(on_path))
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    raise PrivateNodeError(
        "rabbitmq-server not found (looked for "
        + ", ".join(str(c) for c in candidates)
        + "); install the rabbitmq-server package or set CALC_RABBITMQ_SERVER"
    )


class ClusterMember:
    """Clustering through a node's own rabbitmqctl: what private nodes and containers share."""

    nodename: str
    cookie: str
    admin: RabbitmqctlAdmin

    def join(self, seed: ClusterMember) -> None:
        """Join `seed`'s cluster: stop_app, join_cluster, start_app (the nodes share a cookie)."""
        if seed.cookie != self.cookie:
            raise PrivateNodeError("nodes of one cluster need the same Erlang cookie")
        for args in (["stop_app"], ["join_cluster", seed.nodename], ["start_app"]):
            self.admin.ctl(args, 120)
        self.admin.ctl(["await_startup", "--timeout", "60"], 75)

    def cluster_status(self) -> dict[str, object]:
        """`rabbitmqctl cluster_status` as parsed JSON."""
        status: dict[str, object] = json.loads(self.admin.ctl(["cluster_status", "--formatter", "json"]))
        return status

    def running_nodes(self) -> list[str]:
        """Names of the cluster's running nodes, as this node sees them."""
        nodes = self.cluster_status().get("running_nodes", [])
        return sorted(str(n) for n in nodes) if isinstance(nodes, list) else []


class PrivateNode(ClusterMember):
    """One RabbitMQ node with its own name, ports, cookie, config, data and log directories.

    Nothing is shared with the machine's own broker except epmd and the installed binaries:
    /etc/rabbitmq is never read (the config, env and plugins files are the node's own).
    """

    host = "127.0.0.1"

    def __init__(
        self,
        name: str | None = None,
        *,
        cookie: str | None = None,
        tls: TlsFiles | None = None,
        extra_config: Sequence[str] = (),
    ) -> None:
        self.name = name or f"calc-{uuid.uuid4().hex[:8]}"
        self.nodename = f"{self.name}@localhost"
        self.cookie = cookie or secrets.token_hex(16)
        self.tls = tls
        self.extra_config = tuple(extra_config)
        taken: set[int] = set()
        self.amqp_port = free_port(taken)
        self.dist_port = free_port(taken)
        self.tls_port: int | None = free_port(taken) if tls else None
        self.admin = LocalCtlAdmin(node=self.nodename, cookie=self.cookie)
        self.startup_seconds: float | None = None
        self.starts = 0
        self._proc: subprocess.Popen[bytes] | None = None
        self._output: IO[bytes] | None = None
        self._launched_at = 0.0
        self.base_dir = Path(tempfile.mkdtemp(prefix=f"{self.name}-"))
        _LIVE_NODES[id(self)] = self
        self._prepare()

    # -- addresses -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """AMQP URL of the default vhost (guest may log in over loopback)."""
        return f"amqp://guest:guest@{self.host}:{self.amqp_port}/"

    @property
    def tls_url(self) -> str:
        """AMQPS URL of the default vhost; the name `localhost` is in the test certificate."""
        if self.tls_port is None:
            raise PrivateNodeError(f"{self.nodename} was created without tls=")
        return f"amqps://guest:guest@localhost:{self.tls_port}/"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "log" / f"{self.nodename}.log"

    # -- lifecycle -------------------------------------------------------------------------

    def start(self, wait: bool = True, timeout: float = 90.0) -> None:
        """Launch the node; with `wait`, return only once it is ready (see wait_ready).

        Started again after a kill, the node's port may be taken for a moment: a client that
        keeps reconnecting to a free port in the ephemeral range can be given that very port
        as its own source and connect to itself (TCP simultaneous open) until it gives up. So
        a restart waits for the port, and launches once more if the node still lost the race.
        """
        restart = self.starts > 0
        if restart:
            self._wait_port_free(30.0)
        self._launch()
        if not wait:
            return
        try:
            self.wait_ready(timeout)
        except PrivateNodeError as exc:
            if not (restart and "eaddrinuse" in str(exc)):
                raise
            print(f"{self.nodename}: port {self.amqp_port} was taken at restart; launching again")
            self._wait_port_free(30.0)
            self._launch()
            self.wait_ready(timeout)

    def _wait_port_free(self, timeout: float) -> None:
        def free() -> bool:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind((self.host, self.amqp_port))
                except OSError:
                    return False
                return True

        wait_for(free, timeout, 0.1, f"port {self.amqp_port} of {self.nodename} to be free")

    def _launch(self) -> None:
        if self.is_running():
            raise PrivateNodeError(f"{self.nodename} is already running")
        script = server_script()
        node_env = self._node_env()
        argv = [*self._run_as(), "env", "-i", *(f"{k}={v}" for k, v in node_env.items()), str(script)]
        self._close_output()
        self._output = (self.base_dir / "stdout.log").open("ab")
        self._launched_at = time.monotonic()
        self.startup_seconds = None
        self.starts += 1
        # A session of its own: the whole process tree can be signalled without touching pytest.
        self._proc = subprocess.Popen(
            argv,
            cwd=self.base_dir,
            env=node_env,
            stdin=subprocess.DEVNULL,
            stdout=self._output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 90.0) -> float:
        """Block until the AMQP port answers and `rabbitmqctl await_startup` succeeds.

        Returns (and prints) the seconds since launch. Fails at once, with the tail of the
        node's log, if the node exits while booting.
        """
        if self._proc is None:
            raise PrivateNodeError(f"{self.nodename} was never started")
        deadline = time.monotonic() + timeout

        def amqp_up() -> bool:
            if self._proc is not None and self._proc.poll() is not None:
                raise PrivateNodeError(
                    f"{self.nodename} exited with status {self._proc.returncode} while starting"
                    f"\n{self.log_tail()}"
                )
            return amqp_handshake_ok(self.host, self.amqp_port, timeout=1.0)

        try:
            wait_for(amqp_up, timeout, 0.2, f"AMQP on {self.host}:{self.amqp_port}")
            remaining = max(5.0, deadline - time.monotonic())
            self.admin.ctl(["await_startup", "--timeout", str(int(remaining))], remaining + 15)
        except (TimeoutError, BrokerAdminError) as exc:
            raise PrivateNodeError(f"{self.nodename} did not become ready: {exc}\n{self.log_tail()}") from exc
        elapsed = time.monotonic() - self._launched_at
        self.startup_seconds = elapsed
        STARTUP_TIMES.append((self.nodename, self.starts, elapsed))
        print(
            f"private RabbitMQ node {self.nodename} (start #{self.starts}) ready in {elapsed:.1f}s"
            f" (amqp {self.amqp_port})"
        )
        return elapsed

    def is_running(self) -> bool:
        """True while the node's process tree is alive (ready or not)."""
        return self._proc is not None and self._proc.poll() is None

    def stop(self, timeout: float = 60.0) -> None:
        """Stop gracefully with `rabbitmqctl stop`; killed if it has not exited after `timeout`."""
        if not self.is_running():
            return
        try:
            self.admin.ctl(["stop"], timeout)
        except BrokerAdminError as exc:
            self.kill()
            raise PrivateNodeError(f"graceful stop of {self.nodename} failed, killed it: {exc}") from exc
        assert self._proc is not None
        try:
            self._proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise PrivateNodeError(f"{self.nodename} did not exit {timeout}s after stop; killed it") from None
        self._close_output()

    def kill(self) -> None:
        """SIGKILL the node's Erlang VM (found by its node name), as a crash would end it."""
        for pid in self.beam_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if self._proc is not None:
            try:
                self._proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
            # Whatever is left of the tree (runuser, the start script, erl_child_setup).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(15)
        wait_for(lambda: not self.beam_pids(), 15, 0.1, f"{self.nodename} VM to die")
        self._close_output()

    def freeze(self) -> None:
        """SIGSTOP the node's Erlang VM: it keeps its sockets but reads, writes and confirms
        nothing (a stop-the-world pause, a frozen VM), and sends no connection.blocked."""
        for pid in self.beam_pids():
            os.kill(pid, signal.SIGSTOP)

    def thaw(self) -> None:
        """SIGCONT after `freeze()`."""
        for pid in self.beam_pids():
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

    def restart(self, timeout: float = 90.0) -> None:
        """Stop gracefully if running, then start again on the same ports and data."""
        self.stop()
        self.start(wait=True, timeout=timeout)

    def cleanup(self) -> None:
        """Kill the node if it runs and delete its directory. Safe to call more than once."""
        try:
            if self.is_running() or self.beam_pids():
                self.kill()
        finally:
            self._close_output()
            shutil.rmtree(self.base_dir, ignore_errors=True)
            _LIVE_NODES.pop(id(self), None)

    def import_definitions(self, source: Path) -> None:
        """Import a definitions file (users, vhosts, permissions, topology) into the running node."""
        target = self.base_dir / "definitions.json"  # rabbitmqctl reads it as the node's user
        shutil.copyfile(source, target)
        target.chmod(0o644)
        if os.geteuid() == 0:
            account = pwd.getpwnam(NODE_USER)
            os.chown(target, account.pw_uid, account.pw_gid)
        self.admin.ctl(["import_definitions", str(target)], timeout=120)

    # -- internals -------------------------------------------------------------------------

    def beam_pids(self) -> list[int]:
        """Erlang VMs running this node. The VM's command line has no node name; its env does."""
        marker = f"RABBITMQ_NODENAME={self.nodename}".encode()
        pids: list[int] = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                if not (entry / "comm").read_text().startswith("beam"):
                    continue
                environ = (entry / "environ").read_bytes().split(b"\0")
            except OSError:
                continue
            if marker in environ:
                pids.append(int(entry.name))
        return pids

    def log_tail(self, lines: int = 40) -> str:
        """The last lines of the node's log and console output, for error messages."""
        parts = []
        for path in (self.log_file, self.base_dir / "stdout.log"):
            try:
                text = path.read_text(errors="replace").splitlines()[-lines:]
            except OSError:
                continue
            parts.append(f"--- {path} (last {len(text)} lines) ---\n" + "\n".join(text))
        return "\n".join(parts) or f"(no log in {self.base_dir})"

    def _run_as(self) -> list[str]:
        if os.geteuid() != 0:
            return []  # already an unprivileged user: run as ourselves
        if shutil.which("runuser") is None:
            raise PrivateNodeError("runuser not found: cannot start a node as user rabbitmq")
        return ["runuser", "-u", NODE_USER, "--"]

    def _node_env(self) -> dict[str, str]:
        base = self.base_dir
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(base / "home"),  # holds the node's own .erlang.cookie
            "LANG": "C.UTF-8",
            "LC_ALL": "C.UTF-8",
            "RABBITMQ_NODENAME": self.nodename,
            "RABBITMQ_NODE_PORT": str(self.amqp_port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_CONFIG_FILE": str(base / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(base / "advanced.config"),
            "RABBITMQ_CONF_ENV_FILE": str(base / "rabbitmq-env.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(base / "enabled_plugins"),
            "RABBITMQ_MNESIA_BASE": str(base / "mnesia"),
            "RABBITMQ_LOG_BASE": str(base / "log"),
            # Inter-node and CLI traffic on loopback only, like the machine's own broker.
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }

    def _config(self) -> str:
        lines = [
            f"listeners.tcp.1 = {self.host}:{self.amqp_port}",
            # Many nodes share one disk in tests; the default 50MB limit is what we want too,
            # set explicitly so a machine-wide change cannot block publishers here.
            "disk_free_limit.absolute = 50MB",
            "log.file.level = info",
        ]
        if self.tls is not None:
            tls_dir = self.base_dir / "tls"
            lines += [
                f"listeners.ssl.1 = {self.host}:{self.tls_port}",
                f"ssl_options.cacertfile = {tls_dir / 'ca.pem'}",
                f"ssl_options.certfile = {tls_dir / 'cert.pem'}",
                f"ssl_options.keyfile = {tls_dir / 'key.pem'}",
                "ssl_options.verify = verify_peer",
                "ssl_options.fail_if_no_peer_cert = false",
            ]
        lines += self.extra_config
        return "\n".join(lines) + "\n"

    def _prepare(self) -> None:
        base = self.base_dir
        for sub in ("home", "mnesia", "log"):
            (base / sub).mkdir()
        cookie = base / "home" / ".erlang.cookie"
        cookie.write_text(self.cookie)
        cookie.chmod(0o400)  # Erlang refuses a cookie file others can read
        (base / "enabled_plugins").write_text("[].\n")
        (base / "rabbitmq-env.conf").write_text("")
        if self.tls is not None:
            tls_dir = base / "tls"
            tls_dir.mkdir()
            for source, target in (
                (self.tls.ca, "ca.pem"),
                (self.tls.cert, "cert.pem"),
                (self.tls.key, "key.pem"),
            ):
                shutil.copyfile(source, tls_dir / target)
            (tls_dir / "key.pem").chmod(0o600)
        (base / "rabbitmq.conf").write_text(self._config())
        base.chmod(0o755)  # mkdtemp makes it 0700: user rabbitmq could not enter
        if os.geteuid() == 0:
            try:
                account = pwd.getpwnam(NODE_USER)
            except KeyError:
                raise PrivateNodeError(f"user {NODE_USER} does not exist") from None
            for path in [base, *base.rglob("*")]:
                os.chown(path, account.pw_uid, account.pw_gid)

    def _close_output(self) -> None:
        if self._output is not None:
            self._output.close()
            self._output = None

    def __repr__(self) -> str:
        return f"PrivateNode({self.nodename!r}, amqp={self.amqp_port}, dir={str(self.base_dir)!r})"


def join_cluster(nodes: Sequence[ClusterMember], timeout: float = 60.0) -> None:
    """Join nodes[1:] to nodes[0] and wait until every node sees all of them running."""
    seed, *others = nodes
    for node in others:
        node.join(seed)
    expected = sorted(n.nodename for n in nodes)
    for node in nodes:
        _wait_until_sees(node, expected, timeout)


def _wait_until_sees(node: ClusterMember, expected: list[str], timeout: float) -> None:
    wait_for(lambda: node.running_nodes() == expected, timeout, 0.5, f"{node.nodename} to see {expected}")


class NodeFactory(Protocol):
    """What the `private_node` fixture returns."""

    def __call__(self, *, tls: TlsFiles | None = None, extra_config: Sequence[str] = (),
                 definitions: Path | None = None) -> PrivateNode: ...


class ClusterFactory(Protocol):
    """What the `private_cluster` fixture returns."""

    def __call__(self, size: int = 3, *, extra_config: Sequence[str] = ()) -> list[PrivateNode]: ...


class PrivateNodePool:
    """Starts private nodes for one test and kills and deletes every one of them afterwards."""

    def __init__(self) -> None:
        self.nodes: list[PrivateNode] = []

    def node(self, *, tls: TlsFiles | None = None, extra_config: Sequence[str] = (),
             definitions: Path | None = None) -> PrivateNode:
        """A started, ready node; with `definitions` (a JSON file), those imported too."""
        node = PrivateNode(tls=tls, extra_config=extra_config)
        self.nodes.append(node)
        node.start()
        if definitions is not None:
            node.import_definitions(definitions)
        return node

    def cluster(self, size: int = 3, *, extra_config: Sequence[str] = ()) -> list[PrivateNode]:
        """`size` started nodes joined into one cluster; the first is the seed."""
        cookie = secrets.token_hex(16)
        nodes = [PrivateNode(cookie=cookie, extra_config=extra_config) for _ in range(size)]
        self.nodes.extend(nodes)
        for node in nodes:  # boot in parallel, then wait for each
            node.start(wait=False)
        for node in nodes:
            node.wait_ready()
        join_cluster(nodes)
        return nodes

    def cleanup(self) -> None:
        """Kill and delete every node, even when some of them fail to go."""
        cleanup_all(self.nodes)


class _Disposable(Protocol):
    nodename: str

    def cleanup(self) -> None: ...


_Node = TypeVar("_Node", bound=_Disposable)


def cleanup_all(nodes: list[_Node]) -> None:
    """Clean up every node of a pool and empty it, even when some of them fail to go."""
    errors: list[str] = []
    for node in nodes:
        try:
            node.cleanup()
        except Exception as exc:
            errors.append(f"{node.nodename}: {exc}")
    nodes.clear()
    if errors:
        raise PrivateNodeError("cleanup failed: " + "; ".join(errors))


@atexit.register
def _kill_leftover_nodes() -> None:
    """Last resort when a run is interrupted before fixture teardown."""
    for node in list(_LIVE_NODES.values()):
        with contextlib.suppress(Exception):
            node.cleanup()
