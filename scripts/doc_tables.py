"""The measured tables of the docs, rendered from the JSON the chaos run and the benchmark write.

The figures live once, in docs/data/*.json; the docs hold their rendering between markers, so a
table is never edited by hand and a unit test (tests/unit/test_docs.py) fails when a doc and its
JSON disagree. A complete run publishes its JSON here and re-renders; a partial one changes nothing.

    python scripts/doc_tables.py                    # render every table from docs/data
    python scripts/doc_tables.py --check            # exit 1 if a doc differs from its data
    python scripts/doc_tables.py --publish bench bench/results/latest.json

Exit codes: 0 done (or up to date), 1 `--check` found a stale doc, 2 bad arguments, unreadable or
incomplete JSON, or a doc without its markers.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "docs" / "data"


def _int(value: float) -> str:
    return f"{value:,.0f}"


OPTIONAL_COLUMNS = (("journal_rows", "rows in the journal"),)
"""Row fields a table shows only when some row has them: (key, column title)."""


def reliability(data: Mapping[str, Any]) -> str:
    """A chaos run's rows as a markdown table, with the run it came from above it."""
    rows = data["rows"]
    when = f", recorded {data['generated_at'][:10]}" if data.get("generated_at") else ""
    lines = [f"From `{data['command']}` on {data['broker']}, {data['machine']}{when}.", ""]
    if data.get("note"):
        lines += [data["note"], ""]
    notes = any(r.get("notes") for r in rows)
    extra = [(key, title) for key, title in OPTIONAL_COLUMNS if any(key in r for r in rows)]
    lines.append("| scenario | messages sent | lost | duplicates on the wire | time to recover |"
                 + "".join(f" {title} |" for _, title in extra) + (" notes |" if notes else ""))
    lines.append("|---|---:|---:|---:|---:|" + "---:|" * len(extra) + ("---|" if notes else ""))
    for r in rows:
        recover = "n/a" if r["recover_s"] is None else f"{r['recover_s']:.1f} s"
        line = f"| {r['scenario']} | {r['sent']:,} | {r['lost']} | {r['duplicates']} | {recover} |"
        line += "".join(f" {r[key]:,} |" if r.get(key) is not None else " |" for key, _ in extra)
        lines.append(line + (f" {r.get('notes', '')} |" if notes else ""))
    return "\n".join(lines)


def _mark(ok: bool) -> str:
    return "met" if ok else "not met"


def _end_to_end(e2e: Mapping[str, Any], targets: Mapping[str, float],
                ceilings: Mapping[str, float]) -> list[str]:
    ours, ours_cpu = e2e["ours"]["rate"], e2e["ours"]["cpu_us_per_message"]
    lines = ["| end to end | msg/s | ours / this | CPU µs/msg | target |", "|---|---:|---:|---:|---|"]
    for name, entry in e2e.items():
        target, ceiling = targets.get(name), ceilings.get(name)
        ratio = ours / entry["rate"]
        goal = f">= {target:g}x: {_mark(ratio >= target)}" if target else ""
        if ceiling:
            cpu = ours_cpu / entry["cpu_us_per_message"]
            goal += f"; CPU {cpu:.2f}x <= {ceiling:g}x: {_mark(cpu <= ceiling)}"
        lines.append(f"| {entry['label']} | {_int(entry['rate'])} | {ratio:.2f}x | "
                     f"{entry['cpu_us_per_message']:.0f} | {goal} |")
    spread = [f"{short} " + " / ".join(_int(r["rate"]) for r in e2e[name]["runs"])
              for name, short in (("ours", "ours"), ("aiormq", "(b)")) if e2e.get(name, {}).get("runs")]
    if spread:
        lines += ["", "Per repetition, msg/s: " + "; ".join(spread) + "."]
    return lines


def _producer(producer: Mapping[str, Any], count: int, in_flight: int, floor: float) -> list[str]:
    ours = producer["ours"]["rate"]
    raw = {int(k.removeprefix("aiormq-")): e["rate"] for k, e in producer.items() if k != "ours"}
    best = max(raw, key=lambda k: raw[k])
    lines = [f"| producer bulk (confirmed, {count:,}) | msg/s |", "|---|---:|",
             f"| ours (`Producer.bulk`, {in_flight} in flight) | {_int(ours)} |",
             f"| raw aiormq, {' / '.join(f'{k:,}' for k in sorted(raw))} in flight | "
             f"{' / '.join(_int(raw[k]) for k in sorted(raw))} |",
             f"| ours / best raw ({best:,} in flight) | {ours / raw[best]:.2f}x |"]
    if in_flight in raw:
        ratio = ours / raw[in_flight]
        lines.append(f"| ours / raw at the same {in_flight} in flight | {ratio:.2f}x "
                     f"(target >= {floor:g}x: {_mark(ratio >= floor)}) |")
    return lines


