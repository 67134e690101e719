"""The lenient frame decoder: every content header pamqp cannot decode still becomes a frame, through
aiormq's own frame reader, with the undecodable fields named."""

from __future__ import annotations

import asyncio
import struct
from datetime import UTC, datetime

import pamqp.frame
import pytest
from aiormq.connection import FrameReceiver
from hypothesis import given, settings
from hypothesis import strategies as st
from pamqp import commands, header

from messaging import frames

frames.install()


def _header_frame(properties: commands.Basic.Properties, *patches: tuple[bytes, bytes]) -> bytes:
    """A content header frame on channel 1, with byte patches applied to its payload."""
    payload = header.ContentHeader(0, 3, properties).marshal()
    for old, new in patches:
        assert len(old) == len(new) and payload.count(old) == 1, old
        payload = payload.replace(old, new)
    return struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"


def _nested_arrays(depth: int) -> bytes:
    value = b"b\x01"
    for _ in range(depth):
        value = b"A" + struct.pack(">I", len(value)) + value
    return value


def _deep_header_frame(depth: int) -> bytes:
    table = b"\x04deep" + _nested_arrays(depth)
    flags = 0x2000  # headers only
    payload = struct.pack(">HHQH", 60, 0, 3, flags) + struct.pack(">I", len(table)) + table
    return struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"


POISON = {
    "correlation_id": (_header_frame(commands.Basic.Properties(correlation_id="AAAA"),
                                     (b"AAAA", b"\xff\xfeAA")), "correlation_id is not UTF-8: \\xff\\xfeAA"),
    "message_id": (_header_frame(commands.Basic.Properties(message_id="MMMM"),
                                 (b"MMMM", b"M\xc3(M")), "message_id is not UTF-8"),
    "content_type": (_header_frame(commands.Basic.Properties(content_type="CCCC"),
                                   (b"CCCC", b"\x80CCC")), "content_type is not UTF-8"),
    "app_id": (_header_frame(commands.Basic.Properties(app_id="PPPP"), (b"PPPP", b"\xedPPP")),
               "app_id is not UTF-8"),
    "header key": (_header_frame(commands.Basic.Properties(headers={"KKKKKK": 1}),
                                 (b"KKKKKK", b"\xff\xfe-kKK")), "headers key is not UTF-8"),
    "nested key": (_header_frame(commands.Basic.Properties(headers={"outer": {"NNNN": 1}}),
                                 (b"NNNN", b"\xffNNN")), "headers['outer'] key is not UTF-8"),
    "key in array": (_header_frame(commands.Basic.Properties(headers={"a": [1, {"QQQQ": 2}]}),
                                   (b"QQQQ", b"\xfeQQQ")), "headers['a'][1] key is not UTF-8"),
    "header timestamp": (_header_frame(
        commands.Basic.Properties(headers={"t": datetime(2020, 1, 1, tzinfo=UTC)}),
        (struct.pack(">Q", 1577836800), b"\x7f" + b"\xff" * 7)), "headers['t']: timestamp"),
    "timestamp property": (_header_frame(
        commands.Basic.Properties(timestamp=datetime(2020, 1, 1, tzinfo=UTC)),
        (struct.pack(">Q", 1577836800), b"\xff" * 8)), "timestamp: timestamp"),
    "unknown field type": (_header_frame(commands.Basic.Properties(headers={"u": 1}), (b"\x01ub", b"\x01u?")),
                           "headers['u']: unknown field type"),
    "nested too deep": (_deep_header_frame(5000), "nested deeper than"),
}


async def _read(data: bytes) -> object:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    reader.feed_eof()
    _, _, frame = await FrameReceiver(reader).get_frame()
    return frame


@pytest.mark.parametrize("case", sorted(POISON))
def test_pamqp_cannot_decode_the_poison(case: str) -> None:
    """The premise: each of these frames makes the strict decoder raise (else the case tests nothing)."""
    with pytest.raises(Exception):  # noqa: B017 - whatever pamqp raises: ValueError, OverflowError...
        frames._strict(POISON[case][0])


@pytest.mark.parametrize("case", sorted(POISON))
async def test_aiormqs_frame_reader_returns_a_header_naming_the_field(case: str) -> None:
    data, named = POISON[case]
    frame = await _read(data)
    assert isinstance(frame, header.ContentHeader)
    assert frame.body_size == 3
    problems = frame.properties.headers[frames.UNDECODABLE]
    assert named in problems


async def test_the_decoder_aiormq_calls_is_the_lenient_one() -> None:
    """Fails if pamqp or aiormq stop calling pamqp.frame.unmarshal through the module attribute."""
    assert frames.installed()
    assert pamqp.frame.unmarshal is frames.unmarshal


