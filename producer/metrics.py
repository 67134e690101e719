"""Every metric the producer defines (served on CALC_METRICS_PORT by `run` and `bulk`)."""

from __future__ import annotations

from prometheus_client import Counter

PUBLISHED = Counter("calc_producer_published_total", "Requests published", ["operation"])
CONFIRMED = Counter("calc_producer_confirmed_total", "Requests confirmed by the broker",
                    ["operation"])
RETRIED = Counter("calc_producer_publish_retries_total",
                  "Publishes retried after a nack, timeout or lost channel", ["operation"])
