"""The one frozen Settings object, built from environment variables; nothing else reads them."""

from __future__ import annotations

import math
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from urllib.parse import urlsplit

from messaging.environment import (
    PASSWORD_FILE_MAX as PASSWORD_FILE_MAX,
)
from messaging.environment import (
    PORT_MAX,
    check_database_url,
    check_number,
    check_text,
    check_url,
    check_whole,
    env_name,
    parse,
    read_password,
    shown,
    with_password,
)
from messaging.environment import (
    redact_url as redact_url,
)
from messaging.errors import ConfigurationError

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
DEFAULT_DATABASE_URL = "postgresql://postgres@localhost:5432/postgres"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PREFETCH_MAX = 65_535  # basic.qos prefetch-count is a 16-bit field
MAX_ATTEMPTS_MAX = 32  # every attempt after the first has its own quorum queue (a Raft group) on the broker
QUEUE_BOUND_MAX = 2**31 - 1  # x-max-length, x-delivery-limit: far past any queue here, a 32-bit int
MESSAGE_BYTES_MAX = 512 * 1024 * 1024  # RabbitMQ's ceiling for max_message_size
IN_FLIGHT_MAX = 100_000  # each is a task and a message held in memory until confirmed
RETRY_DELAY_MAX = 4_294_967.0  # per-message TTL: milliseconds, at most 2**32 - 1 (49.7 days)
NAME_MAX = 128  # an instance id travels in every event; a hostname is at most 64
PATH_MAX = 4096  # Linux PATH_MAX
JOURNAL_BATCH_MAX = 10_000  # its prefetch is twice this, and a 16-bit field


