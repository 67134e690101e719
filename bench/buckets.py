"""`python -m bench.buckets FILE [FILE ...] [--cpu-us N ...]`: where a consumer's time goes, by bucket.

Reads py-spy's raw output (`python -m bench ... --profile raw --log-dir DIR`: one line per
distinct stack, `frame;frame;... count`, root first) and puts every sample in one bucket: the
first frame from the leaf up that belongs to one decides. With `--cpu-us` (the run's CPU per
message, printed by the benchmark) the shares are turned into microseconds per message.
"""

from __future__ import annotations

import argparse
import re
import sys
from collections import Counter
from pathlib import Path

BUCKETS = (
    ("machinery", "aiormq/aio-pika/pika and asyncio machinery: tasks, futures, locks, timeouts, "
                  "queues between reader, channel and writer"),
    ("codec", "AMQP frame codec: pamqp (pika's own for pika): publishes, acks, deliveries, confirms"),
    ("socket", "socket reads and writes, epoll"),
    ("protobuf", "protobuf decode and encode, event ids, result properties"),
    ("checks", "the contract's checks and compute"),
    ("service", "the service's own glue: handler coroutines, publish wrapper, bookkeeping"),
    ("log", "the INFO line per message: logging, formatting, writing it"),
    ("settle", "settling: batched acks, dedupe of completed ids"),
    ("metrics", "Prometheus metrics"),
    ("other", "start-up and other"),
)

_FRAME = re.compile(r"^(?P<function>.*?) \((?P<path>.*?)(?::\d+)?\)$")
_SOCKET = {"_SelectorSocketTransport.write", "_SelectorSocketTransport._read_ready__data_received",
           "_SelectorSocketTransport._read_ready__get_buffer", "EpollSelector.select",
           "BaseSelectorEventLoop._process_events"}
_SETTLE = ("ConsumerService._settle", "ConsumerService._flush_acks", "ConsumerService._acks_for", "_Acks.",
           "_Completed.", "RangeAcker.", "Pipeline._settle", "AckLedger.", "Completed.")
_STARTUP = ("<frozen importlib", "connect", "ConsumerService.start", "declare")


def _short(path: str) -> str:
    """`.../site-packages/aiormq/channel.py` -> `aiormq/channel.py`; the repo's files from its root."""
    for marker in ("site-packages/", "lib/python3"):
        if marker in path:
            path = path.split(marker, 1)[1]
            return path.split("/", 1)[1] if marker == "lib/python3" and "/" in path else path
    return path


def bucket(frames: list[tuple[str, str]]) -> str:
    """The bucket of one sample; `frames` are (function, path) from the root to the leaf."""
    if any(path.startswith(_STARTUP) or function.startswith(_STARTUP) for function, path in frames):
        if not any(function.startswith(("ConsumerService._on_message", "Pipeline.on_message"))
                   for function, _ in frames):
            return "other"
    for function, path in reversed(frames):
        if function in _SOCKET:
            return "socket"
        if function.startswith(_SETTLE):
            return "settle"
        if path.startswith("pamqp/") or path.startswith(("pika/spec.py", "pika/frame.py", "pika/data.py")):
            return "codec"
        if path.startswith("prometheus_client/"):
            return "metrics"
        if path.startswith("logging/") or path == "messaging/logs.py":
            return "log"
        if path.startswith(("google/protobuf", "gen/", "uuid.py", "datetime.py")) or path in (
                "messaging/codec.py", "messaging/enums.py", "bench/work.py"):
            return "protobuf"
        if path.startswith("calculator/") or path in ("consumer/handler.py", "messaging/verdict.py"):
            return "checks"
        if path in ("consumer/service.py", "messaging/publisher.py", "messaging/deadlines.py",
                    "messaging/metrics.py", "consumer/pipeline.py", "consumer/outcomes.py",
                    "consumer/policy.py", "consumer/acks.py") or path.startswith("bench/variants/"):
            return "service"
        if path.startswith(("aiormq/", "aio_pika/", "pika/", "asyncio/", "contextlib.py", "_weakrefset.py")):
            return "machinery"
    return "other"


def read(path: Path) -> Counter[str]:
    counts: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = []
        for frame in stack.split(";"):
            found = _FRAME.match(frame)
            if found:
                frames.append((found["function"], _short(found["path"])))
        counts[bucket(frames)] += int(number)
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.buckets", description=__doc__)
    parser.add_argument("files", nargs="+", type=Path, help="py-spy raw outputs (consumer-NAME-0.txt)")
    parser.add_argument("--cpu-us", type=float, nargs="*", default=[],
                        help="each run's CPU us per message, in the order of the files")
    args = parser.parse_args(argv)
    if args.cpu_us and len(args.cpu_us) != len(args.files):
        parser.error("give one --cpu-us per file")
    columns = [read(path) for path in args.files]
    unit = "CPU us per message" if args.cpu_us else "share of samples, %"
    names = [path.stem for path in args.files]
    print(f"| {unit} | " + " | ".join(names) + " |")
    print("|---|" + "---:|" * len(names))
    for key, label in BUCKETS:
        cells = []
        for index, counts in enumerate(columns):
            share = counts[key] / max(1, sum(counts.values()))
            cells.append(f"{share * args.cpu_us[index]:.0f}" if args.cpu_us else f"{share * 100:.1f}")
        print(f"| {label} | " + " | ".join(cells) + " |")
    totals = [f"{cpu:.0f}" for cpu in args.cpu_us] if args.cpu_us else ["100.0"] * len(columns)
    print("| **total** | " + " | ".join(f"**{t}**" for t in totals) + " |")
    print(f"samples: {', '.join(f'{n} {sum(c.values())}' for n, c in zip(names, columns, strict=True))}",
          file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
