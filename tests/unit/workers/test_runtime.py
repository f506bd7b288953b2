"""The worker runtime and its holder on the Celery app: built once per process, however many steps
start at once under the thread pool, again in a forked child, and sized to what the process runs."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from celery import Celery

from app.domain import task_names
from app.ledger.session import make_engine
from config.settings import Settings
from tests.conftest import installed_runtime
from vendors.tracktik.client import TrackTikClient
from vendors.tracktik.settings import TrackTikSettings
from workers import runtime
from workers.runtime import RuntimeHolder, build_runtime, runtime_holder
from workers.step_task import StepTask

pytestmark = pytest.mark.unit


@pytest.fixture
def settings(make_settings: Callable[..., Settings], tmp_path: Path) -> Settings:
    # A Redis URL only to build clients with: nothing here sends a command.
    return make_settings(
        database_url=f"sqlite:///{tmp_path}/ledger.sqlite3", redis_url="redis://127.0.0.1:1/0"
    )


def test_steps_starting_at_once_build_one_runtime_and_one_set_of_clients(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    engines: list[Any] = []

    def slow_make_engine(url: str, **kwargs: Any) -> Any:
        time.sleep(0.02)  # a connection pool takes a moment to build: the window a race needs
        engines.append(make_engine(url, **kwargs))
        return engines[-1]

    monkeypatch.setattr(runtime, "make_engine", slow_make_engine)
    holder = RuntimeHolder(settings)  # a new process: nothing built yet
    barrier = threading.Barrier(16)

    def first_step(_: int) -> tuple[int, int]:
        barrier.wait(timeout=10)
        rt = holder.get()
        return id(rt), id(rt.clients)

    with ThreadPoolExecutor(max_workers=16) as pool:
        built = set(pool.map(first_step, range(16)))
    assert len(built) == 1
    assert len(engines) == 1  # one build for sixteen threads
    holder.get().engine.dispose()


def test_a_forked_child_builds_its_own_runtime_on_the_same_settings(settings: Settings) -> None:
    holder = RuntimeHolder(settings)
    parent = holder.get()
    reading, writing = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report what it got, then leave without running pytest's teardown
        try:
            child = holder.get()
            fresh = child is not parent and child.engine is not parent.engine
            same = child.settings == parent.settings and holder.get() is child
            os.write(writing, b"ok" if fresh and same else b"shared")
        finally:
            os._exit(0)
    os.close(writing)
    os.waitpid(pid, 0)
    with os.fdopen(reading, "rb") as answer:
        assert answer.read() == b"ok"
    assert holder.get() is parent  # the parent keeps its own
    parent.engine.dispose()


def test_the_pools_are_sized_to_what_the_process_runs_at_once(settings: Settings) -> None:
    holder = RuntimeHolder(settings)
    holder.set_concurrency(96)  # what the worker's start-up step does before the pool starts
    rt = holder.get()
    try:
        pool = rt.engine.pool
        assert pool.size() == runtime.POOL_KEEP  # type: ignore[attr-defined]
        assert pool._max_overflow >= 96 - runtime.POOL_KEEP  # type: ignore[attr-defined]
        tracktik_url = rt.settings.vendor(TrackTikSettings).base_url
        adapter = rt.clients.get(TrackTikClient).session.get_adapter(tracktik_url)
        assert adapter._pool_maxsize == 96  # type: ignore[attr-defined]
    finally:
        rt.engine.dispose()


def test_a_task_runs_with_the_runtime_of_its_own_app_and_none_is_left_after(settings: Settings) -> None:
    import workers.tasks.system  # noqa: F401 - registers the shared tasks with the test app

    app = Celery("runtime_test", set_as_current=False)
    task = app.tasks[task_names.SYSTEM_SELFTEST]
    assert isinstance(task, StepTask)
    with pytest.raises(LookupError):
        task.runtime  # noqa: B018 - an app nobody gave a runtime has none
    rt = build_runtime(settings)
    try:
        with installed_runtime(app, rt):
            assert task.runtime is rt is runtime_holder(app).get()
        with pytest.raises(LookupError):
            runtime_holder(app)
    finally:
        rt.engine.dispose()


def test_installing_a_runtime_returns_the_one_it_replaces(settings: Settings) -> None:
    holder = RuntimeHolder(settings)
    first, second = build_runtime(settings), build_runtime(settings)
    try:
        assert holder.install(first) is None
        assert holder.install(second) is first
        assert holder.get() is second
        assert holder.install(None) is second
    finally:
        first.engine.dispose()
        second.engine.dispose()
