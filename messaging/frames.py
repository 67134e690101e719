"""Decoding AMQP frames so that no message can take a connection down: what pamqp cannot read
becomes a delivery that says why.

pamqp decodes short strings and field-table keys as strict UTF-8, and raises on other values it
cannot convert (a timestamp past year 9999, an unknown field type, nesting deeper than Python's
stack). aiormq then drops the whole connection, and the broker hands the same message to the
next consumer, again and again. AMQP short strings are octets and RabbitMQ relays such messages
unchanged, so any client can publish one. `install()` puts `unmarshal` where aiormq calls the
decoder: every frame pamqp reads goes through untouched (one try block), and a frame it cannot
read is decoded again leniently:

- a short string or table key that is not UTF-8 becomes a str with its bytes surrogate-escaped
  (lossless: `encode("utf-8", "surrogateescape")` gives the bytes back, and pamqp refuses to
  encode it, so it cannot leak into another message by accident);
- a value that cannot be converted is kept raw (a header timestamp as its integer) or dropped
  (a timestamp property; the rest of a table after an unknown type; nesting past MAX_DEPTH);
- a content header gets one more header, UNDECODABLE, naming every such field. Its key holds a
  character no decoding of the wire produces, so no client can forge it.

tests/unit/test_frames.py feeds aiormq's own frame reader and fails if an upgrade of pamqp or
aiormq goes around this.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable
from typing import Any

import pamqp.frame
from pamqp import commands, constants, decode, encode, header
from pamqp.base import Frame

log = logging.getLogger(__name__)

UNDECODABLE = "\udc00undecodable"
"""Header key of the problems found in a leniently decoded content header. U+DC00 is a lone
surrogate: strict UTF-8 never decodes to one, surrogateescape only to U+DC80..U+DCFF."""

MAX_DEPTH = 32
"""Nesting of tables and arrays decoded; deeper content is dropped (and named)."""

FrameTuple = tuple[int, int, Any]


class RawTimestamp(int):
    """A header timestamp out of datetime's range, kept as its number (and sent again as a timestamp)."""

_strict: Callable[[bytes], FrameTuple] = pamqp.frame.unmarshal


def escaped(raw: bytes | str) -> str:
    """Printable text of octets or of a surrogate-escaped str: `\\xff` for what is not UTF-8."""
    if isinstance(raw, bytes):
        return raw.decode("utf-8", "backslashreplace")
    try:
        data = raw.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:  # a surrogate no decoding of octets produced
        data = raw.encode("utf-8", "backslashreplace")
    return data.decode("utf-8", "backslashreplace")


def printable(text: str) -> str:
    """`text` safe for a terminal line: bytes that were not UTF-8 as `\\xff`, control characters
    (newlines, escape sequences) as Python escapes."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in escaped(text))


def octets(value: str) -> bytes:
    """The wire bytes of a short string this module decoded (the inverse of the escape)."""
    return value.encode("utf-8", "surrogateescape")


class OctetProperties(commands.Basic.Properties):
    """Basic.Properties that send the octets of surrogate-escaped strings as they came (pamqp
    refuses them), for a message sent on as it was received: a retry, a replay."""

    def encode_property(self, name: str, value: Any) -> bytes:
        kind = self.amqp_type(name)
        if kind == "shortstr" and isinstance(value, str) and not value.isascii():
            raw = octets(value)
            return struct.pack(">B", len(raw)) + raw
        if kind == "table" and isinstance(value, dict):
            return _octet_table(value)
        return super().encode_property(name, value)


def _octet_table(table: dict[str, Any], depth: int = 0) -> bytes:
    if depth > MAX_DEPTH:
        raise ValueError(f"headers nested deeper than {MAX_DEPTH} levels")
    parts = []
    for key, item in table.items():
        raw = octets(key)
        parts.append(struct.pack(">B", len(raw)) + raw + _octet_value(item, depth + 1))
    data = b"".join(parts)
    return struct.pack(">I", len(data)) + data


def _octet_value(item: Any, depth: int) -> bytes:
    if isinstance(item, str):
        raw = octets(item)
        return b"S" + struct.pack(">I", len(raw)) + raw
    if isinstance(item, bytes):  # a long string that was not UTF-8: the same octets again
        return b"S" + struct.pack(">I", len(item)) + item
    if isinstance(item, dict):
        return b"F" + _octet_table(item, depth)
    if isinstance(item, list):
        if depth > MAX_DEPTH:
            raise ValueError(f"headers nested deeper than {MAX_DEPTH} levels")
        data = b"".join(_octet_value(inner, depth + 1) for inner in item)
        return b"A" + struct.pack(">I", len(data)) + data
    if isinstance(item, RawTimestamp):
        return b"T" + struct.pack(">Q", item)
    if isinstance(item, float):  # pamqp would send a 4-byte float: a double stays a double
        return b"d" + struct.pack(">d", item)
    return encode.encode_table_value(item)


def unmarshal(data: bytes) -> FrameTuple:
    """pamqp's `frame.unmarshal`, and for a frame it cannot decode, the lenient decoding."""
    try:
        return _strict(data)
    except Exception as exc:
        frame = _lenient_frame(data)
        if frame is None:
            raise
        log.warning("undecodable AMQP frame decoded leniently", extra={"calc_fields": {
            "frame": type(frame[2]).__name__, "error": escaped(str(exc))}})
        return frame