async def test_good_frames_are_pamqps_own_decoding() -> None:
    properties = commands.Basic.Properties(correlation_id="c-1", headers={"attempt": 2})
    frame = await _read(_header_frame(properties))
    assert isinstance(frame, header.ContentHeader)
    assert frame.properties == properties
    assert frames.UNDECODABLE not in frame.properties.headers


async def test_undecodable_bytes_are_kept_and_pamqp_refuses_to_send_them() -> None:
    frame = await _read(POISON["correlation_id"][0])
    assert isinstance(frame, header.ContentHeader)
    value = frame.properties.correlation_id
    assert frames.octets(value) == b"\xff\xfeAA"
    assert frames.escaped(value) == "\\xff\\xfeAA"
    with pytest.raises(UnicodeEncodeError):
        header.ContentHeader(0, 3, frame.properties).marshal()


async def test_the_marker_cannot_come_from_the_wire() -> None:
    """A client that names a header like the marker gets it surrogate-escaped, never equal."""
    forged = frames.UNDECODABLE.encode("utf-8", "surrogatepass")
    data = _header_frame(commands.Basic.Properties(headers={"x" * len(forged): "forged"}),
                         (b"x" * len(forged), forged))
    frame = await _read(data)
    assert isinstance(frame, header.ContentHeader)
    keys = set(frame.properties.headers)
    assert keys - {frames.UNDECODABLE} and frames.UNDECODABLE in keys
    assert "forged" not in frame.properties.headers[frames.UNDECODABLE]


async def test_a_routing_key_that_is_not_utf8_is_kept_escaped() -> None:
    deliver = commands.Basic.Deliver("ctag", 7, False, "calc.requests", "calc.requested.RRRR")
    payload = struct.pack(">I", deliver.index) + deliver.marshal()
    payload = payload.replace(b"RRRR", b"\xff\xfeRR")
    frame = await _read(struct.pack(">BHI", 1, 1, len(payload)) + payload + b"\xce")
    assert isinstance(frame, commands.Basic.Deliver)
    assert frame.delivery_tag == 7 and frame.exchange == "calc.requests"
    assert frames.octets(frame.routing_key) == b"calc.requested.\xff\xfeRR"


async def test_a_broken_stream_still_raises() -> None:
    data = bytearray(POISON["correlation_id"][0])
    data[-1] = 0  # no frame end octet
    with pytest.raises(Exception):  # noqa: B017
        frames.unmarshal(bytes(data))


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300))
def test_any_property_bytes_give_a_header_frame(tail: bytes) -> None:
    """Whatever follows the flags, the decoder returns the whole frame: pamqp's own where pamqp can
    read it, else one naming a problem."""
    payload = struct.pack(">HHQH", 60, 0, 5, 0xFFF8) + tail
    data = struct.pack(">BHI", 2, 1, len(payload)) + payload + b"\xce"
    try:
        frames._strict(data)
        strict_ok = True
    except Exception:
        strict_ok = False
    consumed, channel, frame = frames.unmarshal(data)
    assert (consumed, channel) == (len(data), 1)
    assert isinstance(frame, header.ContentHeader)
    assert frame.body_size == 5
    assert (frames.UNDECODABLE in (frame.properties.headers or {})) is not strict_ok


@pytest.mark.parametrize("case", ["correlation_id", "header key", "nested key", "key in array",
                                  "header timestamp"])
async def test_what_was_read_is_sent_again_as_the_same_octets(case: str) -> None:
    """A retry or a replay (OctetProperties) writes back the octets a lenient decoding kept."""
    data = POISON[case][0]
    frame = await _read(data)
    assert isinstance(frame, header.ContentHeader)
    values = {name: getattr(frame.properties, name) for name in frame.properties.__slots__}
    values["headers"] = {k: v for k, v in (values["headers"] or {}).items() if k != frames.UNDECODABLE}
    again = frames.OctetProperties(**{k: v for k, v in values.items() if v is not None and v != {}})
    assert header.ContentHeader(0, 3, again).marshal() == data[7:-1]


def test_headers_nested_past_the_limit_are_not_encoded() -> None:
    deep: object = 1
    for _ in range(frames.MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(ValueError, match="nested deeper"):
        frames.OctetProperties(headers={"deep": deep}).marshal()


def test_a_double_and_octets_that_are_not_utf8_are_sent_as_they_came() -> None:
    properties = frames.OctetProperties(headers={"big": 1e300, "raw": b"\xff"})
    encoded = properties.marshal()
    assert b"\x03bigd" + struct.pack(">d", 1e300) in encoded and b"\x03rawS\x00\x00\x00\x01\xff" in encoded
