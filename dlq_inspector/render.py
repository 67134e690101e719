"""Text for people: the report table, list rows, one message in full, and a progress line."""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any, TextIO

from google.protobuf.json_format import MessageToDict

from dlq_inspector.explain import Explanation
from dlq_inspector.letters import PROPERTY_NAMES, to_json_value, to_record
from dlq_inspector.report import Report
from messaging.frames import printable
from messaging.tracing import trace_id_of


def table(headers: Sequence[str], rows: Iterable[Sequence[Any]], right: Sequence[int] = ()) -> str:
    """Aligned columns; the columns whose index is in `right` are right-aligned (numbers)."""
    text_rows = [[str(cell) for cell in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in text_rows)]) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.rjust(w) if i in right else c.ljust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True))).rstrip()

    return "\n".join([line(headers), line(["-" * w for w in widths]), *(line(r) for r in text_rows)])


def age(seconds: float | None) -> str:
    """`3d 4h`, `2h 5m`, `4m 10s`, `12s`."""
    if seconds is None:
        return "-"
    s = int(seconds)
    for unit, size, sub, subsize in (("d", 86400, "h", 3600), ("h", 3600, "m", 60), ("m", 60, "s", 1)):
        if s >= size:
            return f"{s // size}{unit} {(s % size) // subsize}{sub}"
    return f"{s}s"


def moment(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%SZ") if value else "-"


def report_text(report: Report) -> str:
    lines = [f"{report.queue}: {report.total} message{'s' if report.total != 1 else ''}"
             f" ({report.bytes:,} bytes)"]
    if not report.complete:
        lines.append(f"warning: read {report.total} of {report.expected} messages; the rest are held "
                     "by another reader (another inspector?)")
    if report.total:
        lines.append(f"oldest death {moment(report.oldest_death)} "
                     f"({age(report.oldest_age(report.scanned_at))} ago), "
                     f"newest {moment(report.newest_death)}")
        for title, counter in (("REASON", report.by_reason), ("OPERATION", report.by_operation),
                               ("ORIGINAL ROUTING KEY", report.by_routing_key)):
            rows = sorted(counter.items(), key=lambda kv: (-kv[1], kv[0]))
            rows_with_share = [(key, n, f"{100 * n / report.total:.1f}%") for key, n in rows]
            lines += ["", table([title, "COUNT", "SHARE"], rows_with_share, right=(1, 2))]
    return "\n".join(lines)


LIST_COLUMNS = (("#", 6), ("EVENT_ID", 36), ("OPERATION", 10), ("OPERANDS", 22), ("REASON", 18),
                ("ATTEMPTS", 8), ("ROUTING KEY", 24), ("DIED AT", 20), ("DETAIL", 0))


def _fit(text: str, width: int) -> str:
    if width == 0 or len(text) <= width:
        return text.ljust(width)
    return text[: width - 1] + "…"


def list_header() -> str:
    return "  ".join(_fit(name, width) for name, width in LIST_COLUMNS).rstrip()


def list_row(explanation: Explanation) -> str:
    """One fixed-width row, so `list` streams without holding rows to measure them."""
    operands = ", ".join(f"{x:g}" for x in explanation.operands)
    cells = (str(explanation.letter.position), explanation.event_id or "-", explanation.operation,
             operands or "-", explanation.reason, str(explanation.attempts),
             explanation.original_routing_key or "-", moment(explanation.last_death), explanation.detail)
    return "  ".join(_fit(printable(c), w) for c, (_, w) in zip(cells, LIST_COLUMNS, strict=True)).rstrip()


def show_text(explanation: Explanation) -> str:
    """Everything about one message: the verdict, the request, the properties, every death."""
    letter = explanation.letter
    out = [f"message #{letter.position} of calc.dlq",
           f"  event_id              {explanation.event_id or '-'}",
           f"  correlation_id        {explanation.correlation_id or '-'}",
           f"  trace_id              {trace_id_of(letter.headers) or '-'}",
           f"  reason                {explanation.reason}",
           f"  detail                {explanation.detail}",
           f"  attempts              {explanation.attempts}",
           f"  original routing key  {explanation.original_routing_key or '-'}",
           f"  died in               {explanation.died_in or '-'}",
           f"  first death           {moment(explanation.first_death)}",
           f"  last death            {moment(explanation.last_death)}",
           "", "request"]
    if explanation.request is not None:
        decoded = MessageToDict(explanation.request, preserving_proto_field_name=True)
        out += [f"  {key:<21} {value}" for key, value in decoded.items()]
    else:
        out.append(f"  undecodable body of {len(letter.body)} bytes: {letter.body[:64]!r}")
    out += ["", "properties"]
    out += [f"  {name:<21} {letter.properties[name]}" for name in PROPERTY_NAMES
            if name in letter.properties]
    out += [f"  routing key           {letter.routing_key}", f"  exchange              {letter.exchange}"]
    client = letter.client_headers
    out += ["", "headers"] + [f"  {k:<21} {to_json_value(v)}" for k, v in client.items()]
    out += ["", f"x-death ({len(explanation.deaths)} entr{'y' if len(explanation.deaths) == 1 else 'ies'},"
                " newest first)"]
    for death in explanation.deaths:
        out.append(f"  {moment(death.time)}  {death.reason:<15} queue={death.queue} "
                   f"exchange={death.exchange} routing-keys={','.join(death.routing_keys)} "
                   f"count={death.count}"
                   + (f" original-expiration={death.original_expiration}"
                      if death.original_expiration else ""))
    others = {k: v for k, v in letter.headers.items() if k.startswith("x-") and k != "x-death"}
    out += [f"  {k} = {to_json_value(v)}" for k, v in others.items()]
    # every value above may hold bytes or control characters a client chose
    return "\n".join(printable(line) for line in out)


def show_json(explanation: Explanation) -> dict[str, Any]:
    """`show --json`: the verdict, the decoded request, every death, and the raw message."""
    request = (MessageToDict(explanation.request, preserving_proto_field_name=True)
               if explanation.request is not None else None)
    deaths = [{"queue": d.queue, "reason": d.reason, "count": d.count, "exchange": d.exchange,
               "routing_keys": list(d.routing_keys), "time": d.time.isoformat() if d.time else None,
               "original_expiration": d.original_expiration or None} for d in explanation.deaths]
    return {**explanation.summary(), "trace_id": trace_id_of(explanation.letter.headers) or None,
            "request": request, "deaths": deaths, **to_record(explanation.letter)}


class Progress:
    """A progress line on `stream` at most every `every` seconds: rewritten on a terminal."""

    def __init__(self, stream: TextIO, label: str, every: float = 1.0) -> None:
        self.stream = stream
        self.label = label
        self.every = every
        self.started = time.monotonic()
        self._last = self.started  # short runs print no progress at all
        self._tty = stream.isatty()
        self._dirty = False
        self._shown = False

    def update(self, text: str, force: bool = False) -> None:
        """Show `text` if `every` seconds passed; `force`: the final state of a run that showed any."""
        now = time.monotonic()
        if (force and not self._shown) or (not force and now - self._last < self.every):
            return
        self._shown = True
        self._last = now
        line = f"{self.label}: {text} ({now - self.started:.1f}s)"
        if self._tty:
            self.stream.write("\r\033[K" + line)
            self._dirty = True
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def done(self) -> None:
        if self._dirty:
            self.stream.write("\n")
            self.stream.flush()
            self._dirty = False
