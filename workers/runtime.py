"""Per-process resources of a worker: settings, the ledger engine, the outbox, sites and clients.

Built lazily on first use in each process and rebuilt after a fork, because an engine's connection
pool (and a requests session) must never be shared between a parent and its prefork children.
"""

from __future__ import annotations

import os
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
        return self.overrides.get("cache") or shared_cache(self.settings)

    @cached_property
    def clients(self) -> Clients:
        """One client per upstream for this process."""
        return self.overrides.get("clients") or Clients.from_settings(self.settings, self.cache)


_runtime: Runtime | None = None
_pid: int | None = None


def configure(settings: Settings | None = None, **overrides: Any) -> Runtime:
    """Build (or rebuild) this process's runtime; tests pass their own Settings (and a cache)."""
    global _runtime, _pid
    if _runtime is not None:
        _runtime.engine.dispose()
    settings = settings or load_settings()
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    sites = load_sites(Path(settings.sites_file) if settings.sites_file else None, settings.environ)
    _runtime = Runtime(
        settings, engine, sessions, Outbox(make_producer(settings), sessions), sites, overrides
    )
    _pid = os.getpid()
    return _runtime


def runtime() -> Runtime:
    """This process's runtime, built on first use and after any fork."""
    if _runtime is None or _pid != os.getpid():
        if _runtime is None:
            return configure()
        return configure(_runtime.settings, **_runtime.overrides)
    return _runtime
