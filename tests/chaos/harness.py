"""The chaos tier's tools: services as processes, queue stats, a ledger of outcomes, recovery probes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import aio_pika
import pika
import pika.exceptions
from aio_pika.abc import AbstractIncomingMessage

from messaging import codec, topology
from tests.integration.pipeline import BIN, ROOT, service_env
from tests.support.admin import BrokerAdminError
from tests.support.private_node import PrivateNode
from tests.support.readiness import wait_for

# The probe expects refused connections while a broker is down; pika logs each at ERROR.
logging.getLogger("pika").setLevel(logging.CRITICAL)

WORK_QUEUES = (topology.work_queue("basic"), topology.work_queue("heavy"))
SETTLE_AFTER_DECLARE = 2.0
"""Seconds to wait after declaring before killing a node: RabbitMQ 3.10 loses a quorum queue
declared (or a member changed) ~0.5 s before a node dies."""

# Every service of one vhost must declare the same bounds. The audit queue must hold every
# result of the biggest run, or results are dropped at its head and look lost.
CHAOS_ENV = {"CALC_AUDIT_MAX_LENGTH": "200000"}


def chaos_env(url: str, **extra: str) -> dict[str, str]:
    """A service environment for `url` with the chaos tier's shared topology values."""
    return service_env(url, **{**CHAOS_ENV, **extra})


# -- services as processes ---------------------------------------------------------------------


class Service:
    """One calc-* process whose stdout and stderr go to `log`; it can be signalled or killed."""

    def __init__(self, args: Sequence[str], env: Mapping[str, str], log: Path) -> None:
        self.args = list(args)
        self.log = log
        self._handle = log.open("ab")
        self.process = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]], env=dict(env), stdout=self._handle,
            stderr=subprocess.STDOUT, cwd=ROOT)
        self.started = time.monotonic()

    @property
    def pid(self) -> int:
        return self.process.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_line(self, text: str, timeout: float = 60.0) -> None:
        """Block until `text` is in the log; fail at once (with the log) if the process exits."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if text in self.text():
                return
            if self.process.poll() is not None:
                raise AssertionError(
                    f"{self.args[0]} exited {self.process.returncode} before logging {text!r}:\n"
                    f"{self.text()[-3000:]}")
            time.sleep(0.1)
        raise AssertionError(f"{text!r} not logged by {self.args[0]} in {timeout}s:\n{self.text()[-3000:]}")

    def running(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> int:
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"{self.args[0]} still running after {timeout}s:\n{self.text()[-3000:]}") from None
        finally:
            if self.process.poll() is not None:
                self._handle.close()

    def terminate(self, timeout: float = 60.0) -> int:
        """SIGTERM and wait for the exit status."""
        if self.running():
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def kill(self) -> None:
        """SIGKILL: no chance to settle anything."""
        if self.running():
            self.process.kill()
        self.process.wait(30)
        self._handle.close()

    def cleanup(self) -> None:
        if self.running():
            self.kill()
        self._handle.close()


@contextlib.contextmanager
def services() -> Iterator[list[Service]]:
    """A list to register started services in; every one still running is killed at exit."""
    started: list[Service] = []
    try:
        yield started
    finally:
        for service in started:
            service.cleanup()


def consumer_behind_a_backlog(started: list[Service], env: Mapping[str, str], count: int, ids_file: Path,
                              seed: int, logs: Path) -> Service:
    """Queue `count` requests with a bulk (its ids in `ids_file`), then start a consumer on them
    and return it once it consumes both work queues: busy with the backlog for a while."""
    preload = Service(bulk_args(count, ids_file, seed=seed), env, logs / "preload.log")
    started.append(preload)
    assert preload.wait(120) == 0, preload.text()[-3000:]
    consumer = Service(["calc-consumer"], env, logs / "consumer.log")
    started.append(consumer)
    consumer.wait_line("consuming queue=calc.work.heavy")
    return consumer


def bulk_args(count: int, ids_file: Path, seed: int, failure_share: float = 0.1) -> list[str]:
    return ["calc-producer", "bulk", "--count", str(count), "--seed", str(seed),
            "--failure-share", str(failure_share), "--ids-file", str(ids_file), "--json"]


_PROGRESS = re.compile(rb"bulk: (\d+)/(\d+) confirmed")


def bulk_confirmed(log: Path) -> int:
    """The last confirmed count of a running bulk's progress line (0 before the first)."""
    try:
        data = log.read_bytes()
    except OSError:
        return 0
    found = _PROGRESS.findall(data[-4096:])
    return int(found[-1][0]) if found else 0


