"""The metrics every service has alike: built per registry, served without `_created`, and named
by Prometheus conventions (no label in a metric's name) across every family the services export."""

from __future__ import annotations

import asyncio
import importlib.metadata
import weakref
from types import SimpleNamespace

import prometheus_client
from prometheus_client import CollectorRegistry, Counter, generate_latest

from consumer import metrics as consumer_metrics
from dlq_inspector import metrics as inspector_metrics
from journal import metrics as journal_metrics
from messaging import publisher
from messaging.connection import _blocked_now
from messaging.metrics import broker_gauges, confirm_seconds, expose
from producer import metrics as producer_metrics

SERVICE_REGISTRIES = (consumer_metrics.REGISTRY, producer_metrics.REGISTRY, journal_metrics.REGISTRY,
                      inspector_metrics.REGISTRY)


def test_build_info_is_one_with_the_installed_version() -> None:
    registry = CollectorRegistry()
    broker_gauges(registry)
    (family,) = [f for f in registry.collect() if f.name == "calc_build_info"]
    (sample,) = family.samples
    assert sample.value == 1
    assert sample.labels["version"] == importlib.metadata.version("calc-events")


def test_every_service_has_the_gauges_in_a_registry_of_its_own() -> None:
    for registry in SERVICE_REGISTRIES:
        names = {f.name for f in registry.collect()}
        assert {"calc_build_info", "calc_broker_connected", "calc_broker_blocked"} <= names
    assert len({id(r) for r in SERVICE_REGISTRIES}) == 4
    assert "calc_publish_confirm_seconds" in {f.name for f in consumer_metrics.REGISTRY.collect()}


def test_exposed_metrics_have_no_created_series_and_exposing_twice_is_harmless() -> None:
    mine = CollectorRegistry()
    Counter("calc_test_things", "things", registry=mine).inc()
    confirm_seconds(mine).observe(0.3)
    served = CollectorRegistry()
    expose(mine, served)
    expose(mine, served)
    text = generate_latest(served).decode()
    assert "_created" not in text
    assert text.count("calc_test_things_total 1.0") == 1
    assert 'calc_publish_confirm_seconds_bucket{le="0.5"} 1.0' in text
    assert 'calc_publish_confirm_seconds_bucket{le="0.25"} 0.0' in text


def test_the_confirm_histogram_has_the_buckets_the_alerts_read() -> None:
    buckets = {s.labels["le"] for f in consumer_metrics.REGISTRY.collect()
               if f.name == "calc_publish_confirm_seconds" for s in f.samples if "le" in s.labels}
    assert {"0.5", "1.0", "2.5", "+Inf"} <= buckets


def _families() -> list[prometheus_client.Metric]:
    state = SimpleNamespace(report=None, scans=0, errors=0)
    collected = [*prometheus_client.REGISTRY.collect(), *inspector_metrics.DlqCollector(state).collect()]  # type: ignore[arg-type]
    for registry in SERVICE_REGISTRIES:
        collected += registry.collect()
    return collected


def test_no_metric_name_holds_a_label_name() -> None:
    """`calc_dlq_messages_by_reason` is a label on one family: no `_by_`, no label as a name's word."""
    families = [f for f in _families() if f.name.startswith("calc_")]
    assert {"calc_consumer_messages", "calc_journal_outcomes", "calc_producer_published"} <= {
        f.name for f in families}
    for family in families:
        assert "_by_" not in family.name, family.name
        words = set(family.name.split("_"))
        for sample in family.samples:
            assert not (set(sample.labels) - {"le"}) & words, (family.name, sample.labels)


class _Connection:
    transport: object = None


def test_blocked_reads_the_event_aiormq_clears_on_connection_blocked() -> None:
    unblocked = asyncio.Event()
    aiormq_connection = SimpleNamespace(**{publisher._UNBLOCKED: unblocked})
    connection = _Connection()
    connection.transport = SimpleNamespace(connection=aiormq_connection)
    ref = weakref.ref(connection)
    assert _blocked_now(ref) == 1.0  # type: ignore[arg-type]
    unblocked.set()
    assert _blocked_now(ref) == 0.0  # type: ignore[arg-type]
    connection.transport = None  # reconnecting: no transport, not blocked
    assert _blocked_now(ref) == 0.0  # type: ignore[arg-type]

