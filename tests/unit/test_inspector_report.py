"""Report aggregation, selections, rendering and the serve metrics, without a broker."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator, Sequence
from datetime import UTC, datetime, timedelta

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from calculator import Operation
from dlq_inspector import render
from dlq_inspector.explain import OPERATION_CHOICES, REASONS, Explanation, explain
from dlq_inspector.letters import DeadLetter
from dlq_inspector.metrics import DlqCollector
from dlq_inspector.report import Report, summarize
from dlq_inspector.selection import Found, Selection
from dlq_inspector.serve import State
from messaging import codec

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def dead(operation: Operation, operands: Sequence[float], at: datetime | None, event_id: str,
         reason: str = "rejected") -> DeadLetter:
    request = codec.build_request(operation, list(operands), "unit", event_id=event_id)
    key = f"calc.requested.{operation.word}"
    deaths = [{"reason": reason, "queue": "calc.work.basic", "time": at, "routing-keys": [key]}] if at else []
    return DeadLetter(request.SerializeToString(), key, "calc.dlx", {"message_id": event_id},
                      {"attempt": 1, "x-death": deaths} if deaths else {"attempt": 1})


def explained(*letters: DeadLetter) -> list[Explanation]:
    return [explain(letter, 65_536, 4) for letter in letters]


SAMPLE = explained(
    dead(Operation.DIVIDE, (1, 0), T0 + timedelta(minutes=5), "a"),
    dead(Operation.MODULO, (1, 0), T0, "b"),
    dead(Operation.SQRT, (-1,), T0 + timedelta(minutes=1), "c"),
    dead(Operation.ADD, (1, 2), T0 + timedelta(minutes=2), "d"),  # rejected but computable
    dead(Operation.ADD, (1, 2), None, "e"),  # no x-death: no death time
    dead(Operation.DIVIDE, (4, 2), T0 + timedelta(minutes=3), "f", reason="expired"),
)


def test_counts_add_up_and_ages_come_from_death_times() -> None:
    report = Report()
    for e in SAMPLE:
        report.add(e)
    assert report.total == 6
    assert dict(report.by_reason) == {"DIVISION_BY_ZERO": 2, "DOMAIN_ERROR": 1, "RETRIES_EXHAUSTED": 2,
                                      "EXPIRED": 1}
    assert dict(report.by_operation) == {"divide": 2, "modulo": 1, "sqrt": 1, "add": 2}
    assert sum(report.by_routing_key.values()) == 6
    assert report.oldest_death == T0 and report.newest_death == T0 + timedelta(minutes=5)
    assert report.oldest_age(T0 + timedelta(hours=1)) == 3600
    assert report.bytes == sum(len(e.letter.body) for e in SAMPLE)
    reasons = report.reasons()
    assert list(reasons)[: len(REASONS)] == list(REASONS)
    assert reasons["OVERFLOW"] == 0 and sum(reasons.values()) == 6
    data = report.as_json()
    assert list(data["by_reason"]) == ["DIVISION_BY_ZERO", "RETRIES_EXHAUSTED", "DOMAIN_ERROR", "EXPIRED"]
    assert data["oldest_death"] == T0.isoformat() and data["complete"] is True


def test_empty_report() -> None:
    report = Report()
    assert report.oldest_age() is None
    assert report.as_json()["oldest_age_seconds"] is None
    assert render.report_text(report) == "calc.dlq: 0 messages (0 bytes)"


async def test_summarize_streams_letters() -> None:
    async def letters() -> AsyncIterator[DeadLetter]:
        for e in SAMPLE:
            yield e.letter

    report = await summarize(letters(), 65_536, 4)
    assert report.total == 6 and report.by_reason["DIVISION_BY_ZERO"] == 2


def test_selection_by_id_reason_and_operation() -> None:
    by_id = [e.event_id for e in SAMPLE if Selection(ids=frozenset({"b", "zz"})).matches(e)]
    assert by_id == ["b"]
    by_reason = [e.event_id for e in SAMPLE if Selection(reasons=frozenset({"DIVISION_BY_ZERO"})).matches(e)]
    assert by_reason == ["a", "b"]
    both = Selection(reasons=frozenset({"DIVISION_BY_ZERO"}), operations=frozenset({"modulo"}))
    assert [e.event_id for e in SAMPLE if both.matches(e)] == ["b"]
    assert all(Selection().matches(e) for e in SAMPLE)
    assert Selection().describe() == "every message"
    assert both.describe() == "reason DIVISION_BY_ZERO, operation modulo"
    found = Found(frozenset({"b", "zz"}))
    for e in SAMPLE:
        found.note(e)
    assert found.missing == ["zz"]


def test_report_table_for_people() -> None:
    report = Report()
    for e in SAMPLE:
        report.add(e)
    report.scanned_at = T0 + timedelta(hours=2, minutes=3)
    text = render.report_text(report)
    assert text.startswith("calc.dlq: 6 messages")
    assert "oldest death 2026-01-01 00:00:00Z (2h 3m ago)" in text
    lines = text.splitlines()
    assert any(line.split() == ["DIVISION_BY_ZERO", "2", "33.3%"] for line in lines)
    assert any(line.split() == ["calc.requested.add", "2", "33.3%"] for line in lines)
    report.complete, report.expected = False, 10
    assert "read 6 of 10 messages" in render.report_text(report)


def test_list_rows_are_fixed_width_and_show_text_has_everything() -> None:
    rows = [render.list_row(e) for e in SAMPLE]
    header = render.list_header()
    assert header.index("EVENT_ID") == rows[0].index("a ")
    assert "DIVISION_BY_ZERO" in rows[0] and "1, 0" in rows[0] and "2026-01-01 00:05:00Z" in rows[0]
    text = render.show_text(SAMPLE[0])
    for part in ("reason                DIVISION_BY_ZERO", "OPERATION_DIVIDE", "x-death (1 entry",
                 "queue=calc.work.basic", "attempt"):
        assert part in text
    record = render.show_json(SAMPLE[0])
    assert record["request"]["operation"] == "OPERATION_DIVIDE"
    assert record["deaths"][0]["reason"] == "rejected"


def test_ages_read_well() -> None:
    assert [render.age(s) for s in (None, 5, 65, 3700, 90000)] == ["-", "5s", "1m 5s", "1h 1m", "1d 1h"]
    assert render.table(["A", "N"], [("x", 1), ("long", 22)], right=(1,)).splitlines() == [
        "A      N", "----  --", "x      1", "long  22"]


def test_progress_writes_lines_when_not_a_terminal() -> None:
    quick = io.StringIO()
    progress = render.Progress(quick, "replay", every=3600)
    progress.update("1")
    progress.update("2", force=True)
    assert quick.getvalue() == ""  # a run shorter than `every` shows nothing
    out = io.StringIO()
    progress = render.Progress(out, "replay", every=0.0)
    progress.update("1")
    progress.every = 3600
    progress.update("2")  # throttled
    progress.update("3", force=True)
    progress.done()
    lines = out.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["replay: 1", "replay: 3"]


def dlq_series(text: str) -> dict[tuple[str, str], float]:
    """The calc_dlq_messages samples of a scrape, by (reason, operation)."""
    return {(s.labels["reason"], s.labels["operation"]): s.value
            for family in text_string_to_metric_families(text) if family.name == "calc_dlq_messages"
            for s in family.samples}


def test_metrics_come_from_the_last_report() -> None:
    state = State(interval=30)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DlqCollector(state))
    assert b"calc_dlq_messages" not in generate_latest(registry)  # nothing before the first scan
    report = Report()
    for e in SAMPLE:
        report.add(e)
    state.report, state.last_success, state.scans = report, time.time(), 1
    text = generate_latest(registry).decode()
    series = dlq_series(text)
    assert sum(series.values()) == 6 == report.total  # sum(calc_dlq_messages) is the DLQ's size
    assert {pair: n for pair, n in series.items() if n} == {
        ("DIVISION_BY_ZERO", "divide"): 1, ("DIVISION_BY_ZERO", "modulo"): 1,
        ("DOMAIN_ERROR", "sqrt"): 1, ("RETRIES_EXHAUSTED", "add"): 2, ("EXPIRED", "divide"): 1}
    # every known pair has its series, 0 when empty; the three old gauges are gone
    assert set(series) == {(r, o) for r in REASONS for o in OPERATION_CHOICES}
    assert 'calc_dlq_messages{operation="add",reason="MAXLEN"} 0.0' in text
    assert "calc_dlq_messages_by_" not in text and "\ncalc_dlq_messages " not in text
    assert "calc_dlq_scans_total 1.0" in text and "calc_dlq_scan_errors_total 0.0" in text
    age = float(text.split("\ncalc_dlq_oldest_age_seconds ")[1].split()[0])
    assert abs(age - (report.oldest_age() or 0)) < 5  # computed at scrape time, not at scan time


def test_an_operation_outside_the_enum_is_one_bounded_series() -> None:
    """Forged operation numbers are countless; their series is `unknown`, as `--operation` calls it."""
    report = Report()
    for number in (42, 43, 10**6):
        request = codec.build_request(number, [1.0, 2.0], "unit", event_id=f"op-{number}")
        report.add(explain(DeadLetter(request.SerializeToString(), "calc.requested.add", "calc.dlx",
                                      {"message_id": request.event_id}, {"attempt": 1}), 65_536, 4))
    state = State(report=report, last_success=time.time())
    registry = CollectorRegistry(auto_describe=False)
    registry.register(DlqCollector(state))
    series = dlq_series(generate_latest(registry).decode())
    assert series[("UNKNOWN_OPERATION", "unknown")] == 3
    assert len(report.by_operation) == 3  # the report still names each
    assert set(series) == {(r, o) for r in REASONS for o in OPERATION_CHOICES}


def test_health_follows_the_last_successful_scan() -> None:
    state = State(interval=10)
    assert state.healthy() == (False, "no scan finished yet")
    state.last_success = 1000.0
    assert state.healthy(now=1030.0) == (True, "ok")
    state.last_error = "broker down"
    ok, why = state.healthy(now=1000.0 + 61)
    assert not ok and "broker down" in why
