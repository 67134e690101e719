"""(e) The tutorial style: pika BlockingConnection, prefetch 1, confirm each publish, then ack."""

from __future__ import annotations

import pika

from bench import work


def run(url: str, count: int, prefetch: int | None) -> work.Meter:
    connection = pika.BlockingConnection(pika.URLParameters(url))
    meter = work.Meter(count)
    try:
        channel = connection.channel()
        channel.confirm_delivery()
        channel.basic_qos(prefetch_count=prefetch or 1)

        def on_message(ch, method, properties, body):  # type: ignore[no-untyped-def]
            out = work.process(body, method.routing_key, properties.correlation_id)
            # with confirms on, basic_publish blocks until the broker confirms (or raises)
            ch.basic_publish(work.RESULTS_EXCHANGE, out.routing_key, out.body,
                             work.pika_properties(out), mandatory=True)
            if out.ok:
                ch.basic_ack(method.delivery_tag)
            else:
                ch.basic_reject(method.delivery_tag, requeue=False)
            meter.add()
            if meter.done:
                ch.stop_consuming()

        channel.basic_consume(work.WORK_QUEUE, on_message)
        meter.start()
        channel.start_consuming()
    finally:
        connection.close()
    return meter