def _latency(table: Mapping[str, Any], half: int | None, ceiling: float) -> list[str]:
    rates = sorted({int(r) for row in table.values() for r in row["rates"]})
    lines = ["| latency publish → result, ms (p50 / p90 / p99) | " + " | ".join(f"{r:,}/s" for r in rates)
             + " |", "|---|" + "---|" * len(rates)]
    for row in table.values():
        cells = [row["rates"].get(str(r)) for r in rates]
        lines.append(f"| {row['label']} | " + " | ".join(
            f"{c['p50']:,.1f} / {c['p90']:,.1f} / {c['p99']:,.1f}" if c else "" for c in cells) + " |")
    achieved = [f"{r:,}/s: {min(row['rates'][str(r)]['achieved_rate'] for row in table.values()):,.0f}"
                for r in rates
                if all("achieved_rate" in row["rates"].get(str(r), {}) for row in table.values())]
    if achieved:
        lines += ["", "Lowest rate the driver achieved (median of repetitions): " + ", ".join(achieved) + "."]
    ours = table.get("ours", {}).get("rates", {}).get(str(half)) if half else None
    if ours:
        lines += ["", f"Ours' p99 at {half:,} msg/s, half of ours' measured capacity: {ours['p99']:.1f} ms "
                      f"(target <= {ceiling:g} ms: {_mark(ours['p99'] <= ceiling)})."]
    return lines


def bench(data: Mapping[str, Any]) -> str:
    """A `make bench` run (bench/run.py's JSON) as markdown tables, with the targets beside them."""
    from bench.report import CPU_CEILING, OURS_IN_FLIGHT, P99_CEILING_MS, PRODUCER_FLOOR, TARGETS

    machine, plan, results = data["machine"], data["plan"], data["results"]
    minutes = f"; {data['seconds'] / 60:.0f} minutes in all" if data.get("seconds") else ""
    lines = [f"From `make bench` ({data['mode']} mode) against RabbitMQ {data['broker']}: "
             f"{machine['cpus']} cores shared by the broker and the clients ({machine['cpu']}), "
             f"Python {machine['python']}; median of {plan['repeat']} repetitions of "
             f"{plan['messages']:,} requests ({plan['slow_messages']:,} for (c) and (e)){minutes}.", ""]
    if data.get("note"):
        lines += [data["note"], ""]
    if "end_to_end" in results:
        lines += [*_end_to_end(results["end_to_end"], TARGETS, CPU_CEILING), ""]
    if "producer" in results:
        lines += [*_producer(results["producer"], plan["publish_count"], OURS_IN_FLIGHT, PRODUCER_FLOOR), ""]
    if "latency" in results:
        lines += [*_latency(results["latency"], results.get("latency_half_capacity"), P99_CEILING_MS), ""]
    memory = results.get("memory", {})
    if "rss_kib_at" in memory:
        curve = [v / 1024 for _, v in sorted((int(k), v) for k, v in memory["rss_kib_at"].items())]
        step = memory["messages"] // len(curve)
        lines += [f"Consumer memory, ours over {memory['messages']:,} requests fed while it consumes "
                  f"({_int(memory['rate'])} msg/s): RSS in MiB at every {step:,}: "
                  + ", ".join(f"{v:.1f}" for v in curve)
                  + f"; {memory['growth']:+.1%} from the first mark to the last (target < 10%: "
                  f"{_mark(memory['growth'] < 0.10)}), peak {memory['peak_rss_kib'] / 1024:.1f} MiB.", ""]
    dlq = results.get("dlq_report", {})
    if "seconds" in dlq:
        lines.append(f"`dlq-inspector report --json` on {dlq['messages']:,} dead letters: "
                     f"{dlq['seconds']:.1f} s ({_int(dlq['messages'] / dlq['seconds'])} letters/s), "
                     "the DLQ untouched afterwards.")
    return "\n".join(lines).rstrip()


