"""Every metric the DLQ inspector defines: computed from `serve`'s last report at scrape time.

Beside them, in `REGISTRY`, the gauges every service has alike; `serve` never publishes, so it
has no `calc_publish_confirm_seconds` (`replay` is a command, not scraped).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric

from dlq_inspector.explain import OPERATION_CHOICES, REASONS
from dlq_inspector.report import Report
from messaging.metrics import broker_gauges

if TYPE_CHECKING:
    from dlq_inspector.serve import State

REGISTRY = CollectorRegistry(auto_describe=True)
BROKER = broker_gauges(REGISTRY)  # calc_build_info, calc_broker_connected, calc_broker_blocked


def dlq_messages(report: Report) -> GaugeMetricFamily:
    """`calc_dlq_messages{reason,operation}`: one series per pair, so `sum(calc_dlq_messages)`
    is the DLQ's size and `sum by (reason)` its breakdown.

    Every known pair is there, 0 when none (a series that appears only once it is non-zero
    breaks rate() and alerts on absence); a pair outside the known ones is added as seen.
    """
    family = GaugeMetricFamily("calc_dlq_messages", "Messages in calc.dlq at the last scan, "
                               "by failure reason and operation", labels=["reason", "operation"])
    counts = report.by_reason_and_operation
    known = [(reason, operation) for reason in REASONS for operation in OPERATION_CHOICES]
    for pair in [*known, *sorted(set(counts) - set(known))]:
        family.add_metric(list(pair), counts.get(pair, 0))
    return family


class DlqCollector:
    """Prometheus metrics computed from the last report at scrape time (a scrape never scans)."""

    def __init__(self, state: State) -> None:
        self.state = state

    def describe(self) -> Iterable[Metric]:
        return []  # do not call collect() at registration

    def collect(self) -> Iterable[Metric]:
        state = self.state
        report = state.report
        yield CounterMetricFamily("calc_dlq_scans_total", "Scans of the DLQ completed by this inspector",
                                  value=state.scans)
        yield CounterMetricFamily("calc_dlq_scan_errors_total", "Scans of the DLQ that failed",
                                  value=state.errors)
        if report is None:
            return
        yield dlq_messages(report)
        yield GaugeMetricFamily("calc_dlq_oldest_age_seconds",
                                "Seconds since the oldest message in calc.dlq died (0 when empty)",
                                value=report.oldest_age() or 0.0)
        yield GaugeMetricFamily("calc_dlq_scan_complete",
                                "1 if the last scan read every message, 0 if another reader held some",
                                value=1.0 if report.complete else 0.0)
        yield GaugeMetricFamily("calc_dlq_last_scan_timestamp_seconds",
                                "Unix time of the last completed scan",
                                value=report.scanned_at.timestamp())
        yield GaugeMetricFamily("calc_dlq_scan_duration_seconds", "Duration of the last scan",
                                value=report.scan_seconds)
