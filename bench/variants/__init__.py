"""Consumer variants: ours and the baselines of issue 7, each run alone in its own process."""

from __future__ import annotations

VARIANTS = {
    "ours": "ours (aio-pika, consumer.service as shipped)",
    "ours_quiet": "ours, CALC_LOG_LEVEL=WARNING (for reference)",
    "ours_traced": "ours, tracing on: every delivery sampled, OTLP/HTTP",
    "aiormq": "(b) raw aiormq, every trick",
    "aiopika_iter": "(c) aio-pika queue.iterator()",
    "aiopika_callback": "(d) aio-pika consume callback",
    "pika_blocking": "(e) pika BlockingConnection, prefetch 1",
    "faststream": "(f) FastStream RabbitBroker",
    "pika_pipelined": "(g) pika AsyncioConnection, pipelined",
}
"""Name -> label, in the order of the table."""

PREFETCH = {"aiormq": 1000, "aiopika_iter": 100, "aiopika_callback": 1000, "pika_blocking": 1,
            "faststream": 1000, "pika_pipelined": 1000}
"""Prefetch of each baseline; ours takes CALC_PREFETCH (its default) as shipped."""
