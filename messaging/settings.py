"""The one frozen Settings object, built from environment variables; nothing else reads them."""

from __future__ import annotations

import math
import os
import re
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from urllib.parse import quote, urlsplit

import yarl

from messaging.errors import ConfigurationError

DEFAULT_URL = "amqp://guest:guest@localhost:5672/%2F"
URL_FORM = "amqp://user:password@host:5672/vhost"
DEFAULT_DATABASE_URL = "postgresql://postgres@localhost:5432/postgres"
DATABASE_URL_FORM = "postgresql://user:password@host:5432/database"

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")
PORT_MAX = 65_535
HEARTBEAT_MAX = 65_534  # aiormq reads 65535 and above as 0, no heartbeat
PREFETCH_MAX = 65_535  # basic.qos prefetch-count is a 16-bit field
MAX_ATTEMPTS_MAX = 32  # every attempt after the first has its own quorum queue (a Raft group) on the broker
QUEUE_BOUND_MAX = 2**31 - 1  # x-max-length, x-delivery-limit: far past any queue here, a 32-bit int
MESSAGE_BYTES_MAX = 512 * 1024 * 1024  # RabbitMQ's ceiling for max_message_size
IN_FLIGHT_MAX = 100_000  # each is a task and a message held in memory until confirmed
RETRY_DELAY_MAX = 4_294_967.0  # per-message TTL: milliseconds, at most 2**32 - 1 (49.7 days)
NAME_MAX = 128  # an instance id travels in every event; a hostname is at most 64
PATH_MAX = 4096  # Linux PATH_MAX
PASSWORD_FILE_MAX = 4096  # bytes read from RABBITMQ_PASSWORD_FILE: a password, not a file to stream
JOURNAL_BATCH_MAX = 10_000  # its prefetch is twice this, and a 16-bit field
SHOWN_MAX = 40  # characters of a bad value an error message repeats


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
            name = _env_name(f.name)
            raw = env.get(name)
            if raw is None or not raw.strip():
                continue
            values[f.name] = _parse(name, raw.strip(), f.type)
        settings = cls(**values)  # type: ignore[arg-type]
        settings.validate()
        return settings

    def validate(self) -> None:
        """Raise ConfigurationError for the first unusable value: one line naming its variable."""
        _check_url(self.rabbitmq_url)
        _check_text("rabbitmq_password_file", self.rabbitmq_password_file, PATH_MAX, empty=True)
        _check_database_url(self.database_url)
        _check_text("database_password_file", self.database_password_file, PATH_MAX, empty=True)
        _check_text("rabbitmq_ca_file", self.rabbitmq_ca_file, PATH_MAX, empty=True)
        _check_text("instance_id", self.instance_id, NAME_MAX)
        _check_text("test_crash_source", self.test_crash_source, NAME_MAX, empty=True)
        _check_text("test_block_source", self.test_block_source, NAME_MAX, empty=True)
        for name in ("interval", "publish_timeout", "connect_timeout", "inspector_interval"):
            _check_number(name, getattr(self, name), 0.0, math.inf, above=True)
        for name in ("failure_share", "fault_rate"):
            _check_number(name, getattr(self, name), 0.0, 1.0)
        for name in ("retry_base_delay", "retry_max_delay"):
            _check_number(name, getattr(self, name), 0.0, RETRY_DELAY_MAX, above=True)
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
            _check_whole(name, getattr(self, name), low, high)
        unknown = [q for q in self.queues if q not in ("basic", "heavy")]
        if unknown or not self.queues or len(set(self.queues)) != len(self.queues):
            raise ConfigurationError(f"CALC_QUEUES must name basic, heavy or both, each once, "
                                     f"got {_shown(','.join(self.queues))}")
        if not (self.log_level.isascii() and self.log_level.upper() in LOG_LEVELS):
            raise ConfigurationError(f"CALC_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR, "
                                     f"got {_shown(self.log_level)}")
        if self.log_format not in ("text", "json"):
            raise ConfigurationError(f"CALC_LOG_FORMAT must be text or json, got {_shown(self.log_format)}")
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
        password = _read_password(self.rabbitmq_password_file, "RABBITMQ_PASSWORD_FILE")
        return _with_password(self.rabbitmq_url, password, "guest")

    @property
    def safe_url(self) -> str:
        """The broker URL with the password masked: the only form that may be logged."""
        return redact_url(self.rabbitmq_url)

    @property
    def database_dsn(self) -> str:
        """DATABASE_URL with the password from DATABASE_PASSWORD_FILE when that is set."""
        if not self.database_password_file:
            return self.database_url
        password = _read_password(self.database_password_file, "DATABASE_PASSWORD_FILE")
        return _with_password(self.database_url, password, "postgres")

    @property
    def safe_database_url(self) -> str:
        """DATABASE_URL with the password masked: the only form that may be logged."""
        return redact_url(self.database_url)


