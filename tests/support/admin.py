"""Administer a test broker's vhosts, users and permissions over whichever channel it offers."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol
from urllib.parse import quote, unquote, urlsplit, urlunsplit


class BrokerAdminError(RuntimeError):
    """An administrative command against a broker failed."""


class BrokerAdmin(ABC):
    """Creates and deletes vhosts and users on one broker; each backend reaches it its own way."""

    @abstractmethod
    def create_vhost(self, name: str) -> None:
        """Create the vhost `name`."""

    @abstractmethod
    def delete_vhost(self, name: str) -> None:
        """Delete the vhost `name` with everything in it; a vhost already gone is not an error."""

    @abstractmethod
    def list_vhosts(self) -> list[str]:
        """Names of every vhost on the broker."""

    @abstractmethod
    def set_permissions(
        self, vhost: str, user: str, configure: str = ".*", write: str = ".*", read: str = ".*"
    ) -> None:
        """Grant `user` the given permission regexes on `vhost`."""

    @abstractmethod
    def add_user(self, name: str, password: str) -> None:
        """Create the user `name` (no tags)."""

    @abstractmethod
    def delete_user(self, name: str) -> None:
        """Delete the user `name`; a user already gone is not an error."""

    @abstractmethod
    def version(self) -> str:
        """The RabbitMQ server version, e.g. "3.10.8"."""


class RabbitmqctlAdmin(BrokerAdmin):
    """Admin through `rabbitmqctl`; subclasses decide where the command runs."""

    @abstractmethod
    def ctl(self, args: Sequence[str], timeout: float = 60.0) -> str:
        """Run `rabbitmqctl -q <args>` and return its stdout; BrokerAdminError if it fails."""

    def create_vhost(self, name: str) -> None:
        self.ctl(["add_vhost", name])

    def delete_vhost(self, name: str) -> None:
        try:
            self.ctl(["delete_vhost", name])
        except BrokerAdminError:
            # rabbitmqctl reports a missing vhost only as a non-zero exit, like any other error.
            if name in self.list_vhosts():
                raise

    def list_vhosts(self) -> list[str]:
        rows = json.loads(self.ctl(["list_vhosts", "name", "--formatter", "json"]))
        return [str(row["name"]) for row in rows]

    def set_permissions(
        self, vhost: str, user: str, configure: str = ".*", write: str = ".*", read: str = ".*"
    ) -> None:
        self.ctl(["set_permissions", "-p", vhost, user, configure, write, read])

    def add_user(self, name: str, password: str) -> None:
        self.ctl(["add_user", name, password])

    def delete_user(self, name: str) -> None:
        try:
            self.ctl(["delete_user", name])
        except BrokerAdminError:
            if name in self._list_users():
                raise

    def version(self) -> str:
        # `rabbitmqctl version` is the CLI's version; the server's comes from `status`.
        status = json.loads(self.ctl(["status", "--formatter", "json"]))
        return str(status["rabbitmq_version"])

    def _list_users(self) -> list[str]:
        rows = json.loads(self.ctl(["list_users", "--formatter", "json"]))
        return [str(row["user"]) for row in rows]


class LocalCtlAdmin(RabbitmqctlAdmin):
    """`rabbitmqctl` on this machine, for the shared broker or a private node (`-n node`).

    On Debian, root's `rabbitmqctl` re-runs itself as user rabbitmq (HOME=/var/lib/rabbitmq), so it
    presents rabbitmq's Erlang cookie; a node with a cookie of its own is reached with `cookie`.
    """

    def __init__(
        self, node: str | None = None, cookie: str | None = None, executable: str = "rabbitmqctl"
    ) -> None:
        self.node = node
        self._cookie = cookie
        self._executable = executable

    def ctl(self, args: Sequence[str], timeout: float = 60.0) -> str:
        executable = shutil.which(self._executable)
        if executable is None:
            raise BrokerAdminError(f"{self._executable} not found on PATH")
        argv = [executable, "-q"]
        if self.node:
            argv += ["-n", self.node]
        if self._cookie:
            argv += ["--erlang-cookie", self._cookie]
        argv += args
        try:
            done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, check=False, cwd="/")
        except subprocess.TimeoutExpired:
            raise BrokerAdminError(f"rabbitmqctl {' '.join(args)} timed out after {timeout}s") from None
        if done.returncode != 0:
            raise BrokerAdminError(
                f"rabbitmqctl {' '.join(args)} (node {self.node or 'default'}) exited "
                f"{done.returncode}: {(done.stderr or done.stdout).strip()}"
            )
        return done.stdout

    def __repr__(self) -> str:
        return f"LocalCtlAdmin(node={self.node!r})"


class ExecContainer(Protocol):
    """The part of a testcontainers container that ContainerCtlAdmin uses."""

    def get_wrapped_container(self) -> Any: ...


class ContainerCtlAdmin(RabbitmqctlAdmin):
    """`rabbitmqctl` run inside a testcontainers RabbitMQ container (`docker exec`)."""

    def __init__(self, container: ExecContainer) -> None:
        self._container = container

    def ctl(self, args: Sequence[str], timeout: float = 60.0) -> str:
        # demux keeps stderr (deprecation banners, warnings) out of the JSON on stdout.
        # `timeout` inside the container bounds the call; docker exec has no timeout of its own.
        argv = ["timeout", str(int(timeout)), "rabbitmqctl", "-q", *args]
        exit_code, (out, err) = self._container.get_wrapped_container().exec_run(argv, demux=True)
        stdout = (out or b"").decode()
        if exit_code != 0:
            stderr = (err or b"").decode()
            raise BrokerAdminError(
                f"rabbitmqctl {' '.join(args)} in container exited {exit_code}: {(stderr or stdout).strip()}"
            )
        return stdout

    def __repr__(self) -> str:
        return "ContainerCtlAdmin()"


class ManagementApiAdmin(BrokerAdmin):
    """The management plugin's HTTP API, e.g. http://guest:guest@localhost:15672."""

    def __init__(self, url: str, timeout: float = 30.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise BrokerAdminError(f"management URL must look like http://user:pass@host:15672: {url}")
        user = unquote(parts.username or "guest")
        password = unquote(parts.password or "guest")
        netloc = parts.hostname if parts.port is None else f"{parts.hostname}:{parts.port}"
        self._base = urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        self._headers = {"Authorization": f"Basic {token}", "Content-Type": "application/json"}
        self._timeout = timeout

    def create_vhost(self, name: str) -> None:
        self._request("PUT", f"/api/vhosts/{_q(name)}", {})

    def delete_vhost(self, name: str) -> None:
        self._request("DELETE", f"/api/vhosts/{_q(name)}", missing_ok=True)

    def list_vhosts(self) -> list[str]:
        return [str(row["name"]) for row in self._request("GET", "/api/vhosts?columns=name")]

    def set_permissions(
        self, vhost: str, user: str, configure: str = ".*", write: str = ".*", read: str = ".*"
    ) -> None:
        body = {"configure": configure, "write": write, "read": read}
        self._request("PUT", f"/api/permissions/{_q(vhost)}/{_q(user)}", body)

    def add_user(self, name: str, password: str) -> None:
        self._request("PUT", f"/api/users/{_q(name)}", {"password": password, "tags": ""})

    def delete_user(self, name: str) -> None:
        self._request("DELETE", f"/api/users/{_q(name)}", missing_ok=True)

    def version(self) -> str:
        return str(self._request("GET", "/api/overview")["rabbitmq_version"])

    def _request(self, method: str, path: str, body: object | None = None, missing_ok: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(self._base + path, data=data, method=method, headers=self._headers)
        try:
            with urllib.request.urlopen(request, timeout=self._timeout) as response:
                payload = response.read()
        except urllib.error.HTTPError as exc:
            if missing_ok and exc.code == 404:
                return None
            detail = exc.read().decode(errors="replace").strip()
            raise BrokerAdminError(f"{method} {path} -> HTTP {exc.code}: {detail}") from None
        except urllib.error.URLError as exc:
            raise BrokerAdminError(f"{method} {self._base}{path} failed: {exc.reason}") from None
        return json.loads(payload) if payload else None

    def __repr__(self) -> str:
        return f"ManagementApiAdmin({self._base!r})"


def _q(segment: str) -> str:
    """Quote one path segment: the default vhost "/" becomes %2F as the API expects."""
    return quote(segment, safe="")
