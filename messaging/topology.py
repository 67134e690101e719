"""The whole calc.v1 topology as one table, and the one idempotent declaration every service runs."""

from __future__ import annotations

import argparse
import json
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, ExchangeType

from calculator import Operation
from messaging.backoff import Backoff
from messaging.errors import ConfigurationError
from messaging.logs import kv
from messaging.settings import Settings

log = logging.getLogger(__name__)

REQUESTS_EXCHANGE = "calc.requests"
RESULTS_EXCHANGE = "calc.results"
DEAD_LETTER_EXCHANGE = "calc.dlx"
WORK_QUEUE_PREFIX = "calc.work."
DLQ = "calc.dlq"
AUDIT_QUEUE = "calc.results.audit"
RETRY_PREFIX = "calc.retry."
JOURNAL_QUEUE = "calc.results.journal"
JOURNAL_DLX = "calc.results.journal.dlx"
JOURNAL_DLQ = "calc.results.journal.dlq"
JOURNAL = "journal"
"""The service that alone declares the journal's queues: the others never hear of it (docs/journal.md)."""
JOURNAL_DELIVERY_LIMIT = 100
"""Deliveries of one outcome before the broker moves it to calc.results.journal.dlq: far past any
run of journal crashes, so only an outcome that itself kills the journal every time gets there."""

REPLICATED_SINCE = (4, 0)
"""From RabbitMQ 4.0 (no classic mirroring) calc.dlq and calc.results.audit are quorum queues."""
DLQ_DELIVERY_LIMIT = 2_147_483_647
"""calc.dlq's quorum delivery limit: one no inspector reaches (a scan every second for 68 years).

Not unset: RabbitMQ 4.0 then applies 20, and the 21st peek drops every message. Not -1 (the
documented "unlimited"): a quorum queue without a limit puts a requeued message at the back, so
a partial scan (`list --limit`) or a letter dead-lettered during a scan would reorder the DLQ. With
a limit a requeued message goes back to the head, in the order handed back (docs/operations.md, "The DLQ
inspector")."""

REQUESTED_PREFIX = "calc.requested."
COMPLETED_PREFIX = "calc.completed."
FAILED_PREFIX = "calc.failed."


def requested_key(word: str) -> str:
    return REQUESTED_PREFIX + word


def completed_key(word: str) -> str:
    return COMPLETED_PREFIX + word


def failed_key(word: str) -> str:
    return FAILED_PREFIX + word


def word_of_requested_key(routing_key: str) -> str | None:
    """The operation word of a `calc.requested.<word>` key, or None for any other key."""
    if routing_key.startswith(REQUESTED_PREFIX) and len(routing_key) > len(REQUESTED_PREFIX):
        return routing_key[len(REQUESTED_PREFIX):]
    return None


def work_queue_kind(operation: Operation) -> str:
    return "heavy" if operation.heavy else "basic"


def work_queue(kind: str) -> str:
    """`basic` -> `calc.work.basic`."""
    return WORK_QUEUE_PREFIX + kind


def retry_exchange(tier: int) -> str:
    """Exchange (and queue) holding retries after attempt `tier`, all with that tier's delay."""
    return f"{RETRY_PREFIX}{tier}"


def retry_delay(settings: Settings, tier: int) -> float:
    """Seconds a retry of tier `tier` (1-based) waits: capped exponential backoff."""
    return Backoff(settings.retry_base_delay, settings.retry_max_delay).delay(tier)


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    kind: ExchangeType
    service: str = ""
    """Declared only by this service ("": by every service)."""


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: Mapping[str, Any]
    bindings: Sequence[tuple[str, str]] = field(default_factory=tuple)
    existing: Mapping[str, Any] | None = None
    """Arguments of the classic queue an older deployment declared; kept (with a warning) where
    that queue exists, since a queue cannot change its type in place."""
    service: str = ""
    """Declared only by this service ("": by every service). A queue nobody reads must not be
    made by services that never read it: it would fill up where that service is not deployed."""


def parse_version(text: object) -> tuple[int, ...] | None:
    """`4.0.5` (or b"3.10.7", "4.1.0-rc.1") -> (4, 0, 5); None when it is not a version."""
    if isinstance(text, bytes):
        text = text.decode(errors="replace")
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", str(text)) if text is not None else None
    return tuple(int(part) for part in match.groups() if part is not None) if match else None


def replicated(version: tuple[int, ...] | None) -> bool:
    """True when calc.dlq and calc.results.audit are quorum queues on a broker of `version`.

    Before 4.0 they stay classic queues (3.x can still mirror them by policy); an unknown version
    is taken for an old one, whose declaration works everywhere.
    """
    return version is not None and version >= REPLICATED_SINCE


