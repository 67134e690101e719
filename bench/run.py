"""Orchestration: one vhost, every measurement in turn, medians, ratios, the table and the JSON."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiormq

from bench import journal, latency, workload
from bench.broker import DEFAULT_URL, private_vhost
from bench.report import OURS_IN_FLIGHT, render
from bench.variants import PREFETCH, VARIANTS
from bench.workload import BENCH_ENV, BenchFailure
from messaging import topology

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Plan:
    """How much of everything one run measures."""

    repeat: int
    messages: int  # per end-to-end repetition, fast variants
    slow_messages: int  # per repetition for (c) and (e), about 1,000/s
    failure_share: float
    publish_count: int
    in_flight: tuple[int, ...]
    latency_rates: tuple[int, ...]
    latency_seconds: float
    latency_variants: tuple[str, ...]
    rss_messages: int  # 0: skip
    dlq_messages: int
    variants: tuple[str, ...] = tuple(VARIANTS)


FULL = Plan(repeat=3, messages=20_000, slow_messages=6_000, failure_share=0.01, publish_count=30_000,
            in_flight=tuple(sorted({100, OURS_IN_FLIGHT, 500, 1000})), latency_rates=(500, 1000, 2000),
            latency_seconds=10,
            latency_variants=("ours", "aiormq", "aiopika_callback", "faststream"),
            rss_messages=1_000_000, dlq_messages=100_000)
SMOKE = Plan(repeat=1, messages=1_500, slow_messages=600, failure_share=0.02, publish_count=3_000,
             in_flight=(500,), latency_rates=(1000,), latency_seconds=2, latency_variants=("ours",),
             rss_messages=0, dlq_messages=1_000)


@dataclass
class Run:
    url: str
    plan: Plan
    log_dir: Path
    profile: str | None = None  # py-spy output format, or "pyinstrument", for the consumers; or None
    results: dict[str, Any] = field(default_factory=dict)

    def env(self) -> dict[str, str]:
        """The process environment without the caller's CALC_* tuning: services run as shipped."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("CALC_", "RABBITMQ_"))}
        env.update(BENCH_ENV, RABBITMQ_URL=self.url, PYTHONPATH=str(ROOT))
        return env

    def spawn(self, args: list[str], tag: str,
              extra_env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        log = open(self.log_dir / f"{tag}.log", "w")
        command = [sys.executable, *args]
        if self.profile == "pyinstrument" and tag.startswith("consumer-"):
            # a call tree with the libraries' frames (aiormq, pamqp, asyncio), 1 ms samples
            command = [sys.executable, "-m", "pyinstrument", "--renderer", "text", "--show-all",
                       "--no-color", "--outfile", str(self.log_dir / f"{tag}.pyinstrument.txt"), *args]
        elif self.profile and tag.startswith("consumer-"):
            spy = str(Path(sys.executable).parent / "py-spy")
            suffix = {"speedscope": "json", "flamegraph": "svg", "raw": "txt"}[self.profile]
            command = [spy, "record", "--rate", "250", "--format", self.profile, "--output",
                       str(self.log_dir / f"{tag}.{suffix}"), "--", *command]
        # stdout to a file too: a pipe nobody reads while the process runs (latency) fills up and
        # blocks a variant that logs to stdout (FastStream)
        with open(self.log_dir / f"{tag}.out", "w") as out, log:  # the child keeps its own copies
            return subprocess.Popen(command, cwd=ROOT, env={**self.env(), **(extra_env or {})}, text=True,
                                    stdout=out, stderr=log)

    def finish(self, process: subprocess.Popen[str], tag: str, timeout: float) -> dict[str, Any]:
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise BenchFailure(f"{tag}: did not finish within {timeout:.0f}s (lost messages?); "
                               f"log: {self.log_dir / (tag + '.log')}") from None
        if process.returncode != 0:
            tail = (self.log_dir / f"{tag}.log").read_text()[-2000:]
            raise BenchFailure(f"{tag}: exit {process.returncode}\n{tail}")
        out = (self.log_dir / f"{tag}.out").read_text()
        (self.log_dir / f"{tag}.log").unlink(missing_ok=True)  # a good run's logs are only noise
        (self.log_dir / f"{tag}.out").unlink(missing_ok=True)
        lines = [line for line in out.splitlines() if line.startswith("{")]  # py-spy, FastStream talk too
        result: dict[str, Any] = json.loads(lines[-1])
        return result


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


async def consumers(run: Run) -> None:
    plan = run.plan
    table: dict[str, Any] = {}
    for rep in range(plan.repeat):
        for name in plan.variants:
            count = plan.slow_messages if name in ("aiopika_iter", "pika_blocking") else plan.messages
            await workload.reset(run.url)
            preloaded = await workload.preload(run.url, count, plan.failure_share, seed=rep)
            tag = f"consumer-{name}-{rep}"
            args = ["-m", "bench.variants", name, "--count", str(count)]
            if name in PREFETCH:
                args += ["--prefetch", str(PREFETCH[name])]
            result = run.finish(run.spawn(args, tag), tag, timeout=30 + count / 200)
            result["verified"] = await workload.verify(run.url, preloaded, name)
            entry = table.setdefault(name, {"label": VARIANTS[name], "runs": []})
            entry["runs"].append(result)
            log(f"  {name:17} rep {rep + 1}: {result['rate']:8,.0f} msg/s  "
                f"{result['cpu_us_per_message']:5.0f} us CPU/msg  ({count} messages, "
                f"{result['verified']['failed']} failed->DLQ, verified)")
    for entry in table.values():
        entry["rate"] = statistics.median(r["rate"] for r in entry["runs"])
        entry["peak_rss_kib"] = statistics.median(r["peak_rss_kib"] for r in entry["runs"])
        entry["cpu_us_per_message"] = statistics.median(r["cpu_us_per_message"] for r in entry["runs"])
    run.results["end_to_end"] = table


async def publishers(run: Run) -> None:
    plan = run.plan
    table: dict[str, Any] = {}
    jobs = [("ours", "ours", ["ours"])] + [(f"aiormq-{k}", f"raw aiormq, {k} in flight",
                                            ["aiormq", "--in-flight", str(k)]) for k in plan.in_flight]
    for rep in range(plan.repeat):
        for key, label, args in jobs:
            await workload.reset(run.url)
            tag = f"publisher-{key}-{rep}"
            result = run.finish(run.spawn(["-m", "bench.publishers", *args, "--count",
                                           str(plan.publish_count)], tag), tag, timeout=300)
            queued = await workload.depth(run.url, topology.work_queue("basic"))
            if queued != plan.publish_count:
                raise BenchFailure(f"{key}: published {plan.publish_count}, queue holds {queued}")
            table.setdefault(key, {"label": label, "runs": []})["runs"].append(result)
            log(f"  publisher {key:13} rep {rep + 1}: {result['rate']:8,.0f} msg/s")
    for entry in table.values():
        entry["rate"] = statistics.median(r["rate"] for r in entry["runs"])
    await workload.reset(run.url)
    run.results["producer"] = table


async def _consumer_ready(url: str, queue: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        connection = await aiormq.connect(url)
        try:
            channel = await connection.channel()
            declared = await channel.queue_declare(queue, passive=True)
        finally:
            await connection.close()
        if declared.consumer_count:
            return
        await asyncio.sleep(0.1)
    raise BenchFailure(f"no consumer on {queue} after {timeout}s")


def half_capacity(run: Run) -> int | None:
    """Half of ours' end-to-end rate in this run, to the nearest 100/s: where p99 is judged."""
    ours = run.results.get("end_to_end", {}).get("ours", {}).get("rate")
    return max(100, round(ours / 2 / 100) * 100) if ours else None


async def latencies(run: Run) -> None:
    plan = run.plan
    table: dict[str, Any] = {}
    half = half_capacity(run)
    rates = tuple(sorted(set(plan.latency_rates) | ({half} if half else set())))
    for rep in range(plan.repeat):
        for name in plan.latency_variants:
            for rate in rates:
                count = int(rate * plan.latency_seconds)
                warmup = max(200, int(rate))  # a second's worth, not timed: process start, first deliveries
                await workload.reset(run.url)
                tag = f"latency-{name}-{rate}-{rep}"
                args = ["-m", "bench.variants", name, "--count", str(warmup + count)]
                if name in PREFETCH:
                    args += ["--prefetch", str(PREFETCH[name])]
                process = run.spawn(args, tag)
                try:
                    await _consumer_ready(run.url, topology.work_queue("basic"))
                    point = await latency.drive(run.url, rate, count, warmup)
                finally:
                    if process.poll() is None and "point" not in locals():
                        process.kill()
                run.finish(process, tag, timeout=60)
                row = table.setdefault(name, {"label": VARIANTS[name], "rates": {}})
                row["rates"].setdefault(str(rate), {"runs": []})["runs"].append(point)
                log(f"  latency {name:17} {rate:5}/s rep {rep + 1}: p50 {point['p50']:6.1f}  "
                    f"p90 {point['p90']:6.1f}  p99 {point['p99']:6.1f} ms")
    for row in table.values():
        for cell in row["rates"].values():
            for key in ("p50", "p90", "p99", "achieved_rate"):
                cell[key] = statistics.median(r[key] for r in cell["runs"])
    run.results["latency"] = table
    if half:
        run.results["latency_half_capacity"] = half


async def memory(run: Run) -> None:
    """Ours over `rss_messages` fed by a concurrent raw publisher; RSS every tenth of the way."""
    count = run.plan.rss_messages
    if not count:
        run.results["memory"] = {"skipped": "full mode only"}
        return
    await workload.reset(run.url)
    marks = [count * k // 10 for k in range(1, 11)]
    consumer = run.spawn(["-m", "bench.variants", "ours", "--count", str(count), "--rss-marks",
                          ",".join(map(str, marks))], "memory-ours")
    feeder = run.spawn(["-m", "bench.publishers", "aiormq", "--count", str(count), "--in-flight", "200"],
                       "memory-feeder")
    deadline = time.monotonic() + count / 300 + 120
    shown = 0
    while consumer.poll() is None and time.monotonic() < deadline:
        await asyncio.sleep(5)
        marks_passed = [line.split() for line in (run.log_dir / "memory-ours.out").read_text().splitlines()
                        if line.startswith("progress ")]
        if len(marks_passed) > shown:
            shown = len(marks_passed)
            _, settled, rss = marks_passed[-1]
            log(f"  memory: {int(settled):,} of {count:,} settled, RSS {int(rss) / 1024:.1f} MiB")
    run.finish(feeder, "memory-feeder", timeout=max(1.0, deadline - time.monotonic()))
    result = run.finish(consumer, "memory-ours", timeout=max(1.0, deadline - time.monotonic()))
    counts = await workload.verify_counts(run.url, count)
    curve = {int(k): v for k, v in result["rss_at"].items()}
    first, last = curve[marks[0]], curve[marks[-1]]
    run.results["memory"] = {"messages": count, "rss_kib_at": curve, "peak_rss_kib": result["peak_rss_kib"],
                             "growth": last / first - 1, "rate": result["rate"], "verified": counts}
    log(f"  memory: RSS {first / 1024:.1f} MiB at {marks[0]:,}, {last / 1024:.1f} MiB at {count:,} "
        f"({(last / first - 1) * 100:+.1f}%), peak {result['peak_rss_kib'] / 1024:.1f} MiB; MiB every tenth: "
        + " ".join(f"{v / 1024:.1f}" for _, v in sorted(curve.items())))
    await workload.reset(run.url)


async def dlq(run: Run) -> None:
    """`dlq-inspector report` on a DLQ of `dlq_messages` real dead letters (the hook)."""
    count = run.plan.dlq_messages
    command = shutil.which("dlq-inspector", path=str(Path(sys.executable).parent))
    if command is None:
        raise BenchFailure("dlq-inspector is not installed next to this python: run `make install`")
    await workload.reset(run.url)
    await workload.preload(run.url, count, 1.0, seed=7)  # every one divides by zero
    run.finish(run.spawn(["-m", "bench.variants", "ours", "--count", str(count)], "dlq-fill"), "dlq-fill",
               timeout=30 + count / 200)
    held = await workload._settled_depth(run.url, topology.DLQ, count, timeout=60)
    if held != count:
        raise BenchFailure(f"dlq fill: calc.dlq holds {held}, expected {count}")
    runs = []
    for _ in range(run.plan.repeat):
        started = time.perf_counter()
        done = await asyncio.to_thread(
            subprocess.run,[command, "report", "--json"], env=run.env(), capture_output=True,
                              text=True, timeout=900)
        seconds = time.perf_counter() - started
        if done.returncode != 0:
            raise BenchFailure(f"dlq-inspector report: exit {done.returncode}: {done.stderr[-300:]}")
        reported = json.loads(done.stdout).get("total")
        if reported != count:
            raise BenchFailure(f"dlq-inspector report counted {reported} dead letters, expected {count}")
        runs.append({"seconds": seconds, "output_bytes": len(done.stdout)})
        log(f"  dlq-inspector report on {count:,}: {seconds:.2f}s")
    left = await workload.depth(run.url, topology.DLQ)
    if left != count:
        raise BenchFailure(f"dlq-inspector report changed the DLQ: {left} of {count} left")
    run.results["dlq_report"] = {"messages": count, "runs": runs,
                                 "seconds": statistics.median(r["seconds"] for r in runs)}
    await workload.reset(run.url)


async def broker_version(url: str) -> str:
    connection = await aiormq.connect(url)
    try:
        props = connection.server_properties
        return str(props.get("version", "?")) if props else "?"
    finally:
        await connection.close()


def machine() -> dict[str, Any]:
    model = ""
    with open("/proc/cpuinfo") as cpuinfo:
        for line in cpuinfo:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    versions = {}
    for package in ("aio-pika", "aiormq", "pika", "faststream", "protobuf"):
        try:
            versions[package] = version(package)
        except Exception:
            versions[package] = "not installed"
    return {"cpus": os.cpu_count(), "cpu": model, "python": platform.python_version(),
            "platform": platform.platform(), "packages": versions}


STEPS: dict[str, Callable[[Run], Any]] = {"consumers": consumers, "producer": publishers,
                                          "latency": latencies, "memory": memory, "dlq": dlq,
                                          "journal": journal.step}


async def bench(args: argparse.Namespace, plan: Plan) -> dict[str, Any]:
    url = args.url
    with private_vhost(url, os.environ.get("RABBITMQ_MANAGEMENT_URL")) as vhost_url, \
            tempfile.TemporaryDirectory(prefix="bench-logs-") as logs:
        await workload.setup(vhost_url)
        run = Run(vhost_url, plan, Path(args.log_dir or logs), args.profile)
        run.log_dir.mkdir(parents=True, exist_ok=True)
        info = {"machine": machine(), "broker": await broker_version(vhost_url),
                "mode": "smoke" if args.smoke else "full", "plan": plan.__dict__,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        info["results"] = run.results
        for step in args.only or list(STEPS):
            log(f"[{step}]")
            await STEPS[step](run)
            if args.json:  # what is measured so far survives a later failure
                args.json.parent.mkdir(parents=True, exist_ok=True)
                args.json.write_text(json.dumps(info, indent=2) + "\n")
        return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="small CI mode (< 2 minutes); checks "
                        "every variant loses and duplicates nothing, asserts nothing about speed")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--repeat", type=int, help="repetitions (median); default 3, smoke 1")
    parser.add_argument("--messages", type=int, help="messages per end-to-end repetition")
    parser.add_argument("--only", action="append", choices=list(STEPS),
                        help="run only this step (repeatable)")
    parser.add_argument("--variants", help="comma-separated consumer variants, for the end-to-end and "
                        "latency steps (default: all, and four for latency)")
    parser.add_argument("--latency-seconds", type=float, help="seconds per latency point")
    parser.add_argument("--rss-messages", type=int, help="messages of the memory run (0 skips it)")
    parser.add_argument("--dlq-messages", type=int, help="DLQ size for dlq-inspector report")
    parser.add_argument("--url", default=os.environ.get("RABBITMQ_URL", DEFAULT_URL),
                        help="broker (a private vhost is made on it); default RABBITMQ_URL")
    parser.add_argument("--log-dir", help="keep each process's log here (default: a temp dir)")
    parser.add_argument("--profile", choices=["raw", "flamegraph", "speedscope", "pyinstrument"],
                        help="record each consumer run into --log-dir: py-spy in this format, "
                             "or a pyinstrument call tree")
    args = parser.parse_args(argv)
    plan = SMOKE if args.smoke else FULL
    changes: dict[str, Any] = {}
    if args.repeat:
        changes["repeat"] = args.repeat
    if args.messages:
        changes["messages"] = args.messages
        changes["slow_messages"] = min(plan.slow_messages, args.messages)
    if args.variants:
        changes["variants"] = tuple(v for v in args.variants.split(",") if v)
        changes["latency_variants"] = changes["variants"]
        unknown = set(changes["variants"]) - set(VARIANTS)
        if unknown:
            parser.error(f"unknown variants {sorted(unknown)}; known: {', '.join(VARIANTS)}")
    for name in ("rss_messages", "dlq_messages"):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    if args.latency_seconds:
        changes["latency_seconds"] = args.latency_seconds
    if changes:
        plan = Plan(**{**plan.__dict__, **changes})
    started = time.perf_counter()
    try:
        data = asyncio.run(bench(args, plan))
    except BenchFailure as exc:
        print(f"bench: FAILED: {exc}", file=sys.stderr)
        return 1
    data["seconds"] = time.perf_counter() - started
    print(render(data))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(data, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
