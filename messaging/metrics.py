"""Prometheus helpers shared by the services."""

from __future__ import annotations

from typing import TypeVar, cast

from prometheus_client.metrics import MetricWrapperBase

M = TypeVar("M", bound=MetricWrapperBase)

_children: dict[tuple[MetricWrapperBase, tuple[str, ...]], MetricWrapperBase] = {}


def labelled(metric: M, *values: str) -> M:
    """`metric.labels(*values)`, looked up once per label set.

    labels() takes a lock and builds its key on every call; the consumer and the producer count
    on every message.
    """
    key = (metric, values)
    child = _children.get(key)
    if child is None:
        child = _children[key] = metric.labels(*values)
    return cast(M, child)
