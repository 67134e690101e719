"""`python -m bench.variants NAME --count N`: run one consumer variant, print one JSON line."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import os
import sys
import time

from bench.variants import VARIANTS

MODULES = {"ours": "ours", "ours_quiet": "ours", "ours_traced": "ours", "aiormq": "aiormq_raw",
           "aiopika_iter": "aiopika_iter",
           "aiopika_callback": "aiopika_callback", "pika_blocking": "pika_blocking",
           "faststream": "faststream_broker", "pika_pipelined": "pika_pipelined"}


def rss_kib(field: str = "VmRSS") -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.variants")
    parser.add_argument("name", choices=sorted(VARIANTS))
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--prefetch", type=int)
    parser.add_argument("--rss-marks", default="", help="settled counts at which to sample VmRSS")
    args = parser.parse_args()
    url = os.environ["RABBITMQ_URL"]
    if args.name == "ours_quiet":
        os.environ["CALC_LOG_LEVEL"] = "WARNING"  # no per-message INFO line: what logging costs
    sink = None
    if args.name == "ours_traced":  # what tracing costs: the SDK's defaults, a collector elsewhere
        from bench.variants import otlp_sink

        sink, os.environ["OTEL_EXPORTER_OTLP_ENDPOINT"] = otlp_sink.start()
        os.environ["OTEL_TRACES_SAMPLER"] = "always_on"
        os.environ["OTEL_BSP_MAX_QUEUE_SIZE"] = "100000"  # no span dropped: the whole cost is counted
    module = importlib.import_module(f"bench.variants.{MODULES[args.name]}")
    marks = sorted(int(m) for m in args.rss_marks.split(",") if m)
    if marks:
        if not hasattr(module, "RSS_MARKS"):
            parser.error(f"{args.name} does not sample RSS")
        module.RSS_MARKS[:] = marks
    started = time.perf_counter()
    if inspect.iscoroutinefunction(module.run):
        meter = asyncio.run(module.run(url, args.count, args.prefetch))
    else:
        meter = module.run(url, args.count, args.prefetch)
    if sink is not None:
        sink.terminate()
    # CPU of the whole process (all its threads) in the timed window
    json.dump({"variant": args.name, "cpu_seconds": meter.cpu,
               "cpu_us_per_message": meter.cpu / meter.settled * 1e6 if meter.settled else 0.0,
               "settled": meter.settled, "seconds": meter.seconds,
               "rate": meter.settled / meter.seconds if meter.seconds else 0.0,
               "wall": time.perf_counter() - started, "rss_kib": rss_kib(), "peak_rss_kib": rss_kib("VmHWM"),
               "rss_at": getattr(module, "RSS_SAMPLES", {})}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