def bulk_summary(log: Path) -> dict[str, float]:
    """The JSON summary `bulk --json` printed last."""
    for line in reversed(log.read_text(errors="replace").splitlines()):
        if line.startswith("{"):
            summary: dict[str, float] = json.loads(line)
            return summary
    raise AssertionError(f"no JSON summary in {log}:\n{log.read_text(errors='replace')[-2000:]}")


def read_ids(path: Path) -> list[str]:
    return path.read_text().split()


# -- broker state ------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueStats:
    ready: int
    unacked: int
    consumers: int

    @property
    def total(self) -> int:
        return self.ready + self.unacked


def queue_stats(node: PrivateNode, vhost: str = "/") -> dict[str, QueueStats]:
    """Every queue of `vhost` with its ready, unacked and consumer counts (rabbitmqctl)."""
    rows = json.loads(node.admin.ctl(
        ["list_queues", "-p", vhost, "name", "messages_ready", "messages_unacknowledged", "consumers",
         "--formatter", "json"], timeout=60))
    return {str(r["name"]): QueueStats(int(r["messages_ready"] or 0), int(r["messages_unacknowledged"] or 0),
                                       int(r["consumers"] or 0)) for r in rows}


def wait_settled(node: PrivateNode, vhost: str = "/", timeout: float = 300.0,
                 expect_consumers: bool = True) -> dict[str, QueueStats]:
    """Wait until no work or retry message is ready or unacked and the audit queue stopped growing."""
    previous: dict[str, QueueStats] = {}
    waiting: list[str] = []

    def settled() -> dict[str, QueueStats] | None:
        nonlocal previous, waiting
        try:
            stats = queue_stats(node, vhost)
        except BrokerAdminError:
            return None
        busy = [name for name, s in stats.items()
                if (name in WORK_QUEUES or name.startswith(topology.RETRY_PREFIX)) and s.total]
        if expect_consumers:
            busy += [f"{name} (no consumer)" for name in WORK_QUEUES
                     if name in stats and stats[name].consumers == 0]
        audit = stats.get(topology.AUDIT_QUEUE)
        stable = audit is not None and previous.get(topology.AUDIT_QUEUE) == audit
        previous = stats
        waiting = busy + ([] if stable else [f"{topology.AUDIT_QUEUE} still growing"])
        return stats if not waiting else None

    try:
        found: dict[str, QueueStats] | None = wait_for(settled, timeout, 1.0, "the work queues to drain")
    except TimeoutError:
        raise AssertionError(f"not settled after {timeout:.0f}s, waiting for: {', '.join(waiting)}; "
                             f"queues: {previous}") from None
    assert found is not None
    return found


async def drain(url: str, queue: str, timeout: float = 120.0) -> list[AbstractIncomingMessage]:
    """Take every message now in `queue` (no_ack, prefetch 1000): fast for tens of thousands."""
    connection = await aio_pika.connect(url, timeout=30)
    try:
        channel = await connection.channel()
        await channel.set_qos(prefetch_count=1000)
        q = await channel.declare_queue(queue, passive=True)
        expected = int(q.declaration_result.message_count or 0)
        taken: list[AbstractIncomingMessage] = []
        done = asyncio.Event()
        if expected == 0:
            return taken

        async def take(message: AbstractIncomingMessage) -> None:
            taken.append(message)
            if len(taken) >= expected:
                done.set()

        tag = await q.consume(take, no_ack=True)
        try:
            await asyncio.wait_for(done.wait(), timeout)
        except TimeoutError:
            raise AssertionError(f"drained {len(taken)} of {expected} from {queue} in {timeout}s") from None
        await q.cancel(tag)
        return taken
    finally:
        await connection.close()