def _reliability_complete(new: Mapping[str, Any], old: Mapping[str, Any]) -> str | None:
    missing = {r["scenario"] for r in old["rows"]} - {r["scenario"] for r in new["rows"]}
    return f"{len(missing)} scenario(s) of the published table not run" if missing else None


BENCH_STEPS = ("end_to_end", "producer", "latency", "memory", "dlq_report")


def _bench_complete(new: Mapping[str, Any], old: Mapping[str, Any]) -> str | None:
    if new.get("mode") != "full":
        return f"a {new.get('mode')} run, not a full one"
    absent = [s for s in BENCH_STEPS if s not in new["results"] or "skipped" in new["results"][s]]
    return f"steps not measured: {', '.join(absent)}" if absent else None


@dataclass(frozen=True)
class Table:
    """One generated table: its name (the markers'), its JSON, its doc, how it renders."""

    name: str
    data: Path
    doc: Path
    render: Callable[[Mapping[str, Any]], str]
    incomplete: Callable[[Mapping[str, Any], Mapping[str, Any]], str | None]
    """Why a new run may not replace the published one (None: it may)."""


TABLES = {t.name: t for t in (
    Table("reliability", DATA / "reliability.json", ROOT / "docs" / "reliability.md", reliability,
          _reliability_complete),
    Table("reliability-docker", DATA / "reliability-docker.json", ROOT / "docs" / "reliability.md",
          reliability, _reliability_complete),
    Table("bench", DATA / "bench.json", ROOT / "bench" / "README.md", bench, _bench_complete),
)}


class DocError(Exception):
    """A doc or a JSON file this script cannot use; the message is one line for the user."""


def _markers(name: str) -> tuple[str, str]:
    return (f"<!-- generated: {name} (scripts/doc_tables.py, from docs/data/{name}.json); do not edit -->",
            f"<!-- end generated: {name} -->")


def load(path: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise DocError(f"cannot read {path}: {exc}") from None
    return data


def rendered(table: Table, text: str, data: Mapping[str, Any]) -> str:
    """`text` (the doc) with the part between `table`'s markers replaced by `data`'s rendering."""
    start, end = _markers(table.name)
    pattern = re.compile(re.escape(start) + r"\n.*?" + re.escape(end), re.S)
    if not pattern.search(text):
        raise DocError(f"{table.doc.relative_to(ROOT)} has no markers for the {table.name} table")
    return pattern.sub(lambda _: f"{start}\n{table.render(data)}\n{end}", text, count=1)


def render_all(check: bool = False) -> list[Path]:
    """Render every table into its doc (or, with `check`, only compare); returns the stale docs."""
    stale = []
    for doc in dict.fromkeys(t.doc for t in TABLES.values()):
        text = doc.read_text()
        new = text
        for table in (t for t in TABLES.values() if t.doc == doc):
            new = rendered(table, new, load(table.data))
        if new != text:
            stale.append(doc)
            if not check:
                doc.write_text(new)
    return stale


def publish(name: str, data: Mapping[str, Any]) -> str:
    """Make `data` (a complete run) the published figures of table `name`; returns what it did."""
    table = TABLES[name]
    why = table.incomplete(data, load(table.data))
    if why:
        raise DocError(f"{table.doc.relative_to(ROOT)} kept as it is: {why}")
    table.render(data)  # a run this script cannot render is not published
    table.data.write_text(json.dumps(data, indent=2) + "\n")
    render_all()
    return f"published {table.data.relative_to(ROOT)} and rendered {table.doc.relative_to(ROOT)}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/doc_tables.py", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a doc differs from its data")
    parser.add_argument("--publish", nargs=2, metavar=("TABLE", "FILE"),
                        help=f"publish a complete run's JSON as TABLE ({', '.join(TABLES)})")
    args = parser.parse_args(argv)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))  # bench.report, when run as a script
    try:
        if args.publish:
            name, file = args.publish
            if name not in TABLES:
                parser.error(f"unknown table {name!r}; known: {', '.join(TABLES)}")
            print(publish(name, load(Path(file))))
            return 0
        stale = render_all(check=args.check)
    except DocError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for doc in stale:
        print(f"{'stale' if args.check else 'rendered'}: {doc.relative_to(ROOT)}")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
