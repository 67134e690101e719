"""asyncapi.yaml agrees with the topology declaration and the proto (names, keys, fields) and
points at the contract, docs/contract.md."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from google.protobuf.descriptor import FieldDescriptor

from calculator import Operation
from gen import calc_pb2
from messaging import codec, topology
from messaging.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DOC: dict[str, Any] = yaml.safe_load((ROOT / "asyncapi.yaml").read_text())
TABLE = topology.build(Settings())
EXCHANGES = {e.name: e for e in TABLE.exchanges}
QUEUES = {q.name: q for q in TABLE.queues}


def _amqp(channel: str) -> dict[str, Any]:
    binding: dict[str, Any] = DOC["channels"][channel]["bindings"]["amqp"]
    return binding


def test_is_asyncapi_3_with_every_operation_reference_resolving() -> None:
    assert DOC["asyncapi"].startswith("3.")
    for operation in DOC["operations"].values():
        name = operation["channel"]["$ref"].removeprefix("#/channels/")
        assert name in DOC["channels"]


def test_exchanges_and_routing_keys_match_the_topology() -> None:
    words = [op.word for op in Operation]
    for channel, exchange, prefix in (("calcRequested", topology.REQUESTS_EXCHANGE, "calc.requested."),
                                      ("calcCompleted", topology.RESULTS_EXCHANGE, "calc.completed."),
                                      ("calcFailed", topology.RESULTS_EXCHANGE, "calc.failed.")):
        declared = _amqp(channel)["exchange"]
        assert declared["name"] == exchange and declared["type"] == EXCHANGES[exchange].kind.value
        assert DOC["channels"][channel]["address"] == prefix + "{operation}"
    assert DOC["channels"]["calcRequested"]["parameters"]["operation"]["enum"] == words
    assert topology.requested_key("add").startswith("calc.requested.")
    assert topology.completed_key("add").startswith("calc.completed.")
    assert topology.failed_key("add").startswith("calc.failed.")


def test_queues_match_the_topology() -> None:
    queues = {_amqp(name)["queue"]["name"]: name for name in DOC["channels"]
              if _amqp(name)["is"] == "queue"}
    expected = {q for q in QUEUES if not q.startswith(topology.RETRY_PREFIX)}
    assert set(queues) == expected
    for queue, channel in queues.items():
        assert DOC["channels"][channel]["address"] == queue
    basic = {key for _, key in QUEUES["calc.work.basic"].bindings}
    described = DOC["channels"]["workBasic"]["description"]
    assert all(key.removeprefix("calc.requested.") in described for key in basic)


_TYPES = {FieldDescriptor.TYPE_STRING: "string", FieldDescriptor.TYPE_DOUBLE: "double",
          FieldDescriptor.TYPE_UINT32: "uint32"}


def _proto_fields(message: Any) -> set[tuple[str, str, int]]:
    out = set()
    for f in message.DESCRIPTOR.fields:
        if f.message_type is not None:
            kind = "google.protobuf.Timestamp"
        elif f.enum_type is not None:
            kind = f.enum_type.name
        else:
            kind = _TYPES[f.type]
        if f.is_repeated:
            kind = "repeated " + kind
        out.add((kind, f.name, f.number))
    return out


def test_messages_match_the_proto() -> None:
    for message in (calc_pb2.CalculationRequested, calc_pb2.CalculationCompleted,
                    calc_pb2.CalculationFailed):
        full_name = message.DESCRIPTOR.full_name
        spec = DOC["components"]["messages"][message.DESCRIPTOR.name]
        assert spec["name"] == full_name
        assert full_name in (codec.TYPE_REQUESTED, codec.TYPE_COMPLETED, codec.TYPE_FAILED)
        schema = spec["payload"]["schema"]
        assert spec["payload"]["schemaFormat"].startswith("application/vnd.google.protobuf")
        fields = {(m[0].strip(), m[1], int(m[2]))
                  for m in re.findall(r"^\s*([\w. ]+?)\s+(\w+)\s*=\s*(\d+);", schema, flags=re.M)}
        assert fields == _proto_fields(message), full_name
    assert DOC["defaultContentType"] == codec.CONTENT_TYPE


def test_points_at_the_contract_in_this_repository() -> None:
    assert "docs/contract.md" in DOC["info"]["description"]
    assert (ROOT / "docs" / "contract.md").exists()