def _with_password(url: str, password: str, default_user: str) -> str:
    scheme, _, rest = url.partition("://")
    netloc, tail = _split_netloc(rest)
    userinfo, _, hostport = netloc.rpartition("@")
    user = userinfo.partition(":")[0] or default_user
    return f"{scheme}://{user}:{quote(password, safe='')}@{hostport}{tail}"


def redact_url(url: str) -> str:
    """Mask the password of an amqp URL; any text at all, valid or not, never raises."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        scheme, rest = "", url
    netloc, tail = _split_netloc(rest)
    userinfo, at, hostport = netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return url
    return f"{scheme}{sep}{userinfo.partition(':')[0]}:***@{hostport}{tail}"


def _split_netloc(rest: str) -> tuple[str, str]:
    """`user:pw@host:port` and the path, query and fragment after it (as urlsplit cuts them)."""
    end = min((i for i in map(rest.find, "/?#") if i >= 0), default=len(rest))
    return rest[:end], rest[end:]


def _read_password(path: str, name: str) -> str:
    try:
        with open(path, "rb") as file:
            data = file.read(PASSWORD_FILE_MAX + 1)
    except OSError as exc:
        raise ConfigurationError(f"cannot read {name}: {exc.strerror or exc}") from None
    if len(data) > PASSWORD_FILE_MAX:
        raise ConfigurationError(f"{name} is larger than {PASSWORD_FILE_MAX} bytes; "
                                 "it must hold only the password")
    try:
        password = data.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigurationError(f"{name} is not UTF-8 text") from None
    if not password:
        raise ConfigurationError(f"{name} is empty")
    if not password.isprintable():
        # never shown: say what is wrong with it, not what it is
        raise ConfigurationError(f"{name} must hold the password on one line, "
                                 "without control characters")
    return password


def _env_name(field_name: str) -> str:
    if field_name.startswith(("rabbitmq_", "database_", "otel_")):
        return field_name.upper()
    return "CALC_" + field_name.upper()


def _shown(value: object) -> str:
    """A bad value as an error message repeats it: quoted, escaped to one line, cut short, and
    masked like a URL (a URL pasted into the wrong variable keeps its password)."""
    text = redact_url(str(value))
    return repr(text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX] + "...")


def _check_url(url: str) -> None:
    """RABBITMQ_URL as aio-pika and the resolver will read it; a message never repeats the URL.

    Only the scheme is ever shown: a URL missing its `@` has the password where the port
    would be, and a numeric port cannot be told from a numeric password.
    """
    name = "RABBITMQ_URL"
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigurationError(f"{name} must not hold spaces or control characters "
                                 f"(percent-encode them); it must look like {URL_FORM}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("amqp", "amqps"):
        got = f", got {scheme}://" if sep and re.fullmatch(r"[A-Za-z][A-Za-z0-9+.-]{0,15}", scheme) else ""
        raise ConfigurationError(f"{name} must start with amqp:// or amqps:// and look like {URL_FORM}{got}")
    hostport = _split_netloc(rest)[0].rpartition("@")[2]
    if hostport.startswith("["):
        host, bracket, after = hostport[1:].partition("]")
        port = after[1:] if after.startswith(":") else after
        if not bracket or (after and not after.startswith(":")):
            raise ConfigurationError(f"{name} has a malformed IPv6 address; it must look like "
                                     "amqp://user:password@[::1]:5672/vhost")
    else:
        host, _, port = hostport.partition(":")
    if not host:
        raise ConfigurationError(f"{name} names no host; it must look like {URL_FORM}")
    if port and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= PORT_MAX):
        raise ConfigurationError(f"{name} has a port that is not a number from 1 to {PORT_MAX} "
                                 "(5672 for amqp, 5671 for amqps)")
    try:
        parsed = yarl.URL(url)
        parsed_host = parsed.host or ""
        urlsplit(url)  # what the connection's error messages parse again
        # what the resolver does with a name (getaddrinfo encodes it with this codec)
        encoded = parsed_host.encode("idna")
    except ValueError:  # UnicodeError included
        raise ConfigurationError(f"{name} has a host that is not a valid name or address") from None
    if not parsed_host or len(encoded) > 253:
        raise ConfigurationError(f"{name} has a host that is not a valid name or address")
    vhost = parsed.path[1:] if parsed.path not in ("", "/") else "/"
    if len(vhost.encode("utf-8", "surrogatepass")) > 255:
        raise ConfigurationError(f"{name} names a vhost longer than 255 bytes (AMQP's limit)")
    # aio-pika and aiormq read options from the query, some raising mid-connect (a bad `cadata`),
    # some silently ignored beside our TLS context (`cafile`): only the heartbeat is taken.
    for key, value in parsed.query.items():
        if key != "heartbeat":
            got = f", not {key}" if re.fullmatch(r"[A-Za-z_]{1,20}", key) else ""
            raise ConfigurationError(f"{name} takes only the query parameter heartbeat{got} "
                                     "(for TLS: amqps:// and RABBITMQ_CA_FILE)")
        if not (re.fullmatch(r"[0-9]{1,5}", value) and int(value) <= HEARTBEAT_MAX):
            raise ConfigurationError(f"{name}'s heartbeat must be a whole number of seconds from 0 "
                                     f"to {HEARTBEAT_MAX}")


def _check_database_url(url: str) -> None:
    """DATABASE_URL as the journal's driver will read it; like RABBITMQ_URL, never repeated."""
    name = "DATABASE_URL"
    if any(c.isspace() or not c.isprintable() for c in url):
        raise ConfigurationError(f"{name} must not hold spaces or control characters "
                                 f"(percent-encode them); it must look like {DATABASE_URL_FORM}")
    scheme, sep, rest = url.partition("://")
    if not sep or scheme not in ("postgresql", "postgres"):
        raise ConfigurationError(f"{name} must start with postgresql:// and look like {DATABASE_URL_FORM}")
    netloc, tail = _split_netloc(rest)
    host, _, port = netloc.rpartition("@")[2].partition(":")
    if not host or host.startswith("["):
        raise ConfigurationError(f"{name} names no host (or an IPv6 one, not supported here); "
                                 f"it must look like {DATABASE_URL_FORM}")
    if port and not (re.fullmatch(r"[0-9]{1,5}", port) and 1 <= int(port) <= PORT_MAX):
        raise ConfigurationError(f"{name} has a port that is not a number from 1 to {PORT_MAX} (5432)")
    database = tail.partition("?")[0].lstrip("/")
    if not database or "/" in database:
        raise ConfigurationError(f"{name} names no database after the host; "
                                 f"it must look like {DATABASE_URL_FORM}")