def x_death(message: AbstractIncomingMessage) -> list[Mapping[str, object]]:
    deaths = (message.headers or {}).get("x-death") or []
    return [d for d in deaths if isinstance(d, Mapping)] if isinstance(deaths, list) else []


def death_reasons(message: AbstractIncomingMessage) -> set[str]:
    return {_text(d.get("reason")) for d in x_death(message)}


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


# -- the ledger: every event_id accounted for exactly once --------------------------------------


@dataclass
class Ledger:
    """Outcomes of the sent requests as found in calc.results.audit and calc.dlq."""

    sent: list[str]
    completed: list[codec.Completed] = field(default_factory=list)
    failed: list[codec.Failed] = field(default_factory=list)
    dead: list[tuple[str, set[str]]] = field(default_factory=list)
    """(request event_id, x-death reasons) of every DLQ message."""

    @classmethod
    def of(cls, sent: Iterable[str], audit: Iterable[AbstractIncomingMessage],
           dlq: Iterable[AbstractIncomingMessage]) -> Ledger:
        ledger = cls(list(sent))
        for message in audit:
            if message.type == codec.TYPE_COMPLETED:
                ledger.completed.append(codec.decode_completed(message.body))
            elif message.type == codec.TYPE_FAILED:
                ledger.failed.append(codec.decode_failed(message.body))
            else:
                raise AssertionError(f"unexpected message in the audit queue: type {message.type!r}")
        for message in dlq:
            ledger.dead.append((codec.decode_request(message.body).event_id, death_reasons(message)))
        return ledger

    @classmethod
    async def collect(cls, url: str, sent: Iterable[str]) -> Ledger:
        audit = await drain(url, topology.AUDIT_QUEUE)
        dlq = await drain(url, topology.DLQ)
        return cls.of(sent, audit, dlq)

    @property
    def completed_ids(self) -> set[str]:
        return {e.request_event_id for e in self.completed}

    @property
    def failed_ids(self) -> set[str]:
        return {e.request_event_id for e in self.failed}

    @property
    def dead_ids(self) -> set[str]:
        return {event_id for event_id, _ in self.dead}

    @property
    def accounted(self) -> set[str]:
        return self.completed_ids | self.failed_ids | self.dead_ids

    @property
    def lost(self) -> set[str]:
        return set(self.sent) - self.accounted

    @property
    def unexpected(self) -> set[str]:
        return self.accounted - set(self.sent)

    @property
    def duplicates(self) -> int:
        """Outcome events beyond the first per request (results, failures and DLQ copies)."""
        return ((len(self.completed) - len(self.completed_ids)) + (len(self.failed) - len(self.failed_ids))
                + (len(self.dead) - len(self.dead_ids)))

    def duplicated_ids(self) -> Counter[str]:
        counts = Counter(e.request_event_id for e in self.completed)
        counts.update(e.request_event_id for e in self.failed)
        return Counter({k: n - 1 for k, n in counts.items() if n > 1})

    def assert_exactly_once(self, max_duplicates: int | None = 0) -> None:
        """Every sent id has exactly one outcome after dedupe: completed, or failed and dead-lettered."""
        sent = set(self.sent)
        assert len(sent) == len(self.sent), "the producer reported an event_id twice"
        assert not self.lost, f"{len(self.lost)} of {len(sent)} requests lost, e.g. {sorted(self.lost)[:5]}"
        assert not self.unexpected, f"outcomes of requests never sent: {sorted(self.unexpected)[:5]}"
        both = self.completed_ids & (self.failed_ids | self.dead_ids)
        assert not both, f"{len(both)} requests both completed and failed, e.g. {sorted(both)[:5]}"
        undead = self.failed_ids - self.dead_ids
        assert not undead, f"{len(undead)} CalculationFailed without a DLQ entry, e.g. {sorted(undead)[:5]}"
        if max_duplicates is not None:
            assert self.duplicates <= max_duplicates, (
                f"{self.duplicates} duplicate outcomes (at most {max_duplicates} allowed): "
                f"{self.duplicated_ids().most_common(5)}; by whom: {self.duplicated_by()}")

    def duplicated_by(self) -> dict[str, int]:
        """How many duplicated requests each combination of processing instances accounts for,
        e.g. {'consumer-a+consumer-b': 150}: a redelivery or a request published twice shows as
        two instances, a result retried within one consumer as one."""
        by: dict[str, list[str]] = {}
        for request_id, name in [*((e.request_event_id, e.processed_by) for e in self.completed),
                                 *((e.request_event_id, e.processed_by) for e in self.failed)]:
            by.setdefault(request_id, []).append(name)
        return dict(Counter("+".join(sorted(names)) for names in by.values() if len(names) > 1))