async def broker_version(channel: AbstractChannel) -> tuple[int, ...] | None:
    """The RabbitMQ version the server announced when `channel`'s connection opened."""
    underlay = await channel.get_underlay_channel()
    return parse_version(underlay.connection.server_properties.get("version"))


@dataclass(frozen=True)
class Topology:
    exchanges: Sequence[ExchangeSpec]
    queues: Sequence[QueueSpec]


def _quorum(dead_letter_exchange: str, **extra: Any) -> dict[str, Any]:
    # at-least-once dead-lettering needs overflow reject-publish: a full target must push back,
    # never drop (RabbitMQ docs, "Quorum Queues: at-least-once dead-lettering").
    return {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": dead_letter_exchange,
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        **extra,
    }


def build(settings: Settings, version: tuple[int, ...] | None = REPLICATED_SINCE) -> Topology:
    """The contract's topology table for a broker of `version`, with the bounds from settings."""
    exchanges = [
        ExchangeSpec(REQUESTS_EXCHANGE, ExchangeType.TOPIC),
        ExchangeSpec(RESULTS_EXCHANGE, ExchangeType.TOPIC),
        ExchangeSpec(DEAD_LETTER_EXCHANGE, ExchangeType.TOPIC),
    ]
    queues = []
    for kind in ("basic", "heavy"):
        keys = [requested_key(op.word) for op in Operation if work_queue_kind(op) == kind]
        queues.append(QueueSpec(
            work_queue(kind),
            _quorum(DEAD_LETTER_EXCHANGE,
                    **{"x-max-length": settings.work_queue_max_length,
                       "x-delivery-limit": settings.delivery_limit}),
            tuple((REQUESTS_EXCHANGE, key) for key in keys),
        ))
    # The inspector peeks by holding and requeuing: nothing may count those peeks or move what it
    # hands back. A classic queue puts a requeued message back in its place and has no delivery
    # limit, but lives on one node; on 4.0 and later a quorum queue is replicated, and with an
    # unreachable delivery limit it counts nothing and returns requeued messages to the head.
    classic_dlq = {"x-queue-type": "classic"}
    classic_audit = {"x-queue-type": "classic", "x-max-length": settings.audit_max_length,
                     "x-overflow": "drop-head"}
    if replicated(version):
        queues.append(QueueSpec(
            DLQ, {"x-queue-type": "quorum", "x-delivery-limit": DLQ_DELIVERY_LIMIT},
            ((DEAD_LETTER_EXCHANGE, "#"),), existing=classic_dlq))
        queues.append(QueueSpec(
            AUDIT_QUEUE, {**classic_audit, "x-queue-type": "quorum"}, ((RESULTS_EXCHANGE, "#"),),
            existing=classic_audit))
    else:
        queues.append(QueueSpec(DLQ, classic_dlq, ((DEAD_LETTER_EXCHANGE, "#"),)))
        queues.append(QueueSpec(AUDIT_QUEUE, classic_audit, ((RESULTS_EXCHANGE, "#"),)))
    # One fanout exchange and queue per retry tier: every message in a tier waits the same
    # delay, so expiry at the head never blocks a shorter one behind a longer one. Expired
    # messages go back to calc.requests with their original routing key.
    for tier in range(1, settings.max_attempts):
        name = retry_exchange(tier)
        exchanges.append(ExchangeSpec(name, ExchangeType.FANOUT))
        queues.append(QueueSpec(name, _quorum(REQUESTS_EXCHANGE), ((name, ""),)))
    # The journal's inbox: every outcome, unbounded (a bound would drop rows or push back on the
    # consumer while the journal is away; the broker's disk alarm is its limit). Outcomes it
    # cannot record, and one that keeps killing it, go to its own DLQ (docs/journal.md).
    exchanges.append(ExchangeSpec(JOURNAL_DLX, ExchangeType.TOPIC, service=JOURNAL))
    queues.append(QueueSpec(
        JOURNAL_QUEUE, _quorum(JOURNAL_DLX, **{"x-delivery-limit": JOURNAL_DELIVERY_LIMIT}),
        ((RESULTS_EXCHANGE, "#"),), service=JOURNAL))
    queues.append(QueueSpec(JOURNAL_DLQ, {"x-queue-type": "quorum"}, ((JOURNAL_DLX, "#"),),
                            service=JOURNAL))
    return Topology(tuple(exchanges), tuple(queues))


def declared_by(topology: Topology, service: str) -> Topology:
    """The part of `topology` that `service` declares: everyone's, and its own."""
    return Topology(tuple(e for e in topology.exchanges if e.service in ("", service)),
                    tuple(q for q in topology.queues if q.service in ("", service)))


@dataclass
class Declared:
    """Exchange objects of a declared topology, by name."""

    exchanges: dict[str, AbstractExchange]
    queues: dict[str, AbstractQueue]