def install() -> None:
    """Make aiormq decode every frame through `unmarshal` (idempotent)."""
    pamqp.frame.unmarshal = unmarshal  # type: ignore[assignment]


def installed() -> bool:
    return pamqp.frame.unmarshal is unmarshal


def _lenient_frame(data: bytes) -> FrameTuple | None:
    frame_type, channel, size = pamqp.frame.frame_parts(data)
    if size is None:
        return None
    end = constants.FRAME_HEADER_SIZE + size + 1
    if len(data) < end or data[end - 1] != constants.FRAME_END:
        return None  # the stream itself is broken: nothing to recover
    payload = data[constants.FRAME_HEADER_SIZE:end - 1]
    try:
        if frame_type == constants.FRAME_HEADER:
            return end, channel, content_header(payload)
        if frame_type == constants.FRAME_METHOD:
            return end, channel, _method(payload)
    except Exception:  # a frame even the lenient decoding cannot read: the stream is broken
        return None
    return None


def content_header(payload: bytes) -> header.ContentHeader:
    """A content header whose properties are read field by field; problems go to UNDECODABLE."""
    class_id, weight, body_size = struct.unpack(">HHQ", payload[0:12])  # or the stream is broken
    frame = header.ContentHeader(weight, body_size)
    frame.class_id = class_id
    problems: list[str] = []
    properties = commands.Basic.Properties()
    try:
        offset, flags = _flags(payload, 12)
        for name in properties.__slots__:
            if flags & properties.flags[name]:
                kind = getattr(commands.Basic.Properties, "_" + name)
                offset, value = _Reader(payload, problems).value(kind, offset, name)
                setattr(properties, name, value)
    except Exception as exc:  # truncated or inconsistent: keep what was read before it
        problems.append(f"properties: cannot be decoded past this point ({escaped(str(exc))})")
    headers = properties.headers if isinstance(properties.headers, dict) else {}
    headers[UNDECODABLE] = "; ".join(problems) or "content header could not be decoded"
    properties.headers = headers
    frame.properties = properties
    return frame


def _flags(payload: bytes, offset: int) -> tuple[int, int]:
    flags, word = 0, 0
    while True:
        (partial,) = struct.unpack_from(">H", payload, offset)
        offset += 2
        flags |= partial << (word * 16)
        if not partial & 1:
            return offset, flags
        word += 1


def _method(payload: bytes) -> Frame:
    """A method frame whose short strings and tables are read leniently (e.g. a routing key)."""
    (index,) = struct.unpack_from(">I", payload, 0)
    method: Frame = commands.INDEX_MAPPING[index]()
    reader = _Reader(payload, [])
    offset, bit_offset, in_bits = 4, 0, False
    for name in method.__slots__:
        kind = method.amqp_type(name)
        if in_bits and (kind != "bit" or bit_offset == 8):
            offset, bit_offset, in_bits = offset + 1, 0, False
        if kind == "bit":
            value: Any = bool(payload[offset] & (1 << bit_offset))
            bit_offset, in_bits = bit_offset + 1, True
        else:
            offset, value = reader.value(kind, offset, name)
        setattr(method, name, value)
    return method


