"""Per-process resources of a worker: settings, the ledger engine, the outbox, sites and clients.

``build_runtime`` builds one; nothing here holds it. The Celery app holds a ``RuntimeHolder``
(attached by ``workers.celery_app``, installed by tests on theirs) and every task reaches it through
its base class (``workers.step_task.StepTask``), which hands it to ``perform``.

The holder builds the runtime on first use in each process and again after a fork, because an
engine's connection pool (and a requests session) must never be shared between a parent and its
prefork children.

Under the thread pool many steps share one runtime at once: the holder builds it once under its lock,
and what it holds is safe to share between threads — the engine's pool (sized to the process's
concurrency; a step holds a connection only inside its short transactions, never across an upstream
call), one requests session per upstream with a connection pool as large, and one Redis client
(redis-py's pool is thread-safe). Everything several processes share (tokens, cookies, budgets) is in
Redis.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import redis
from celery import Celery
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.domain.outbox import Outbox, make_producer
from app.domain.sites import Sites
from app.domain.sites_file import load_sites
from app.ledger.session import make_engine, make_sessionmaker
from config.settings import Settings
from workers.bulk_gate import BulkGate
from workers.clients import Clients
from workers.clients.cache import cache_key, shared_cache

# Connections a process keeps open; beyond them, up to its concurrency, a burst opens more and closes
# them after use (PostgreSQL's max_connections must cover every process: see README, Deploy).
POOL_KEEP = 16
# The attribute of a Celery app that holds its runtime (a Celery app has no extension registry).
HOLDER_ATTRIBUTE = "alarm_bridge_runtime"


@dataclass(eq=False)
class Runtime:
    """What a task needs besides its action.

    ``cache`` and ``clients`` are built on first use (a process without REDIS_URL never needs them);
    ``given_cache`` and ``given_clients`` stand in for them (tests: fakeredis, a recording client).
    """

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    outbox: Outbox
    sites: Sites
    concurrency: int = 1
    given_cache: redis.Redis | None = field(default=None, repr=False)
    given_clients: Clients | None = field(default=None, repr=False)
    # The watchdog arms the sites file's supervised accounts once per runtime (workers.tasks.watchdog).
    supervision_armed: bool = field(default=False, init=False)
    _lock: threading.RLock = field(default_factory=threading.RLock, init=False, repr=False)
    _cache: redis.Redis | None = field(default=None, init=False, repr=False)
    _clients: Clients | None = field(default=None, init=False, repr=False)
    _bulk_gate: BulkGate | None = field(default=None, init=False, repr=False)

    @property
    def cache(self) -> redis.Redis:
        """Redis shared by every worker process (tokens, cookies, budgets)."""
        if self._cache is None:
            with self._lock:  # threads starting at once build one client, not one each
                if self._cache is None:
                    self._cache = self.given_cache or shared_cache(self.settings)
        return self._cache

    @property
    def clients(self) -> Clients:
        """One client per upstream for this process."""
        if self._clients is None:
            with self._lock:
                if self._clients is None:
                    self._clients = self.given_clients or Clients.from_settings(
                        self.settings, self.cache, pool_maxsize=self.concurrency
                    )
        return self._clients

    @property
    def bulk_gate(self) -> BulkGate:
        """The deployment's gate that makes troubles yield to life-safety (in the shared Redis)."""
        if self._bulk_gate is None:
            with self._lock:
                if self._bulk_gate is None:
                    self._bulk_gate = BulkGate(
                        self.cache,
                        cache_key(self.settings, "bulk-gate"),
                        rate=self.settings.bulk_yield_rate,
                        hold_s=self.settings.bulk_yield_s,
                    )
        return self._bulk_gate


def build_runtime(
    settings: Settings,
    *,
    concurrency: int = 1,
    cache: redis.Redis | None = None,
    clients: Clients | None = None,
) -> Runtime:
    """A runtime whose database and HTTP pools fit ``concurrency`` steps at once."""
    concurrency = max(1, concurrency)
    engine = _engine(settings.database_url, concurrency)
    sessions = make_sessionmaker(engine)
    sites = load_sites(Path(settings.sites_file) if settings.sites_file else None, settings.environ)
    outbox = Outbox(make_producer(settings), sessions)
    return Runtime(settings, engine, sessions, outbox, sites, concurrency, cache, clients)


def _engine(database_url: str, concurrency: int) -> Engine:
    if ":memory:" in database_url:  # one connection holds the whole database: no pool to size
        return make_engine(database_url)
    keep = min(concurrency, POOL_KEEP)
    return make_engine(database_url, pool_size=keep, max_overflow=concurrency - keep + 2, pool_timeout=10)


class RuntimeHolder:
    """A Celery app's runtime in this process: built on first use, once whatever the threads, and
    again in a forked child (whose parent's engine and sessions it must not share)."""

    def __init__(self, settings: Settings, *, concurrency: int = 1) -> None:
        self._settings = settings
        self._concurrency = max(1, concurrency)
        self._lock = threading.Lock()
        self._built: tuple[int, Runtime] | None = None  # (the pid it was built in, the runtime)

    @property
    def concurrency(self) -> int:
        """How many steps this process runs at once: sizes the database and HTTP pools."""
        return self._concurrency

    def set_concurrency(self, concurrency: int) -> None:
        """Set by the worker before its pool starts (a runtime built later is sized to it)."""
        self._concurrency = max(1, concurrency)

    def get(self) -> Runtime:
        """This process's runtime."""
        built = self._built  # one read: the pid and the runtime always belong together
        if built is not None and built[0] == os.getpid():
            return built[1]
        with self._lock:
            pid = os.getpid()
            built = self._built
            if built is not None and built[0] == pid:
                return built[1]  # another thread built it while this one waited
            if built is None:
                runtime = build_runtime(self._settings, concurrency=self._concurrency)
            else:  # a forked child: its own engine, sessions and clients, on the same settings
                inherited = built[1]
                inherited.engine.dispose()
                runtime = build_runtime(
                    inherited.settings,
                    concurrency=self._concurrency,
                    cache=inherited.given_cache,
                    clients=inherited.given_clients,
                )
            self._built = (pid, runtime)
            return runtime

    def install(self, runtime: Runtime | None) -> Runtime | None:
        """Use ``runtime`` from now on (None: build one on next use); returns the one it replaces."""
        with self._lock:
            previous = self._built[1] if self._built is not None else None
            self._built = (os.getpid(), runtime) if runtime is not None else None
            return previous


def attach_runtime(app: Celery, holder: RuntimeHolder) -> RuntimeHolder:
    """Make ``holder`` the one ``app``'s tasks get their runtime from."""
    setattr(app, HOLDER_ATTRIBUTE, holder)
    return holder


def detach_runtime(app: Celery) -> None:
    """Take ``app``'s holder away (a test's app, once the test is over)."""
    if hasattr(app, HOLDER_ATTRIBUTE):
        delattr(app, HOLDER_ATTRIBUTE)


def runtime_holder(app: Celery) -> RuntimeHolder:
    """The holder of ``app``'s runtime.

    Raises:
        LookupError: ``app`` has none (only ``workers.celery_app`` and tests attach one).
    """
    holder = getattr(app, HOLDER_ATTRIBUTE, None)
    if not isinstance(holder, RuntimeHolder):
        raise LookupError(f"the Celery app {app.main!r} has no worker runtime attached")
    return holder
