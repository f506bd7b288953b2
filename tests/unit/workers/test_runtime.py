"""The worker runtime under the thread pool: built once per process, however many steps start at once."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import fakeredis
import pytest

from config.settings import Settings
from vendors.tracktik.client import TrackTikClient
from workers import runtime

pytestmark = pytest.mark.unit


def test_steps_starting_at_once_build_one_runtime_and_one_set_of_clients(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A Redis URL only to build clients with: nothing here sends a command.
    settings = make_settings(
        database_url=f"sqlite:///{tmp_path}/ledger.sqlite3", redis_url="redis://127.0.0.1:1/0"
    )
    engines: list[Any] = []
    real_make_engine = runtime.make_engine

    def slow_make_engine(url: str, **kwargs: Any) -> Any:
        time.sleep(0.02)  # a connection pool takes a moment to build: the window a race needs
        engines.append(real_make_engine(url, **kwargs))
        return engines[-1]

    monkeypatch.setattr(runtime, "make_engine", slow_make_engine)
    first = runtime.configure(settings, cache=fakeredis.FakeRedis())
    monkeypatch.setattr(runtime, "_runtime", None)  # a new process: nothing built yet
    monkeypatch.setattr(runtime, "load_settings", lambda: settings)
    barrier = threading.Barrier(16)

    def first_step(_: int) -> tuple[int, int]:
        barrier.wait(timeout=10)
        rt = runtime.runtime()
        return id(rt), id(rt.clients)

    with ThreadPoolExecutor(max_workers=16) as pool:
        built = set(pool.map(first_step, range(16)))
    assert len(built) == 1
    assert len(engines) == 2  # the first configure() and the one build for sixteen threads
    runtime.runtime().engine.dispose()
    first.engine.dispose()


def test_the_pools_are_sized_to_what_the_process_runs_at_once(
    make_settings: Callable[..., Settings], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(runtime, "_concurrency", 1)
    runtime.set_concurrency(96)
    rt = runtime.configure(
        make_settings(database_url=f"sqlite:///{tmp_path}/ledger.sqlite3"), cache=fakeredis.FakeRedis()
    )
    try:
        pool = rt.engine.pool
        assert pool.size() == runtime.POOL_KEEP  # type: ignore[attr-defined]
        assert pool._max_overflow >= 96 - runtime.POOL_KEEP  # type: ignore[attr-defined]
        adapter = rt.clients.get(TrackTikClient).session.get_adapter(rt.settings.tracktik_base_url)
        assert adapter._pool_maxsize == 96  # type: ignore[attr-defined]
    finally:
        rt.engine.dispose()
