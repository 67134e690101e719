"""The one frozen Settings object, built from environment variables; nothing else reads them."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from messaging.errors import ConfigurationError

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    """Every knob of every service. Field docs are the README's configuration table."""

    rabbitmq_url: str = DEFAULT_URL
    """RABBITMQ_URL: amqp(s)://user:password@host:port/vhost of the broker."""
    rabbitmq_password_file: str = ""
    """RABBITMQ_PASSWORD_FILE: file whose content replaces the URL's password (for secrets)."""
    rabbitmq_ca_file: str = ""
    """RABBITMQ_CA_FILE: CA bundle to verify the broker's certificate with amqps://."""
    instance_id: str = field(default_factory=_default_instance)
    """CALC_INSTANCE_ID: name of this instance in `source` and `processed_by`."""
    interval: float = 1.0
    """CALC_INTERVAL: seconds between requests of `calc-producer run`."""
    failure_share: float = 0.1
    """CALC_FAILURE_SHARE: share of `run`/`bulk` requests built to fail (0..1)."""
    queues: tuple[str, ...] = ("basic", "heavy")
    """CALC_QUEUES: comma-separated work queues the consumer reads: basic, heavy."""
    prefetch: int = 256
    """CALC_PREFETCH: unacked messages per consumer, processed concurrently."""
    fault_rate: float = 0.0
    """CALC_FAULT_RATE: share of attempts that fail with an injected transient fault (0..1)."""
    max_attempts: int = 4
    """CALC_MAX_ATTEMPTS: attempts of a transient failure before RETRIES_EXHAUSTED."""
    retry_base_delay: float = 1.0
    """CALC_RETRY_BASE_DELAY: seconds before the first retry; doubles per attempt."""
    retry_max_delay: float = 60.0
    """CALC_RETRY_MAX_DELAY: cap of the retry delay, in seconds."""
    work_queue_max_length: int = 100_000
    """CALC_WORK_QUEUE_MAX_LENGTH: bound of each work queue (publishes beyond it are nacked)."""
    delivery_limit: int = 5
    """CALC_DELIVERY_LIMIT: redeliveries before the broker dead-letters a message."""
    audit_max_length: int = 10_000
    """CALC_AUDIT_MAX_LENGTH: results kept in calc.results.audit (oldest dropped)."""
    max_message_bytes: int = 65_536
    """CALC_MAX_MESSAGE_BYTES: larger request bodies are MALFORMED_MESSAGE."""
    publish_timeout: float = 10.0
    """CALC_PUBLISH_TIMEOUT: seconds to wait for a publisher confirm."""
    connect_timeout: float = 120.0
    """CALC_CONNECT_TIMEOUT: seconds to keep retrying the first connection before giving up."""
    publish_in_flight: int = 256
    """CALC_PUBLISH_IN_FLIGHT: unconfirmed publishes the producer keeps in flight."""
    declare_topology: bool = True
    """CALC_DECLARE_TOPOLOGY: declare the topology at start (false: only check it exists)."""
    test_crash_source: str = ""
    """CALC_TEST_CRASH_SOURCE: test-only; a request whose `source` equals it kills the consumer."""
    log_level: str = "INFO"
    """CALC_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR."""
    log_format: str = "text"
    """CALC_LOG_FORMAT: text (key=value) or json."""
    metrics_port: int = 0
    """CALC_METRICS_PORT: port of the Prometheus /metrics endpoint; 0 turns it off."""
    inspector_port: int = 8080
    """CALC_INSPECTOR_PORT: port of `dlq-inspector serve` (/metrics, /report, /healthz)."""
    inspector_interval: float = 30.0
    """CALC_INSPECTOR_INTERVAL: seconds between the reports `dlq-inspector serve` logs."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: os.environ); raise ConfigurationError if invalid."""
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            name = _env_name(f.name)
            raw = env.get(name)
            if raw is None or raw == "":
                continue
            values[f.name] = _parse(name, raw, f.type)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        parts = urlsplit(self.rabbitmq_url)
        if parts.scheme not in ("amqp", "amqps") or not parts.hostname:
            raise ConfigurationError("RABBITMQ_URL must look like amqp://user:password@host:5672/vhost")
        for name, value in (("CALC_FAILURE_SHARE", self.failure_share),
                            ("CALC_FAULT_RATE", self.fault_rate)):
            if not 0.0 <= value <= 1.0:
                raise ConfigurationError(f"{name} must be between 0 and 1, got {value}")
        for name, number in (("CALC_PREFETCH", self.prefetch),
                             ("CALC_MAX_ATTEMPTS", self.max_attempts),
                             ("CALC_WORK_QUEUE_MAX_LENGTH", self.work_queue_max_length),
                             ("CALC_DELIVERY_LIMIT", self.delivery_limit),
                             ("CALC_MAX_MESSAGE_BYTES", self.max_message_bytes),
                             ("CALC_PUBLISH_IN_FLIGHT", self.publish_in_flight)):
            if number < 1:
                raise ConfigurationError(f"{name} must be at least 1, got {number}")
        unknown = set(self.queues) - {"basic", "heavy"}
        if unknown or not self.queues:
            raise ConfigurationError(f"CALC_QUEUES must name basic and/or heavy, got {self.queues}")
        if self.log_format not in ("text", "json"):
            raise ConfigurationError(f"CALC_LOG_FORMAT must be text or json, got {self.log_format}")
        if self.interval <= 0 or self.retry_base_delay <= 0 or self.publish_timeout <= 0:
            raise ConfigurationError("intervals, delays and timeouts must be positive")

    @property
    def broker_url(self) -> str:
        """RABBITMQ_URL with the password from RABBITMQ_PASSWORD_FILE when that is set."""
        if not self.rabbitmq_password_file:
            return self.rabbitmq_url
        try:
            password = Path(self.rabbitmq_password_file).read_text().strip()
        except OSError as exc:
            raise ConfigurationError(f"cannot read RABBITMQ_PASSWORD_FILE: {exc.strerror}") from None
        parts = urlsplit(self.rabbitmq_url)
        user = quote(parts.username or "guest", safe="")
        host = parts.hostname or "localhost"
        netloc = f"{user}:{quote(password, safe='')}@{host}" + (f":{parts.port}" if parts.port else "")
        return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))

    @property
    def safe_url(self) -> str:
        """The broker URL with the password masked: the only form that may be logged."""
        return redact_url(self.rabbitmq_url)


def redact_url(url: str) -> str:
    """Mask the password of an amqp URL."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"{parts.username}:***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


def _env_name(field_name: str) -> str:
    if field_name.startswith("rabbitmq_"):
        return field_name.upper()
    return "CALC_" + field_name.upper()


def _parse(name: str, raw: str, kind: object) -> object:
    try:
        if kind in ("float", float):
            return float(raw)
        if kind in ("int", int):
            return int(raw)
        if kind in ("bool", bool):
            lowered = raw.strip().lower()
            if lowered not in ("1", "0", "true", "false", "yes", "no", "on", "off"):
                raise ValueError(raw)
            return lowered in ("1", "true", "yes", "on")
        if kind in ("tuple[str, ...]",):
            return tuple(part.strip() for part in raw.split(",") if part.strip())
    except ValueError:
        raise ConfigurationError(f"{name} has an invalid value {raw!r}") from None
    return raw.strip()
