"""The gauges /metrics reads from the ledger and Redis are reused for ``METRICS_CACHE_S``."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from app.web.metrics import CachedCollector

pytestmark = pytest.mark.unit


class Counting(Collector):
    def __init__(self) -> None:
        self.reads = 0

    def collect(self) -> Iterator[GaugeMetricFamily]:
        self.reads += 1
        yield GaugeMetricFamily("reads", "how often the source was read", value=self.reads)


def _value(collector: Collector) -> float:
    (family,) = collector.collect()
    return float(family.samples[0].value)


def test_a_read_is_reused_until_it_is_older_than_the_interval() -> None:
    now = [100.0]
    inner = Counting()
    cached = CachedCollector(inner, 5.0, clock=lambda: now[0])
    assert [_value(cached) for _ in range(3)] == [1.0, 1.0, 1.0]
    now[0] = 104.9
    assert _value(cached) == 1.0
    now[0] = 105.0
    assert _value(cached) == 2.0
    assert inner.reads == 2


def test_a_zero_interval_reads_every_time() -> None:
    inner = Counting()
    cached = CachedCollector(inner, 0.0, clock=lambda: 0.0)
    assert [_value(cached) for _ in range(3)] == [1.0, 2.0, 3.0]