class _Reader:
    """Reads AMQP values at an offset; what pamqp would raise on is noted in `problems`."""

    def __init__(self, data: bytes, problems: list[str]) -> None:
        self.data = data
        self.problems = problems

    def value(self, kind: str, offset: int, where: str, depth: int = 0) -> tuple[int, Any]:
        if kind == "shortstr":
            return self._short_str(offset, where)
        if kind == "table":
            return self._table(offset, where, depth)
        if kind == "timestamp":
            return self._timestamp(offset, where, keep_raw=False)
        consumed, value = decode.by_type(self.data[offset:], kind)
        return offset + consumed, value

    def _short_str(self, offset: int, where: str) -> tuple[int, str]:
        length = self.data[offset]
        raw = self.data[offset + 1:offset + 1 + length]
        if len(raw) != length:
            raise ValueError(f"{where} is truncated")
        try:
            return offset + 1 + length, raw.decode("utf-8")
        except UnicodeDecodeError:
            self.problems.append(f"{where} is not UTF-8: {escaped(raw)}")
            return offset + 1 + length, raw.decode("utf-8", "surrogateescape")

    def _timestamp(self, offset: int, where: str, keep_raw: bool) -> tuple[int, Any]:
        try:
            consumed, value = decode.timestamp(self.data[offset:])
            return offset + consumed, value
        except (ValueError, OverflowError, OSError):
            (raw,) = struct.unpack_from(">Q", self.data, offset)
            self.problems.append(f"{where}: timestamp {raw} is out of range")
            return offset + 8, RawTimestamp(raw) if keep_raw else None

    def _table(self, offset: int, where: str, depth: int) -> tuple[int, dict[str, Any]]:
        end, fields = self._container(offset, where, depth, keyed=True)
        return end, dict(fields)

    def _array(self, offset: int, where: str, depth: int) -> tuple[int, list[Any]]:
        end, fields = self._container(offset, where, depth, keyed=False)
        return end, [item for _, item in fields]

    def _container(self, offset: int, where: str, depth: int,
                   keyed: bool) -> tuple[int, list[tuple[str, Any]]]:
        """The (key, value) fields of a table (`keyed`) or an array (keys ""), and where it ends.

        Its length is checked against the frame, its depth against MAX_DEPTH (deeper: dropped);
        a field of unknown type ends it, since the fields after it cannot be located.
        """
        (length,) = struct.unpack_from(">I", self.data, offset)
        position, end = offset + 4, offset + 4 + length
        if end > len(self.data):
            raise ValueError(f"{where}: {'table' if keyed else 'array'} runs past the frame")
        fields: list[tuple[str, Any]] = []
        if depth >= MAX_DEPTH:
            self.problems.append(f"{where}: nested deeper than {MAX_DEPTH} levels (dropped)")
            return end, fields
        while position < end:
            if keyed:
                position, key = self._short_str(position, f"{where} key")
                inner = f"{where}[{escaped(key)!r}]"
            else:
                key, inner = "", f"{where}[{len(fields)}]"
            position, item, complete = self._field(position, inner, depth + 1)
            if not complete:
                break
            fields.append((key, item))
        return end, fields

    def _field(self, offset: int, where: str, depth: int) -> tuple[int, Any, bool]:
        """One typed field value; `complete` is False when its type is unknown (the rest of the
        container cannot be located)."""
        tag = self.data[offset:offset + 1]
        offset += 1
        if tag == b"F":
            return (*self._table(offset, where, depth), True)
        if tag == b"A":
            return (*self._array(offset, where, depth), True)
        if tag == b"T":
            return (*self._timestamp(offset, where, keep_raw=True), True)
        decoder = decode.TABLE_MAPPING.get(tag)
        if decoder is None:
            self.problems.append(f"{where}: unknown field type {escaped(tag)!r} (rest dropped)")
            return offset, None, False
        consumed, value = decoder(self.data[offset:])
        return offset + consumed, value, True
