"""Per-process resources of a worker: settings, the ledger engine, the outbox, sites and clients.

Built lazily on first use in each process and rebuilt after a fork, because an engine's connection
pool (and a requests session) must never be shared between a parent and its prefork children.

Under the thread pool many steps share one runtime at once: it is built once under a lock, and what
it holds is safe to share between threads — the engine's pool (sized to the process's concurrency;
a step holds a connection only inside its short transactions, never across an upstream call), one
requests session per upstream with a connection pool as large, and one Redis client (redis-py's
pool is thread-safe). Everything several processes share (tokens, cookies, budgets) is in Redis.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.domain.outbox import Outbox, make_producer
from app.domain.sites import Sites
from app.domain.sites_file import load_sites
from app.ledger.session import make_engine, make_sessionmaker
from config.settings import Settings, load_settings
from workers.clients import Clients
from workers.clients.cache import shared_cache


@dataclass(slots=False)
class Runtime:
    """What a task needs besides its action."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    outbox: Outbox
    sites: Sites
    overrides: dict[str, Any] = field(default_factory=dict)

    @cached_property
    def cache(self) -> redis.Redis[Any]:
        """Redis shared by every worker process (tokens, cookies, budgets)."""
        with _lock:  # cached_property no longer locks (Python 3.12): build it once
            if "cache" not in self.__dict__:
                self.__dict__["cache"] = self.overrides.get("cache") or shared_cache(self.settings)
            return self.__dict__["cache"]  # type: ignore[no-any-return]

    @cached_property
    def clients(self) -> Clients:
        """One client per upstream for this process."""
        with _lock:
            if "clients" not in self.__dict__:
                self.__dict__["clients"] = self.overrides.get("clients") or Clients.from_settings(
                    self.settings, self.cache, pool_maxsize=max(_concurrency, 1)
                )
            return self.__dict__["clients"]  # type: ignore[no-any-return]


_runtime: Runtime | None = None
_pid: int | None = None
_concurrency = 1  # steps this process runs at once (set by the worker before its pool starts)
_lock = threading.RLock()
# Connections a process keeps open; beyond them, up to its concurrency, a burst opens more and closes
# them after use (PostgreSQL's max_connections must cover every process: see README, Deploy).
POOL_KEEP = 16


def set_concurrency(concurrency: int) -> None:
    """How many steps this process runs at once: sizes its database and HTTP pools."""
    global _concurrency
    _concurrency = max(1, concurrency)


def configure(settings: Settings | None = None, **overrides: Any) -> Runtime:
    """Build (or rebuild) this process's runtime; tests pass their own Settings (and a cache)."""
    with _lock:
        return _configure(settings, **overrides)


def _configure(settings: Settings | None, **overrides: Any) -> Runtime:
    global _runtime, _pid
    if _runtime is not None:
        _runtime.engine.dispose()
    settings = settings or load_settings()
    keep = min(_concurrency, POOL_KEEP)
    pool = {"pool_size": keep, "max_overflow": _concurrency - keep + 2, "pool_timeout": 10}
    engine = make_engine(settings.database_url, **({} if ":memory:" in settings.database_url else pool))
    sessions = make_sessionmaker(engine)
    sites = load_sites(Path(settings.sites_file) if settings.sites_file else None, settings.environ)
    _runtime = Runtime(
        settings, engine, sessions, Outbox(make_producer(settings), sessions), sites, overrides
    )
    _pid = os.getpid()
    return _runtime


def runtime() -> Runtime:
    """This process's runtime, built on first use and after any fork (once, whatever the threads)."""
    current = _runtime
    if current is not None and _pid == os.getpid():
        return current
    with _lock:
        if _runtime is None:
            return _configure(None)
        if _pid != os.getpid():
            return _configure(_runtime.settings, **_runtime.overrides)
        return _runtime
