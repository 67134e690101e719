"""What `get` and `stats` print: key/value blocks and tables for people, JSON for machines."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

PENDING = "pending"


def jsonable(value: Any) -> Any:
    """`value` with datetimes as ISO 8601 and non-finite floats as strings (JSON has neither)."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def lookup_json(key: str, rows: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """The answer of `get --json` and /results/ID: the rows found, or status pending."""
    if not rows:
        return {"id": key, "status": PENDING, "results": []}
    own = [r for r in rows if r["request_event_id"] == key]
    status = own[0]["status"] if own else "correlation"
    return {"id": key, "status": status, "results": [jsonable(dict(r)) for r in rows]}


def _answer(row: Mapping[str, Any]) -> str:
    if row["status"] == "completed":
        return f"result {row['result']!r}"
    return f"reason {row['reason']} ({row['detail']})"


def lookup_text(key: str, rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return (f"{key}: {PENDING} (no outcome recorded: never answered yet, or never sent; "
                "the id is a request event_id or a correlation_id)")
    blocks = []
    for row in rows:
        operands = "-" if row["operands"] is None else ", ".join(f"{x:g}" for x in row["operands"])
        lines = [
            ("request_event_id", row["request_event_id"]),
            ("status", f"{row['status']}: {_answer(row)}"),
            ("operation", f"{row['operation']} ({operands})"),
            ("attempts", row["attempts"]),
            ("correlation_id", row["correlation_id"]),
            ("processed_by", row["processed_by"]),
            ("outcome_event_id", row["outcome_event_id"]),
            ("outcomes seen", f"{row['outcomes']} ({row['outcomes'] - 1} duplicates, "
                              f"{row['failures']} failures)"),
            ("first outcome", row["first_outcome_at"].isoformat()),
            ("last outcome", row["last_outcome_at"].isoformat()),
        ]
        blocks.append("\n".join(f"{name:17} {value}" for name, value in lines))
    return "\n\n".join(blocks)


def _counts(counts: Mapping[str, int]) -> str:
    return ", ".join(f"{k} {n:,}" for k, n in counts.items()) or "-"


def stats_text(stats: Mapping[str, Any]) -> str:
    rows = [
        ("requests", f"{stats['requests']:,}"),
        ("outcome events", f"{stats['outcomes']:,}"),
        ("duplicates", f"{stats['duplicates']:,} (over {stats['duplicated_requests']:,} requests)"),
        ("completed after failing", f"{stats['completed_after_failure']:,}"),
        ("by status", _counts(stats["by_status"])),
        ("by reason", _counts(stats["by_reason"])),
        ("by operation", _counts(stats["by_operation"])),
        ("first outcome", stats["first_outcome_at"].isoformat() if stats["first_outcome_at"] else "-"),
        ("last outcome", stats["last_outcome_at"].isoformat() if stats["last_outcome_at"] else "-"),
    ]
    return "\n".join(f"{name:24} {value}" for name, value in rows)


def dumps(data: Any) -> str:
    return json.dumps(jsonable(data))  # one line: the --json convention (docs/operations.md)
