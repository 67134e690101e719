"""Every metric of the journal, defined here and nowhere else.

Its own ones in prometheus_client's registry; the gauges every service has alike in `REGISTRY`,
which `serve` adds to it (tests run the journal beside other services in one process).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from messaging.metrics import broker_gauges

REGISTRY = CollectorRegistry(auto_describe=True)
BROKER = broker_gauges(REGISTRY)  # calc_build_info, calc_broker_connected, calc_broker_blocked

OUTCOMES = Counter(
    "calc_journal_outcomes_total",
    "Outcome events taken from calc.results.journal, by what they did to the journal: recorded "
    "(a request's first row), updated (another outcome of a known request: a duplicate on the wire "
    "or one that supersedes), seen_again (a redelivery of an event already recorded), dead_lettered",
    ["result"])
DEAD_LETTERED = Counter("calc_journal_dead_lettered_total",
                        "Outcomes sent to calc.results.journal.dlq, by reason", ["reason"])
BATCHES = Counter("calc_journal_batches_total", "Transactions committed, each followed by one multiple ack")
BATCH_SIZE = Histogram("calc_journal_batch_size", "Outcomes per committed batch",
                       buckets=(1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000))
WRITE_SECONDS = Histogram("calc_journal_write_seconds", "Time to write and commit one batch",
                          buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5))
DATABASE_ERRORS = Counter("calc_journal_database_errors_total",
                          "Failed writes, by kind: unavailable, refused (read-only, full, permission), row",
                          ["kind"])
HELD = Gauge("calc_journal_held", "Deliveries received and not yet acked (waiting for their batch)")
READY = Gauge("calc_journal_ready", "1 while connected to the broker and the database and consuming")
