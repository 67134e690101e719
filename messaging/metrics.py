"""The label cache every service counts through, and builders of the metrics every service has alike.

The metrics themselves are each service's own (its `metrics` module builds them); nothing here
defines one at import time.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import platform
from dataclasses import dataclass
from typing import Generic, TypeVar, cast

import prometheus_client
from prometheus_client import CollectorRegistry, Gauge, Histogram
from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)


class Labels(Generic[M]):
    """`metric.labels(*values)`, looked up once per label set.

    labels() takes a lock and builds its key on every call; the consumer and the producer count
    on every message.
    """

    __slots__ = ("_children", "metric")

    def __init__(self, metric: M) -> None:
        self.metric = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


_caches: dict[MetricWrapperBase, Labels[MetricWrapperBase]] = {}


def labelled(metric: M, *values: str) -> M:
    """`Labels(metric)(*values)` for a caller that holds no `Labels` of its own (the producer)."""
    cache = _caches.get(metric)
    if cache is None:
        cache = _caches[metric] = Labels(metric)
    return cast(M, cache(*values))


CONFIRM_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
"""Seconds: 1 is CalcPublishConfirmSlow's threshold, 10 the default CALC_PUBLISH_TIMEOUT."""


def confirm_seconds(registry: CollectorRegistry | None) -> Histogram:
    """`calc_publish_confirm_seconds`, in `registry` (None: the default one)."""
    return Histogram("calc_publish_confirm_seconds", "Time from writing a publish to its broker confirm",
                     buckets=CONFIRM_BUCKETS, registry=registry or prometheus_client.REGISTRY)


@dataclass(frozen=True)
class BrokerGauges:
    """What every service says about itself and its broker connection (messaging.connection.watch)."""

    build_info: Gauge
    connected: Gauge
    blocked: Gauge


def broker_gauges(registry: CollectorRegistry) -> BrokerGauges:
    """`calc_build_info{version}` (set to 1 here), `calc_broker_connected`, `calc_broker_blocked`.

    Built in a service's own registry: tests run several services in one process, and these
    names are every service's.
    """
    build_info = Gauge("calc_build_info", "Always 1; the version of calc-events this process runs",
                       ["version", "python"], registry=registry)
    build_info.labels(_version(), platform.python_version()).set(1)
    return BrokerGauges(
        build_info,
        Gauge("calc_broker_connected", "1 while the broker connection is open, 0 while it is lost "
              "(reconnecting)", registry=registry),
        Gauge("calc_broker_blocked", "1 while the broker blocks the connection (connection.blocked: "
              "a memory or disk alarm)", registry=registry))


def _version() -> str:
    try:
        return importlib.metadata.version("calc-events")
    except importlib.metadata.PackageNotFoundError:  # run from a checkout that was never installed
        return "unknown"


def expose(registry: CollectorRegistry, into: CollectorRegistry | None = None) -> None:
    """Serve a service's own `registry` from `into` (default: prometheus_client's), without `_created`.

    Called where a service starts serving /metrics. `_created` doubles every counter and histogram
    with a series Prometheus ignores (it reads counter resets from the values). Again for the same
    registry: replaced, not added twice (tests start a service more than once in one process).
    """
    prometheus_client.disable_created_metrics()  # type: ignore[no-untyped-call]
    target = into or prometheus_client.REGISTRY
    with contextlib.suppress(KeyError):
        target.unregister(registry)
    target.register(registry)
