"""Every metric the consumer exports, in a registry of its own that `__main__` serves.

Its own registry: tests run consumers and producers in one process, and both count
`calc_publish_outcomes_total`; only the process that serves /metrics adds this one to the
default registry.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from messaging.metrics import broker_gauges, confirm_seconds

REGISTRY = CollectorRegistry(auto_describe=True)

BROKER = broker_gauges(REGISTRY)  # calc_build_info, calc_broker_connected, calc_broker_blocked
CONFIRMS = confirm_seconds(REGISTRY)  # calc_publish_confirm_seconds of the outcome publishes

PROCESSED = Counter("calc_consumer_messages_total", "Requests handled, by operation and outcome",
                    ["operation", "outcome"], registry=REGISTRY)
FAILURES = Counter("calc_consumer_failures_total", "Requests dead-lettered, by reason", ["reason"],
                   registry=REGISTRY)
RETRIES = Counter("calc_consumer_retries_total", "Transient failures scheduled for a delayed retry",
                  registry=REGISTRY)
IN_FLIGHT = Gauge("calc_consumer_in_flight", "Deliveries being processed now", registry=REGISTRY)
DURATION = Histogram("calc_consumer_processing_seconds", "Time from delivery to ack or reject",
                     buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5),
                     registry=REGISTRY)
AGE = Histogram("calc_consumer_request_age_seconds",
                "Age of a request (its occurred_at) when its result was confirmed",
                buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300),
                registry=REGISTRY)
PUBLISH_OUTCOMES = Counter(
    "calc_publish_outcomes_total",
    "Confirmed publishes and why others were not confirmed, by exchange and operation word",
    # outcome: confirmed|nacked|returned|refused|timeout|lost|unencodable
    ["app", "exchange", "operation", "outcome"], registry=REGISTRY)