def _default_instance() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(frozen=True)
class Settings:
    """Every knob of every service. Field docs are the configuration table of docs/operations.md."""

    rabbitmq_url: str = DEFAULT_URL
    """RABBITMQ_URL: amqp(s)://user:password@host:port/vhost of the broker (query: only ?heartbeat=N)."""
    rabbitmq_password_file: str = ""
    """RABBITMQ_PASSWORD_FILE: file whose content replaces the URL's password (for secrets)."""
    rabbitmq_ca_file: str = ""
    """RABBITMQ_CA_FILE: CA bundle to verify the broker's certificate with amqps://."""
    instance_id: str = field(default_factory=_default_instance)
    """CALC_INSTANCE_ID: name of this instance in `source` and `processed_by` (1..128 printable chars)."""
    interval: float = 1.0
    """CALC_INTERVAL: seconds between requests of `calc-producer run` (more than 0)."""
    failure_share: float = 0.1
    """CALC_FAILURE_SHARE: share of `run`/`bulk` requests built to fail (0..1)."""
    queues: tuple[str, ...] = ("basic", "heavy")
    """CALC_QUEUES: comma-separated work queues the consumer reads: basic, heavy."""
    prefetch: int = 256
    """CALC_PREFETCH: unacked messages per consumer, processed concurrently (1..65535)."""
    fault_rate: float = 0.0
    """CALC_FAULT_RATE: share of attempts that fail with an injected transient fault (0..1)."""
    max_attempts: int = 4
    """CALC_MAX_ATTEMPTS: attempts of a transient failure before RETRIES_EXHAUSTED (1..32)."""
    retry_base_delay: float = 1.0
    """CALC_RETRY_BASE_DELAY: seconds before the first retry; doubles per attempt (more than 0)."""
    retry_max_delay: float = 60.0
    """CALC_RETRY_MAX_DELAY: cap of the retry delay, in seconds (base delay..4294967, RabbitMQ's TTL cap)."""
    work_queue_max_length: int = 100_000
    """CALC_WORK_QUEUE_MAX_LENGTH: bound of each work queue (1..2147483647; publishes beyond are nacked)."""
    delivery_limit: int = 5
    """CALC_DELIVERY_LIMIT: redeliveries before the broker dead-letters a message (1..2147483647)."""
    audit_max_length: int = 10_000
    """CALC_AUDIT_MAX_LENGTH: results kept in calc.results.audit (oldest dropped; 1..2147483647)."""
    max_message_bytes: int = 65_536
    """CALC_MAX_MESSAGE_BYTES: larger request bodies are MALFORMED_MESSAGE (1..536870912)."""
    publish_timeout: float = 10.0
    """CALC_PUBLISH_TIMEOUT: seconds to wait for a publisher confirm (more than 0)."""
    connect_timeout: float = 120.0
    """CALC_CONNECT_TIMEOUT: seconds to keep retrying the first connection before giving up (more than 0)."""
    publish_in_flight: int = 256
    """CALC_PUBLISH_IN_FLIGHT: unconfirmed publishes the producer keeps in flight (1..100000)."""
    declare_topology: bool = True
    """CALC_DECLARE_TOPOLOGY: declare the topology at start (false: only check it exists)."""
    test_crash_source: str = ""
    """CALC_TEST_CRASH_SOURCE: test-only; a request whose `source` equals it kills the consumer."""
    test_block_source: str = ""
    """CALC_TEST_BLOCK_SOURCE: test-only; a request whose `source` equals it blocks the consumer 20 s."""
    log_level: str = "INFO"
    """CALC_LOG_LEVEL: DEBUG, INFO, WARNING or ERROR (any case)."""
    log_format: str = "text"
    """CALC_LOG_FORMAT: text (key=value) or json."""
    metrics_port: int = 0
    """CALC_METRICS_PORT: port of the Prometheus /metrics endpoint (0..65535); 0 turns it off."""
    inspector_port: int = 8080
    """CALC_INSPECTOR_PORT: port of `dlq-inspector serve` (/metrics, /report, /healthz); 0: any free."""
    inspector_interval: float = 30.0
    """CALC_INSPECTOR_INTERVAL: seconds between the reports `dlq-inspector serve` logs (more than 0)."""
    database_url: str = DEFAULT_DATABASE_URL
    """DATABASE_URL: postgresql://user:password@host:port/database of the results journal (calc-journal)."""
    database_password_file: str = ""
    """DATABASE_PASSWORD_FILE: file whose content replaces DATABASE_URL's password (for secrets)."""
    journal_batch: int = 500
    """CALC_JOURNAL_BATCH: outcomes written per transaction and acked at once (1..10000; prefetch: twice)."""
    journal_port: int = 8081
    """CALC_JOURNAL_PORT: port of `calc-journal serve` (/results/ID, /metrics, /livez, /readyz); 0: any."""
    otel_exporter_otlp_endpoint: str = ""
    """OTEL_EXPORTER_OTLP_ENDPOINT: http(s)://host:4318 of an OTLP/HTTP collector; set, tracing is on."""
    otel_exporter_otlp_traces_endpoint: str = ""
    """OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: the full http(s)://host:4318/v1/traces URL instead (tracing on)."""
    otel_sdk_disabled: bool = False
    """OTEL_SDK_DISABLED: true turns tracing off whatever the endpoints say."""
    otel_traces_exporter: str = "otlp"
    """OTEL_TRACES_EXPORTER: otlp, or none (tracing off)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Build settings from `env` (default: os.environ); raise ConfigurationError if invalid.

        Empty or blank means the default. Nothing is read but `env`: RABBITMQ_PASSWORD_FILE is
        read when the broker URL is first needed, before connecting.
        """
        env = os.environ if env is None else env
        values: dict[str, object] = {}
        for f in fields(cls):
            name = env_name(f.name)
            raw = env.get(name)
            if raw is None or not raw.strip():
                continue
            values[f.name] = parse(name, raw.strip(), f.type)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigurationError for the first unusable value: one line naming its variable."""
        check_url(self.rabbitmq_url)
        check_text("rabbitmq_password_file", self.rabbitmq_password_file, PATH_MAX, empty=True)
        check_database_url(self.database_url)
        check_text("database_password_file", self.database_password_file, PATH_MAX, empty=True)
        check_text("rabbitmq_ca_file", self.rabbitmq_ca_file, PATH_MAX, empty=True)
        check_text("instance_id", self.instance_id, NAME_MAX)
        check_text("test_crash_source", self.test_crash_source, NAME_MAX, empty=True)
        check_text("test_block_source", self.test_block_source, NAME_MAX, empty=True)
        for name in ("interval", "publish_timeout", "connect_timeout", "inspector_interval"):
            check_number(name, getattr(self, name), 0.0, math.inf, above=True)
        for name in ("failure_share", "fault_rate"):
            check_number(name, getattr(self, name), 0.0, 1.0)
        for name in ("retry_base_delay", "retry_max_delay"):
            check_number(name, getattr(self, name), 0.0, RETRY_DELAY_MAX, above=True)
        if self.retry_max_delay < self.retry_base_delay:
            raise ConfigurationError(
                f"CALC_RETRY_MAX_DELAY ({self.retry_max_delay:g}) must be at least "
                f"CALC_RETRY_BASE_DELAY ({self.retry_base_delay:g})")
        for name, low, high in (("prefetch", 1, PREFETCH_MAX),
                                ("max_attempts", 1, MAX_ATTEMPTS_MAX),
                                ("work_queue_max_length", 1, QUEUE_BOUND_MAX),
                                ("delivery_limit", 1, QUEUE_BOUND_MAX),
                                ("audit_max_length", 1, QUEUE_BOUND_MAX),
                                ("max_message_bytes", 1, MESSAGE_BYTES_MAX),
                                ("publish_in_flight", 1, IN_FLIGHT_MAX),
                                ("metrics_port", 0, PORT_MAX),
                                ("inspector_port", 0, PORT_MAX),
                                ("journal_batch", 1, JOURNAL_BATCH_MAX),
                                ("journal_port", 0, PORT_MAX)):
            check_whole(name, getattr(self, name), low, high)
        unknown = [q for q in self.queues if q not in ("basic", "heavy")]
        if unknown or not self.queues or len(set(self.queues)) != len(self.queues):
            raise ConfigurationError(f"CALC_QUEUES must name basic, heavy or both, each once, "
                                     f"got {shown(','.join(self.queues))}")
        if not (self.log_level.isascii() and self.log_level.upper() in LOG_LEVELS):
            raise ConfigurationError(f"CALC_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, "
                                     f"got {shown(self.log_level)}")
        if self.log_format not in ("text", "json"):
            raise ConfigurationError(f"CALC_LOG_FORMAT must be text or json, got {shown(self.log_format)}")
        _check_tracing(self)

    @property
    def tracing(self) -> bool:
        """Whether the services trace (docs/operations.md, "Tracing"): messaging.tracing.enabled's rule."""
        from messaging.tracing import enabled  # the OpenTelemetry SDK, only for the services that trace

        return enabled({"OTEL_EXPORTER_OTLP_ENDPOINT": self.otel_exporter_otlp_endpoint,
                        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": self.otel_exporter_otlp_traces_endpoint,
                        "OTEL_SDK_DISABLED": str(self.otel_sdk_disabled).lower(),
                        "OTEL_TRACES_EXPORTER": self.otel_traces_exporter})

    @property
    def broker_url(self) -> str:
        """RABBITMQ_URL with the password from RABBITMQ_PASSWORD_FILE when that is set."""
        if not self.rabbitmq_password_file:
            return self.rabbitmq_url
        password = read_password(self.rabbitmq_password_file, "RABBITMQ_PASSWORD_FILE")
        return with_password(self.rabbitmq_url, password, "guest")

    @property
    def safe_url(self) -> str:
        """The broker URL with the password masked: the only form that may be logged."""
        return redact_url(self.rabbitmq_url)

    @property
    def database_dsn(self) -> str:
        """DATABASE_URL with the password from DATABASE_PASSWORD_FILE when that is set."""
        if not self.database_password_file:
            return self.database_url
        password = read_password(self.database_password_file, "DATABASE_PASSWORD_FILE")
        return with_password(self.database_url, password, "postgres")

    @property
    def safe_database_url(self) -> str:
        """DATABASE_URL with the password masked: the only form that may be logged."""
        return redact_url(self.database_url)


def _check_tracing(settings: Settings) -> None:
    """The OpenTelemetry variables this project acts on: endpoints as http(s) URLs, otlp or none."""
    for name in ("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint"):
        value = getattr(settings, name)
        check_text(name, value, PATH_MAX, empty=True)
        try:
            parts = urlsplit(value)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a port out of range, an unclosed [
            usable = False
        if value and not usable:
            raise ConfigurationError(f"{env_name(name)} must be an http(s)://host:port URL of an OTLP/HTTP "
                                     f"collector, got {shown(value)}")
    if settings.otel_traces_exporter.strip().lower() not in ("otlp", "none"):
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER must be otlp or none (the only exporter here is "
                                 f"OTLP over HTTP), got {shown(settings.otel_traces_exporter)}")


_env_name = env_name
"""The name commandline and the tests import it by, from before messaging.environment held it."""
