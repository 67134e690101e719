"""Every metric the producer defines (served on CALC_METRICS_PORT by `run` and `bulk`).

The counters are in prometheus_client's registry; the gauges every service has alike in `REGISTRY`,
which `__main__` adds to it (tests run producers beside other services in one process). Its
`calc_publish_outcomes_total` and `calc_publish_confirm_seconds` are messaging.publisher's.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter

from messaging.metrics import broker_gauges

REGISTRY = CollectorRegistry(auto_describe=True)
BROKER = broker_gauges(REGISTRY)  # calc_build_info, calc_broker_connected, calc_broker_blocked

PUBLISHED = Counter("calc_producer_published_total", "Requests published", ["operation"])
CONFIRMED = Counter("calc_producer_confirmed_total", "Requests confirmed by the broker",
                    ["operation"])
RETRIED = Counter("calc_producer_publish_retries_total",
                  "Publishes retried after a nack, timeout or lost channel", ["operation"])