async def _type_to_declare(channel: AbstractChannel, queue: QueueSpec) -> Mapping[str, Any]:
    """`queue.arguments`, or, where an older deployment made the queue classic, its arguments then.

    Tried on a channel of its own: the refusal of another queue type closes the channel.
    """
    if queue.existing is None:
        return queue.arguments
    underlay = await channel.get_underlay_channel()
    probe = await underlay.connection.channel(publisher_confirms=False)
    try:
        await probe.queue_declare(queue.name, durable=True, arguments=dict(queue.arguments))
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        if "x-queue-type" not in str(exc):
            return queue.arguments  # another argument differs: the declaration says which
        log.warning(
            "the queue exists as a classic queue, which RabbitMQ 4 does not replicate (a lost node "
            "loses what it holds); using it as it is. To replicate it: docs/operations.md, 'Moving "
            "calc.dlq and calc.results.audit to quorum queues'", extra=kv(queue=queue.name))
        return queue.existing
    finally:
        if not probe.is_closed:
            await probe.close()
    return queue.arguments


async def declare(channel: AbstractChannel, settings: Settings, service: str = "") -> Declared:
    """Declare (or, with CALC_DECLARE_TOPOLOGY=false, only check) the topology `service` uses.

    The queue types depend on the broker's version (see `replicated`).
    """
    topology = declared_by(build(settings, await broker_version(channel)), service)
    passive = not settings.declare_topology
    exchanges: dict[str, AbstractExchange] = {}
    queues: dict[str, AbstractQueue] = {}
    current = ""
    try:
        for ex in topology.exchanges:
            current = f"exchange {ex.name}"
            exchanges[ex.name] = await channel.declare_exchange(
                ex.name, ex.kind, durable=True, passive=passive)
        for q in topology.queues:
            current = f"queue {q.name}"
            arguments = q.arguments if passive else await _type_to_declare(channel, q)
            queue = await channel.declare_queue(
                q.name, durable=True, arguments=dict(arguments), passive=passive)
            queues[q.name] = queue
            if not passive:
                for exchange, key in q.bindings:
                    await queue.bind(exchanges[exchange], key)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise ConfigurationError(
            f"{current} exists with other arguments than this configuration declares ({exc}); "
            "the bounds (CALC_WORK_QUEUE_MAX_LENGTH, CALC_DELIVERY_LIMIT, CALC_AUDIT_MAX_LENGTH) "
            "must be the same for every service") from None
    except aiormq.exceptions.ChannelAccessRefused as exc:
        raise ConfigurationError(
            f"{current}: ACCESS_REFUSED ({exc}); a user without configure permission must run "
            "with CALC_DECLARE_TOPOLOGY=false (the broker's definitions declare the topology)") from None
    except aiormq.exceptions.ChannelNotFoundEntity:
        raise ConfigurationError(
            f"{current} does not exist; declare the topology first "
            "(CALC_DECLARE_TOPOLOGY=true, or the broker's definitions)") from None
    return Declared(exchanges, queues)


def definitions(settings: Settings, vhost: str,
                version: tuple[int, ...] | None = REPLICATED_SINCE) -> dict[str, Any]:
    """The topology as RabbitMQ definitions (exchanges, queues, bindings) for `vhost` on a broker
    of `version` (by default the replicated types that compose and Kubernetes deploy)."""
    topology = build(settings, version)
    return {
        "exchanges": [
            {"name": ex.name, "vhost": vhost, "type": ex.kind.value, "durable": True,
             "auto_delete": False, "internal": False, "arguments": {}}
            for ex in topology.exchanges
        ],
        "queues": [
            {"name": q.name, "vhost": vhost, "durable": True, "auto_delete": False,
             "arguments": dict(q.arguments)}
            for q in topology.queues
        ],
        "bindings": [
            {"source": exchange, "vhost": vhost, "destination": q.name,
             "destination_type": "queue", "routing_key": key, "arguments": {}}
            for q in topology.queues for exchange, key in q.bindings
        ],
    }


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m messaging.topology definitions --vhost calc`: print the definitions JSON."""
    parser = argparse.ArgumentParser(prog="python -m messaging.topology")
    parser.add_argument("command", choices=["definitions"])
    parser.add_argument("--vhost", default="/")
    parser.add_argument("--broker-version", default=".".join(map(str, REPLICATED_SINCE)),
                        help="RabbitMQ version the definitions are for (queue types; default %(default)s)")
    args = parser.parse_args(argv)
    version = parse_version(args.broker_version)
    if version is None:
        parser.error(f"--broker-version {args.broker_version!r} is not a version like 4.0 or 3.10.7")
    json.dump(definitions(Settings.from_env(), args.vhost, version), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

