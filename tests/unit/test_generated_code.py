"""gen/ is exactly what scripts/gen_proto.sh makes from proto/calc.proto with the pinned protoc."""

from __future__ import annotations

import filecmp
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_gen_is_up_to_date(tmp_path: Path) -> None:
    copy = tmp_path / "repo"
    copy.mkdir()
    shutil.copytree(ROOT / "proto", copy / "proto")
    shutil.copytree(ROOT / "scripts", copy / "scripts")
    subprocess.run([str(copy / "scripts" / "gen_proto.sh")], check=True,
                   env={**os.environ, "PYTHON": sys.executable})
    fresh = sorted(p.name for p in (copy / "gen").iterdir() if p.is_file())
    committed = sorted(p.name for p in (ROOT / "gen").iterdir() if p.is_file())
    assert fresh == committed
    _, mismatch, errors = filecmp.cmpfiles(copy / "gen", ROOT / "gen", fresh, shallow=False)
    assert mismatch == [] and errors == [], f"regenerate with scripts/gen_proto.sh: {mismatch}"


def test_contract_field_numbers() -> None:
    """The field numbers of docs/contract.md: renumbering one breaks every reader."""
    from gen import calc_pb2

    def numbers(message: type) -> dict[str, int]:
        return {f.name: f.number for f in message.DESCRIPTOR.fields}  # type: ignore[attr-defined]

    assert calc_pb2.DESCRIPTOR.package == "calc.v1"
    assert numbers(calc_pb2.CalculationRequested) == {
        "event_id": 1, "occurred_at": 2, "operation": 3, "operands": 4, "source": 5}
    assert numbers(calc_pb2.CalculationCompleted) == {
        "event_id": 1, "request_event_id": 2, "occurred_at": 3, "operation": 4, "operands": 5,
        "result": 6, "processed_by": 7}
    assert numbers(calc_pb2.CalculationFailed) == {
        "event_id": 1, "request_event_id": 2, "occurred_at": 3, "operation": 4, "reason": 5,
        "detail": 6, "attempts": 7, "processed_by": 8}
    assert dict(calc_pb2.Operation.items()) == {
        "OPERATION_UNSPECIFIED": 0, "OPERATION_ADD": 1, "OPERATION_SUBTRACT": 2,
        "OPERATION_MULTIPLY": 3, "OPERATION_DIVIDE": 4, "OPERATION_MODULO": 5, "OPERATION_POWER": 6,
        "OPERATION_SQRT": 7, "OPERATION_FACTORIAL": 8}
    assert dict(calc_pb2.FailureReason.items()) == {
        "FAILURE_REASON_UNSPECIFIED": 0, "FAILURE_REASON_DIVISION_BY_ZERO": 1,
        "FAILURE_REASON_DOMAIN_ERROR": 2, "FAILURE_REASON_OVERFLOW": 3,
        "FAILURE_REASON_INVALID_ARGUMENTS": 4, "FAILURE_REASON_UNKNOWN_OPERATION": 5,
        "FAILURE_REASON_MALFORMED_MESSAGE": 6, "FAILURE_REASON_RETRIES_EXHAUSTED": 7}
