"""Reading and checking values from the environment: parsing, bounds, URLs, password files, masking.

Settings (messaging.settings) owns the fields and their docs; this module owns what a raw
variable must look like and the one-line error that says why it does not.
"""

from __future__ import annotations

import math
import re
from urllib.parse import quote, urlsplit

import yarl

from messaging.errors import ConfigurationError

URL_FORM = "amqp://user:password@host:5672/vhost"
DATABASE_URL_FORM = "postgresql://user:password@host:5432/database"
PORT_MAX = 65_535
HEARTBEAT_MAX = 65_534  # aiormq reads 65535 and above as 0, no heartbeat
PASSWORD_FILE_MAX = 4096  # bytes read from RABBITMQ_PASSWORD_FILE: a password, not a file to stream
SHOWN_MAX = 40  # characters of a bad value an error message repeats


def with_password(url: str, password: str, default_user: str) -> str:
    """`url` with its password replaced (percent-encoded); no user in it means `default_user`."""
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


def read_password(path: str, name: str) -> str:
    """The one-line password a *_PASSWORD_FILE holds; errors name `name`, never the content."""
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


def env_name(field_name: str) -> str:
    """The variable a Settings field is read from: CALC_ unless it is a RABBITMQ_, DATABASE_ or OTEL_ one."""
    if field_name.startswith(("rabbitmq_", "database_", "otel_")):
        return field_name.upper()
    return "CALC_" + field_name.upper()


def shown(value: object) -> str:
    """A bad value as an error message repeats it: quoted, escaped to one line, cut short, and
    masked like a URL (a URL pasted into the wrong variable keeps its password)."""
    text = redact_url(str(value))
    return repr(text if len(text) <= SHOWN_MAX else text[:SHOWN_MAX] + "...")


def check_url(url: str) -> None:
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


def check_database_url(url: str) -> None:
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




def check_text(field_name: str, value: str, limit: int, *, empty: bool = False) -> None:
    """Printable, at most `limit` characters, and not empty unless `empty`."""
    name = env_name(field_name)
    if not value and not empty:
        raise ConfigurationError(f"{name} must not be empty")
    if not value.isprintable():
        raise ConfigurationError(f"{name} must not hold control or unprintable characters, "
                                 f"got {shown(value)}")
    if len(value) > limit:
        raise ConfigurationError(f"{name} must be at most {limit} characters, got {len(value)} characters")


def check_number(field_name: str, value: float, low: float, high: float, *,
                  above: bool = False) -> None:
    """`low <= value <= high` (`low < value` when `above`), and never nan or infinite."""
    name = env_name(field_name)
    fits = math.isfinite(value) and (value > low if above else value >= low) and value <= high
    if not fits:
        if above and high == math.inf:
            wanted = f"a number more than {low:g}"
        elif above:
            wanted = f"a number more than {low:g} and at most {high:g}"
        else:
            wanted = f"a number from {low:g} to {high:g}"
        raise ConfigurationError(f"{name} must be {wanted}, got {value!r}")


def check_whole(field_name: str, value: int, low: int, high: int) -> None:
    """`low <= value <= high`."""
    if not low <= value <= high:
        raise ConfigurationError(f"{env_name(field_name)} must be a whole number from {low} to "
                                 f"{high}, got {value}")


_WHOLE = re.compile(r"[+-]?[0-9]+")
_DECIMAL = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off")


def parse(name: str, raw: str, kind: object) -> object:
    """`raw` (stripped, not empty) as the field's type: plain ASCII decimals, no nan, inf, 0x or _."""
    if kind in ("float", float):
        if not _DECIMAL.fullmatch(raw):
            raise ConfigurationError(f"{name} has an invalid value {shown(raw)}: "
                                     "it must be a decimal number such as 1.5")
        return float(raw)  # overflows to inf (1e309), which validate() refuses
    if kind in ("int", int):
        if not _WHOLE.fullmatch(raw):
            raise ConfigurationError(f"{name} has an invalid value {shown(raw)}: it must be a whole number")
        if len(raw) > 30:  # int() refuses past 4300 digits; every bound here has under 12
            raise ConfigurationError(f"{name} has an invalid value {shown(raw)}: far out of range")
        return int(raw)
    if kind in ("bool", bool):
        lowered = raw.lower()
        if lowered not in _TRUE + _FALSE:
            raise ConfigurationError(f"{name} has an invalid value {shown(raw)}: it must be true or false")
        return lowered in _TRUE
    if kind in ("tuple[str, ...]",):
        return tuple(part.strip() for part in raw.split(",") if part.strip())
    return raw
