"""Fixtures shared by the whole suite: Settings built in code, a fresh ledger per test on SQLite and
PostgreSQL (copied from a template migrated once per run), the real Redis under a private key prefix,
and a real Celery worker thread.

A missing Redis or PostgreSQL skips the tests that need it, saying so; under CI=true it fails them.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from celery import Celery
from celery.contrib.testing.worker import start_worker
from sqlalchemy import Engine
from sqlalchemy import event as sa_event
from sqlalchemy.engine import make_url

from app.adapters import kombu_redis
from app.ledger.session import make_engine
from cli.ledger import alembic_config
from config.celery import QUEUES, celery_config
from config.settings import Settings, VendorSettings
from workers.runtime import (
    Runtime,
    RuntimeHolder,
    attach_runtime,
    build_runtime,
    detach_runtime,
    runtime_holder,
)

CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
PG_ADMIN_URL = os.environ.get(
    "TEST_PG_ADMIN_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/alarm_bridge_test"
)
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RUN_ID = uuid.uuid4().hex[:8]
SECRET_KEY = "test-secret-key-signing-dashboard-sessions"  # the web app needs one (32+ characters)


def service_unavailable(name: str, reason: str) -> None:
    """Skip locally, fail under CI: a missing service is never silently fine in CI."""
    message = f"{name} is not reachable ({reason})"
    if CI:
        pytest.fail(f"{message}; CI=true requires it", pytrace=False)
    pytest.skip(message)


def _pg_connect(dbname: str | None = None) -> psycopg.Connection[Any]:
    url = make_url(PG_ADMIN_URL)
    return psycopg.connect(
        host=url.host,
        port=url.port or 5432,
        user=url.username,
        dbname=dbname or url.database,
        autocommit=True,
    )


def _pg_url(dbname: str) -> str:
    return make_url(PG_ADMIN_URL).set(database=dbname).render_as_string(hide_password=False)


def migrate(database_url: str) -> None:
    """Bring a ledger to the head revision, exactly as `alarm-bridge db upgrade` does."""
    from alembic import command

    command.upgrade(alembic_config(database_url), "head")


@pytest.fixture(scope="session")
def redis_url() -> str:
    try:
        redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError as exc:
        service_unavailable("Redis", f"{REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A database migrated once per run; each test copies it (CREATE DATABASE ... TEMPLATE)."""
    try:
        admin = _pg_connect()
    except psycopg.Error as exc:
        service_unavailable("PostgreSQL", f"{PG_ADMIN_URL}: {exc}")
    name = f"ab_tpl_{RUN_ID}"
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    migrate(_pg_url(name))
    yield name
    with _pg_connect() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "ledger.sqlite3"
    migrate(f"sqlite:///{path}")
    return path


def _sqlite_copy(template: Path, directory: Path) -> str:
    target = directory / "ledger.sqlite3"
    shutil.copyfile(template, target)
    return f"sqlite:///{target}"


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    return _sqlite_copy(sqlite_template, tmp_path)


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    template: str = request.getfixturevalue("pg_template")
    name = f"ab_t_{RUN_ID}_{uuid.uuid4().hex[:10]}"
    with _pg_connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
    yield _pg_url(name)
    with _pg_connect() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest) -> str:
    """A fresh, migrated ledger of each kind: tests using it run once per database."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement ``engine`` sends, in order (what a path costs in round trips)."""
    captured: list[str] = []

    def capture(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        captured.append(statement)

    sa_event.listen(engine, "before_cursor_execute", capture)
    yield captured
    sa_event.remove(engine, "before_cursor_execute", capture)


@pytest.fixture
def make_settings(tmp_path: Path) -> Callable[..., Settings]:
    """Settings for a test: embedded-mode defaults, a private var dir, overrides as keywords, and
    vendor settings (``TrackTikSettings(base_url=...)``) as arguments."""

    def build(*sections: VendorSettings, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "var_dir": str(tmp_path / "var"),
            "log_format": "console",
            "secret_key": SECRET_KEY,
        }
        values.update(overrides)
        return Settings(**values).with_vendor(*sections)

    return build


@pytest.fixture
def broker_settings(make_settings: Callable[..., Settings], database_url: str, redis_url: str) -> Settings:
    """Settings on the real Redis under a key prefix no other test (or run) shares."""
    return make_settings(
        database_url=database_url,
        redis_url=redis_url,
        broker_key_prefix=f"abtest:{uuid.uuid4().hex[:12]}:",
        operator_api_keys=("test-operator-key",),
    )


@pytest.fixture
def celery_worker(broker_settings: Settings) -> Iterator[Celery]:
    """A real Celery worker thread consuming every queue of the test's private broker namespace."""
    with running_worker(broker_settings, QUEUES) as app:
        yield app


@contextmanager
def running_worker(broker_settings: Settings, queues: Iterable[str]) -> Iterator[Celery]:
    """A real Celery worker thread consuming ``queues`` of the test's private broker namespace."""
    with worker_app(broker_settings) as app, worker_thread(app, queues, shutdown_timeout=20):
        yield app


def worker_thread(
    app: Celery, queues: Iterable[str], *, shutdown_timeout: float
) -> AbstractContextManager[object]:
    """Celery's test worker for ``app``: one step at a time, in a thread, on ``queues``."""
    return start_worker(
        app,
        pool="solo",
        concurrency=1,
        perform_ping_check=False,
        queues=list(queues),
        shutdown_timeout=shutdown_timeout,
    )


@contextmanager
def worker_app(settings: Settings, runtime: Runtime | None = None) -> Iterator[Celery]:
    """A Celery app of the test's own with the system tasks registered and ``runtime`` installed (by
    default one built from ``settings``, whose engine is disposed after); removed afterwards.

    Run a task in the test's thread with ``app.tasks[name]()``: it gets this app's runtime."""
    import workers.dispatcher
    import workers.tasks.system
    import workers.tasks.watchdog  # noqa: F401 - registers the shared tasks with the test app

    app = Celery(f"alarm_bridge_test_{uuid.uuid4().hex[:6]}", set_as_current=False)
    app.conf.update(celery_config(settings))
    kombu_redis.use_shared_client(app)  # the transport workers.celery_app gives the real workers
    installed = build_runtime(settings) if runtime is None else runtime
    try:
        with installed_runtime(app, installed):
            yield app
    finally:
        if runtime is None:
            installed.engine.dispose()


def install_runtime(app: Celery, runtime: Runtime | None) -> Runtime | None:
    """Make ``runtime`` the one ``app``'s tasks run with (None: none built yet); returns the previous
    one. An app with no holder gets one."""
    try:
        holder = runtime_holder(app)
    except LookupError:
        if runtime is None:
            return None
        holder = attach_runtime(app, RuntimeHolder(runtime.settings))
    return holder.install(runtime)


@contextmanager
def installed_runtime(app: Celery, runtime: Runtime) -> Iterator[Runtime]:
    """``runtime`` installed on ``app`` for the block; afterwards the app has what it had before (a
    holder it did not have is taken away again)."""
    try:
        runtime_holder(app)
        attached = False
    except LookupError:
        attached = True
    previous = install_runtime(app, runtime)
    try:
        yield runtime
    finally:
        if attached:
            detach_runtime(app)
        else:
            install_runtime(app, previous)
