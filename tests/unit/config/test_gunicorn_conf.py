"""gunicorn's ``child_exit`` hook does prometheus_client's bookkeeping for a dead web worker."""

from __future__ import annotations

import runpy
from pathlib import Path
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.unit
GUNICORN_CONF = Path(__file__).resolve().parents[3] / "config" / "gunicorn.conf.py"


def test_a_dead_workers_live_gauge_files_are_removed_and_its_counts_kept(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = tmp_path / "prometheus"
    samples.mkdir()
    monkeypatch.setenv("PROMETHEUS_MULTIPROC_DIR", str(samples))
    monkeypatch.setenv("SECRET_KEY", "gunicorn-conf-test-secret-key-0123456789")  # the master checks it
    monkeypatch.delenv("prometheus_multiproc_dir", raising=False)
    dead, alive = 41001, 41002
    names = [
        f"gauge_{mode}_{pid}.db"
        for pid in (dead, alive)
        for mode in ("livesum", "liveall", "livemax", "livemin", "livemostrecent", "max")
    ] + [f"counter_{dead}.db", f"histogram_{dead}.db", f"counter_{alive}.db"]
    for name in names:
        (samples / name).write_bytes(b"")
    monkeypatch.chdir(tmp_path)  # the hook reads the directory from the settings, as the workers do

    hooks = runpy.run_path(str(GUNICORN_CONF))
    hooks["child_exit"](SimpleNamespace(), SimpleNamespace(pid=dead))

    left = {path.name for path in samples.iterdir()}
    assert left == {
        f"gauge_max_{dead}.db",  # a max gauge keeps its last value, like counters
        f"counter_{dead}.db",  # the dead worker's counts still belong in the totals
        f"histogram_{dead}.db",
        *(name for name in names if str(alive) in name),
    }
