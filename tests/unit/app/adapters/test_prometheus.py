"""What alarm-bridge relies on in prometheus_client's multiprocess mode: an upgrade that changes it
fails here.

``switch_to_files`` moves metrics that already exist (declared at import, before any entry point
knows the directory) over to the shared files, through prometheus_client's environment variable,
``values.ValueClass`` and each metric's private fields.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values
from prometheus_client.metrics import MetricWrapperBase

from app.adapters import prometheus

pytestmark = pytest.mark.unit


@pytest.fixture
def restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the switch changes for the whole process is put back after the test."""
    monkeypatch.setenv(prometheus.DIRECTORY_VARIABLE, "placeholder")
    monkeypatch.setattr(values, "ValueClass", values.ValueClass)


def test_the_private_fields_the_switch_uses_exist() -> None:
    registry = CollectorRegistry()
    made: list[MetricWrapperBase] = [
        Counter("adapter_fields_counter", "c", registry=registry),
        Counter("adapter_fields_counter_labelled", "c", ["kind"], registry=registry),
        Gauge("adapter_fields_gauge", "g", multiprocess_mode="livesum", registry=registry),
        Histogram("adapter_fields_histogram", "h", ["route"], registry=registry),
    ]
    for metric in made:
        assert isinstance(metric._labelnames, tuple)
        assert callable(metric._metric_init)
        if metric._labelnames:
            assert isinstance(metric._metrics, dict)
            with metric._lock:
                pass
    assert callable(values.get_value_class)
    assert hasattr(values, "ValueClass")


@pytest.mark.usefixtures("restored")
def test_metrics_made_before_the_switch_record_into_the_shared_files(tmp_path: Path) -> None:
    registry = CollectorRegistry()
    plain = Counter("adapter_plain", "made before the switch", registry=registry)
    labelled = Counter("adapter_labelled", "made before the switch", ["kind"], registry=registry)
    labelled.labels("early").inc(100)  # counted in memory: not in the files
    live = Gauge("adapter_live", "a live gauge", multiprocess_mode="livesum", registry=registry)

    prometheus.switch_to_files(str(tmp_path), [plain, labelled, live])
    plain.inc(2)
    labelled.labels("early").inc()
    labelled.labels("late").inc(3)
    live.set(5)

    assert sorted(path.name.split("_")[0] for path in tmp_path.iterdir()) == ["counter", "gauge"]
    shared = CollectorRegistry()
    prometheus.collect_files(shared, str(tmp_path))
    assert shared.get_sample_value("adapter_plain_total") == 2
    assert shared.get_sample_value("adapter_labelled_total", {"kind": "early"}) == 1
    assert shared.get_sample_value("adapter_labelled_total", {"kind": "late"}) == 3
    assert shared.get_sample_value("adapter_live") == 5
    values.ValueClass.close_all_files()
