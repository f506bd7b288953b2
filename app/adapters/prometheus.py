"""prometheus_client's multiprocess mode, switched on by an entry point after the metrics exist.

prometheus_client decides at import whether values live in this process's memory or in files shared
by every process of the host (``PROMETHEUS_MULTIPROC_DIR``), and a metric picks its value class when
it is made. alarm-bridge declares its metrics at import (``app.telemetry``) and learns the directory
later, from the settings; switching over then needs prometheus_client's internals: the environment
variable its file values read, its ``values.ValueClass``, and each metric's private ``_labelnames``,
``_lock``, ``_metrics`` and ``_metric_init``. They are used here only, and
``tests/unit/app/adapters/test_prometheus.py`` fails when an upgrade changes them.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, values
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.multiprocess import MultiProcessCollector

# prometheus_client's own switch: its file-backed values read the directory from here, in this
# process and in every child it starts.
DIRECTORY_VARIABLE = "PROMETHEUS_MULTIPROC_DIR"


def switch_to_files(directory: str, metrics: Iterable[MetricWrapperBase]) -> None:
    """Make ``metrics`` (and every metric made from now on) record into ``directory``'s files."""
    os.environ[DIRECTORY_VARIABLE] = directory
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    for metric in metrics:
        # Values made before the switch would keep counting in this process's memory only.
        if metric._labelnames:
            with metric._lock:
                metric._metrics.clear()  # each label set is made again, with a file value, on next use
        else:
            metric._metric_init()  # type: ignore[no-untyped-call]


def collect_files(registry: CollectorRegistry, directory: str | None) -> None:
    """Register on ``registry`` the sum of every process's samples in ``directory`` (None: the one
    the environment names; ValueError when there is none)."""
    MultiProcessCollector(registry, path=directory)  # type: ignore[no-untyped-call]
