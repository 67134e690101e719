"""The label cache every service counts through; the metrics themselves are each service's own."""

from __future__ import annotations

from typing import Generic, TypeVar, cast

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
