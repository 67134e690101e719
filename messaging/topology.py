"""The whole calc.v1 topology as one table, and the one idempotent declaration every service runs."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiormq
from aio_pika.abc import AbstractChannel, AbstractExchange, AbstractQueue, ExchangeType

from calculator import Operation
from messaging.errors import ConfigurationError
from messaging.settings import Settings

REQUESTS_EXCHANGE = "calc.requests"
RESULTS_EXCHANGE = "calc.results"
DEAD_LETTER_EXCHANGE = "calc.dlx"
WORK_QUEUE_PREFIX = "calc.work."
DLQ = "calc.dlq"
AUDIT_QUEUE = "calc.results.audit"
RETRY_PREFIX = "calc.retry."

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
    delay: float = settings.retry_base_delay * (2 ** (tier - 1))
    return min(delay, settings.retry_max_delay)


@dataclass(frozen=True)
class ExchangeSpec:
    name: str
    kind: ExchangeType


@dataclass(frozen=True)
class QueueSpec:
    name: str
    arguments: Mapping[str, Any]
    bindings: Sequence[tuple[str, str]] = field(default_factory=tuple)


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


def build(settings: Settings) -> Topology:
    """The contract's topology table, with the bounds taken from settings."""
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
    # A classic queue: no delivery limit applies, and a requeued message returns to its place,
    # so the inspector can peek any number of times without losing or reordering anything.
    queues.append(QueueSpec(DLQ, {"x-queue-type": "classic"}, ((DEAD_LETTER_EXCHANGE, "#"),)))
    queues.append(QueueSpec(
        AUDIT_QUEUE,
        {"x-queue-type": "classic", "x-max-length": settings.audit_max_length,
         "x-overflow": "drop-head"},
        ((RESULTS_EXCHANGE, "#"),),
    ))
    # One fanout exchange and queue per retry tier: every message in a tier waits the same
    # delay, so expiry at the head never blocks a shorter one behind a longer one. Expired
    # messages go back to calc.requests with their original routing key.
    for tier in range(1, settings.max_attempts):
        name = retry_exchange(tier)
        exchanges.append(ExchangeSpec(name, ExchangeType.FANOUT))
        queues.append(QueueSpec(name, _quorum(REQUESTS_EXCHANGE), ((name, ""),)))
    return Topology(tuple(exchanges), tuple(queues))


@dataclass
class Declared:
    """Exchange objects of a declared topology, by name."""

    exchanges: dict[str, AbstractExchange]
    queues: dict[str, AbstractQueue]


async def declare(channel: AbstractChannel, settings: Settings) -> Declared:
    """Declare (or, with CALC_DECLARE_TOPOLOGY=false, only check) the whole topology."""
    topology = build(settings)
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
            queue = await channel.declare_queue(
                q.name, durable=True, arguments=dict(q.arguments), passive=passive)
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


def definitions(settings: Settings, vhost: str) -> dict[str, Any]:
    """The topology as RabbitMQ definitions (exchanges, queues, bindings) for `vhost`."""
    topology = build(settings)
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
    args = parser.parse_args(argv)
    json.dump(definitions(Settings.from_env(), args.vhost), sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

