"""The table: figures, the ratio of ours to each baseline, and the issue's targets beside them."""

from __future__ import annotations

from typing import Any

from messaging.settings import Settings

OURS_IN_FLIGHT = Settings.publish_in_flight
"""The producer's default CALC_PUBLISH_IN_FLIGHT; raw aiormq is also run at it, like for like."""

TARGETS = {"aiormq": 0.8, "aiopika_callback": 1.1, "faststream": 2.5}
"""The floors: ours >= this x the baseline's msg/s, judged within one run (the others are reported)."""

CPU_CEILING = {"aiormq": 1.3}
"""Ours' CPU us per message <= this x the baseline's, in the same run."""

PRODUCER_FLOOR = 0.9
"""Ours' bulk publish >= this x raw aiormq at the same number in flight."""

P99_CEILING_MS = 20.0
"""Ours' p99 publish -> result at half of ours' measured capacity."""


def _mark(ok: bool) -> str:
    return "met" if ok else "NOT met"


def render(data: dict[str, Any]) -> str:
    results = data["results"]
    machine = data["machine"]
    plan = data["plan"]
    lines = [f"calc-events benchmark ({data['mode']}): RabbitMQ {data['broker']}, {machine['cpus']} cores "
             f"shared by broker and clients ({machine['cpu']}), Python {machine['python']}",
             f"quorum work queue, persistent messages, publisher confirms; median of {plan['repeat']} "
             f"repetition(s); {data.get('seconds', 0):.0f}s in all", ""]
    e2e = results.get("end_to_end")
    if e2e:
        ours = e2e.get("ours", {}).get("rate")
        lines.append(f"End to end: requests preloaded in calc.work.basic "
                     f"({plan['failure_share']:.0%} fail and are dead-lettered), consumed, computed, "
                     "result confirmed, settled")
        lines.append(f"  {'variant':46} {'msg/s':>7} {'ours/this':>9} {'CPU us/msg':>10}  target")
        for name, entry in e2e.items():
            ratio = ours / entry["rate"] if ours and entry["rate"] else float("nan")
            target = TARGETS.get(name)
            goal = f"ours >= {target:.1f}x: {_mark(ratio >= target)}" if target else ""
            ceiling = CPU_CEILING.get(name)
            ours_cpu = e2e.get("ours", {}).get("cpu_us_per_message")
            if ceiling and ours_cpu and entry.get("cpu_us_per_message"):
                cpu = ours_cpu / entry["cpu_us_per_message"]
                goal += f"; CPU {cpu:.2f}x <= {ceiling:.1f}x: {_mark(cpu <= ceiling)}"
            lines.append(f"  {entry['label']:46} {entry['rate']:7,.0f} {ratio:8.2f}x "
                         f"{entry.get('cpu_us_per_message', 0):10.0f}  {goal}")
        lines.append("  (CPU us/msg: the consumer process's own CPU per message, steadier than msg/s "
                     "when other work shares the cores)")
        lines.append("")
    producer = results.get("producer")
    if producer:
        ours = producer["ours"]["rate"]
        raw = [e for k, e in producer.items() if k != "ours"]
        best = max(e["rate"] for e in raw) if raw else float("nan")
        lines.append("Producer bulk publish (confirmed), ratio to the best raw aiormq publisher")
        for entry in producer.values():
            lines.append(f"  {entry['label']:44} {entry['rate']:8,.0f}")
        lines.append(f"  {'ours / best raw':44} {ours / best:8.2f}x")
        same = producer.get(f"aiormq-{OURS_IN_FLIGHT}")
        if same:
            ratio = ours / same["rate"]
            lines.append(f"  {f'ours / raw at the same {OURS_IN_FLIGHT} in flight':44} "
                         f"{ratio:8.2f}x  target >= {PRODUCER_FLOOR:.1f}x {_mark(ratio >= PRODUCER_FLOOR)}")
        lines.append("")
    table = results.get("latency")
    if table:
        lines.append("Latency publish -> result, ms (p50 / p90 / p99) at fixed rates")
        rates = sorted({int(r) for row in table.values() for r in row["rates"]})
        lines.append(f"  {'variant':44} " + " ".join(f"{str(r) + '/s':>20}" for r in rates))
        for row in table.values():
            cells = []
            for r in rates:
                cell = row["rates"].get(str(r))
                cells.append(f"{cell['p50']:6.1f}/{cell['p90']:6.1f}/{cell['p99']:6.1f}" if cell else "")
            lines.append(f"  {row['label']:44} " + " ".join(f"{c:>20}" for c in cells))
        achieved = []
        for r in rates:
            cells = [row["rates"][str(r)]["achieved_rate"] for row in table.values()
                     if str(r) in row["rates"]]
            achieved.append(f"{r}/s: {min(cells):,.0f}")
        lines.append("  lowest rate the driver achieved (median of repetitions): " + ", ".join(achieved))
        half = results.get("latency_half_capacity")
        ours_half = table.get("ours", {}).get("rates", {}).get(str(half)) if half else None
        if ours_half:
            lines.append(f"  ours p99 at {half}/s (half of ours' measured capacity): "
                         f"{ours_half['p99']:.1f} ms, target <= {P99_CEILING_MS:.0f} ms "
                         f"{_mark(ours_half['p99'] <= P99_CEILING_MS)}")
        lines.append("")
    memory = results.get("memory")
    if memory:
        if "skipped" in memory:
            lines.append(f"Consumer memory: skipped ({memory['skipped']})")
        else:
            curve = sorted((int(k), v) for k, v in memory["rss_kib_at"].items())
            (first, a), (last, b) = curve[0], curve[-1]
            lines.append(f"Consumer memory over {memory['messages']:,} messages (ours, fed while consuming): "
                         f"RSS {a / 1024:.1f} MiB at {int(first):,}, {b / 1024:.1f} MiB at {int(last):,} "
                         f"({memory['growth']:+.1%}; target < 10% {_mark(memory['growth'] < 0.10)}), "
                         f"peak {memory['peak_rss_kib'] / 1024:.1f} MiB, {memory['rate']:,.0f} msg/s")
            lines.append("  RSS MiB every tenth of the way: " + " ".join(f"{v / 1024:.1f}" for _, v in curve))
    dlq = results.get("dlq_report")
    if dlq:
        if "skipped" in dlq:
            lines.append(f"dlq-inspector report: {dlq['skipped']}")
        else:
            lines.append(f"dlq-inspector report on {dlq['messages']:,} DLQ messages: {dlq['seconds']:.2f} s "
                         f"({dlq['messages'] / dlq['seconds']:,.0f} msg/s)")
    if results.get("journal"):
        from bench.journal import render as render_journal

        lines += ["", *render_journal(results["journal"])]
    return "\n".join(lines).rstrip() + "\n"
