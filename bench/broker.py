"""The benchmark's broker: one private vhost per run, made and removed with rabbitmqctl or the API."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
import urllib.request
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import quote, unquote, urlsplit, urlunsplit

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


def vhost_url(url: str, vhost: str) -> str:
    """`url` with its vhost replaced by `vhost`."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""), parts.query, ""))


def _user(url: str) -> str:
    return unquote(urlsplit(url).username or "guest")


class Admin:
    """Creates and deletes vhosts: the management API when given, else the local rabbitmqctl."""

    def __init__(self, management_url: str | None) -> None:
        self.management_url = management_url.rstrip("/") if management_url else None
        if self.management_url is None and shutil.which("rabbitmqctl") is None:
            raise SystemExit("bench: need rabbitmqctl on PATH or RABBITMQ_MANAGEMENT_URL to make a vhost")

    def _api(self, method: str, path: str, body: object | None = None) -> None:
        assert self.management_url is not None
        parts = urlsplit(self.management_url)
        base = urlunsplit((parts.scheme, parts.hostname + (f":{parts.port}" if parts.port else ""),
                           parts.path, "", ""))
        request = urllib.request.Request(base + path, method=method,
                                         data=None if body is None else json.dumps(body).encode())
        auth = f"{unquote(parts.username or 'guest')}:{unquote(parts.password or 'guest')}"
        request.add_header("Authorization", "Basic " + base64.b64encode(auth.encode()).decode())
        request.add_header("Content-Type", "application/json")
        try:
            urllib.request.urlopen(request, timeout=30).close()
        except urllib.error.HTTPError as exc:
            if not (method == "DELETE" and exc.code == 404):
                raise

    def _ctl(self, *args: str) -> None:
        subprocess.run(["rabbitmqctl", "-q", *args], check=True, capture_output=True, timeout=120)

    def create(self, vhost: str, user: str) -> None:
        if self.management_url:
            self._api("PUT", f"/api/vhosts/{quote(vhost, safe='')}", {})
            self._api("PUT", f"/api/permissions/{quote(vhost, safe='')}/{quote(user, safe='')}",
                      {"configure": ".*", "write": ".*", "read": ".*"})
        else:
            self._ctl("add_vhost", vhost)
            self._ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")

    def delete(self, vhost: str) -> None:
        if self.management_url:
            self._api("DELETE", f"/api/vhosts/{quote(vhost, safe='')}")
        else:
            subprocess.run(["rabbitmqctl", "-q", "delete_vhost", vhost], capture_output=True, timeout=120)


@contextmanager
def private_vhost(url: str, management_url: str | None) -> Iterator[str]:
    """A fresh `bench-<hex>` vhost for one benchmark run; yields its URL and deletes it after."""
    admin = Admin(management_url)
    vhost = f"bench-{uuid.uuid4().hex[:10]}"
    admin.create(vhost, _user(url))
    try:
        yield vhost_url(url, vhost)
    finally:
        admin.delete(vhost)