# -- recovery: when did results and confirms flow again ------------------------------------------


class FlowProbe:
    """Samples, four times a second, the audit queue depth and a bulk's confirmed count.

    Each sample opens a fresh connection, so the probe rides through broker restarts. The
    audit queue only grows when a consumer published a result, and the bulk's count only
    when the broker confirmed a request: together they say when the pipeline moved again.
    """

    def __init__(self, url: str, producer_log: Path | None = None, interval: float = 0.25) -> None:
        self._params = pika.URLParameters(url)
        self._params.socket_timeout = 2
        self._params.blocked_connection_timeout = 2
        self._params.connection_attempts = 1
        self._producer_log = producer_log
        self._interval = interval
        self.samples: list[tuple[float, int | None, int]] = []
        """(monotonic time, audit depth or None when unreachable, bulk confirmed)."""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> FlowProbe:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _depth(self) -> int | None:
        try:
            connection = pika.BlockingConnection(self._params)
        except (pika.exceptions.AMQPError, OSError):
            return None
        try:
            frame = connection.channel().queue_declare(topology.AUDIT_QUEUE, passive=True)
            return int(frame.method.message_count)
        except (pika.exceptions.AMQPError, OSError):
            return None
        finally:
            with contextlib.suppress(Exception):
                connection.close()

    def _run(self) -> None:
        while not self._stop.is_set():
            depth = self._depth()
            confirmed = bulk_confirmed(self._producer_log) if self._producer_log else 0
            self.samples.append((time.monotonic(), depth, confirmed))
            self._stop.wait(self._interval)

    def results_resumed(self, since: float) -> float | None:
        """Seconds from `since` until the audit queue grew beyond the depth first read after `since`.

        The first depth read after a crash is what the broker recovered (results published
        before the crash included); only growth past it is a consumer working again.
        """
        after = [(t, d) for t, d, _ in self.samples if t > since and d is not None]
        if not after:
            return None
        base = after[0][1]
        for t, depth in after[1:]:
            if depth > base:
                return t - since
        return None

    def confirms_resumed(self, since: float, settle: float = 1.0) -> float | None:
        """Seconds from `since` until the bulk's confirmed count grew past its value `settle` s later.

        The progress line is printed at most once a second, so a count printed just after a
        crash may still be catching up with confirms from before it.
        """
        before = [c for t, _, c in self.samples if t <= since + settle]
        base = max(before) if before else 0
        for t, _, confirmed in self.samples:
            if t > since + settle and confirmed > base:
                return t - since
        return None


def wait_until(predicate: object, timeout: float, description: str, interval: float = 0.2) -> None:
    """wait_for with an AssertionError: a chaos step that never happened is a test failure."""
    try:
        wait_for(predicate, timeout, interval, description)  # type: ignore[arg-type]
    except TimeoutError as exc:
        raise AssertionError(str(exc)) from None


def quorum_leader(node: PrivateNode, queue: str, vhost: str = "/") -> str:
    """The node name leading quorum queue `queue`, as `node` sees it."""
    rows = json.loads(node.admin.ctl(["list_queues", "-p", vhost, "name", "leader", "--formatter", "json"]))
    for row in rows:
        if row["name"] == queue:
            return str(row["leader"])
    raise AssertionError(f"{queue} not listed on {node.nodename}")


def seconds(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"