def _check_tracing(settings: Settings) -> None:
    """The OpenTelemetry variables this project acts on: endpoints as http(s) URLs, otlp or none."""
    for name in ("otel_exporter_otlp_endpoint", "otel_exporter_otlp_traces_endpoint"):
        value = getattr(settings, name)
        _check_text(name, value, PATH_MAX, empty=True)
        try:
            parts = urlsplit(value)
            usable = parts.scheme in ("http", "https") and bool(parts.hostname) and parts.port != 0
        except ValueError:  # a port out of range, an unclosed [
            usable = False
        if value and not usable:
            raise ConfigurationError(f"{_env_name(name)} must be an http(s)://host:port URL of an OTLP/HTTP "
                                     f"collector, got {_shown(value)}")
    if settings.otel_traces_exporter.strip().lower() not in ("otlp", "none"):
        raise ConfigurationError(f"OTEL_TRACES_EXPORTER must be otlp or none (the only exporter here is "
                                 f"OTLP over HTTP), got {_shown(settings.otel_traces_exporter)}")


def _check_text(field_name: str, value: str, limit: int, *, empty: bool = False) -> None:
    name = _env_name(field_name)
    if not value and not empty:
        raise ConfigurationError(f"{name} must not be empty")
    if not value.isprintable():
        raise ConfigurationError(f"{name} must not hold control or unprintable characters, "
                                 f"got {_shown(value)}")
    if len(value) > limit:
        raise ConfigurationError(f"{name} must be at most {limit} characters, got {len(value)} characters")


def _check_number(field_name: str, value: float, low: float, high: float, *,
                  above: bool = False) -> None:
    """`low <= value <= high` (`low < value` when `above`), and never nan or infinite."""
    name = _env_name(field_name)
    fits = math.isfinite(value) and (value > low if above else value >= low) and value <= high
    if not fits:
        if above and high == math.inf:
            wanted = f"a number more than {low:g}"
        elif above:
            wanted = f"a number more than {low:g} and at most {high:g}"
        else:
            wanted = f"a number from {low:g} to {high:g}"
        raise ConfigurationError(f"{name} must be {wanted}, got {value!r}")


def _check_whole(field_name: str, value: int, low: int, high: int) -> None:
    if not low <= value <= high:
        raise ConfigurationError(f"{_env_name(field_name)} must be a whole number from {low} to "
                                 f"{high}, got {value}")


_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def _parse(name: str, raw: str, kind: object) -> object:
    """`raw` (stripped, not empty) as the field's type: plain ASCII decimals, no nan, inf, 0x or _."""
    if kind in ("float", float):
        if not _DECIMAL.fullmatch(raw):
            raise ConfigurationError(f"{name} has an invalid value {_shown(raw)}: "
                                     "it must be a decimal number such as 1.5")
        return float(raw)  # overflows to inf (1e309), which validate() refuses
    if kind in ("int", int):
        if not _WHOLE.fullmatch(raw):
            raise ConfigurationError(f"{name} has an invalid value {_shown(raw)}: it must be a whole number")
        if len(raw) > 30:  # int() refuses past 4300 digits; every bound here has under 12
            raise ConfigurationError(f"{name} has an invalid value {_shown(raw)}: far out of range")
        return int(raw)
    if kind in ("bool", bool):
        lowered = raw.lower()
        if lowered not in _TRUE + _FALSE:
            raise ConfigurationError(f"{name} has an invalid value {_shown(raw)}: it must be true or false")
        return lowered in _TRUE
    if kind in ("tuple[str, ...]",):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
