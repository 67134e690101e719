"""`python -m bench.publishers ours|aiormq --count N [--in-flight K]`: a bulk publish, one JSON line.

ours: producer.service.Producer.bulk as shipped (CALC_PUBLISH_IN_FLIGHT). aiormq: K worker
coroutines, each publishing and awaiting its confirm in turn, so K confirms are in flight with no
task per message. Both build each request (protobuf and properties) as they go.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime

import aiormq
from google.protobuf.timestamp_pb2 import Timestamp
from pamqp.commands import Basic

from bench.workload import BASIC_OPERATIONS
from messaging import codec, enums, topology
from producer.generator import Spec


def specs(seed: int) -> Iterator[Spec]:
    rng = random.Random(seed)
    while True:
        yield Spec(rng.choice(BASIC_OPERATIONS),
                   (round(rng.uniform(-1000, 1000), 3), round(rng.uniform(1, 1000), 3)))


async def ours(count: int) -> float:
    from messaging import logs
    from messaging.connection import connect
    from messaging.settings import Settings
    from producer.service import Producer

    settings = Settings.from_env()
    logs.configure(settings)
    connection = await connect(settings, "bench producer")
    try:
        producer = Producer(settings, connection)
        await producer.start()
        report = await producer.bulk(specs(1), count, None, progress=False)
        if report.confirmed != count:
            raise SystemExit(f"ours confirmed {report.confirmed} of {count}")
        return report.seconds
    finally:
        await connection.close()


async def raw(count: int, in_flight: int) -> float:
    connection = await aiormq.connect(os.environ["RABBITMQ_URL"])
    try:
        channel = await connection.channel(publisher_confirms=True)
        source = specs(1)
        left = count

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                spec = next(source)
                ts = Timestamp()
                ts.GetCurrentTime()
                event_id = codec.new_event_id()
                body = codec.Requested(event_id=event_id, occurred_at=ts,
                                       operation=enums.proto_operation(spec.operation),  # type: ignore[arg-type]
                                       operands=spec.operands, source="bench").SerializeToString()
                props = Basic.Properties(content_type=codec.CONTENT_TYPE, message_type=codec.TYPE_REQUESTED,
                                         message_id=event_id, correlation_id=event_id, delivery_mode=2,
                                         app_id=codec.APP_PRODUCER, headers={codec.ATTEMPT_HEADER: 1},
                                         timestamp=datetime.fromtimestamp(ts.seconds, UTC))
                confirm = await channel.basic_publish(
                    body, exchange=topology.REQUESTS_EXCHANGE,
                    routing_key=topology.requested_key(spec.operation.word), properties=props,
                    mandatory=True, wait=False)
                if not isinstance(confirm, Basic.Ack):
                    raise SystemExit(f"raw publish not confirmed: {confirm!r}")

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(in_flight)))
        return time.perf_counter() - started
    finally:
        await connection.close()


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.publishers")
    parser.add_argument("name", choices=["ours", "aiormq"])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--in-flight", type=int, default=500)
    args = parser.parse_args()
    cpu = time.process_time()
    seconds = asyncio.run(ours(args.count) if args.name == "ours" else raw(args.count, args.in_flight))
    cpu = time.process_time() - cpu  # includes connecting and declaring: a few ms
    json.dump({"publisher": args.name, "count": args.count, "seconds": seconds,
               "rate": args.count / seconds, "cpu_us_per_message": cpu / args.count * 1e6}, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
