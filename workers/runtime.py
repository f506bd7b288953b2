"""Per-process resources of a worker: settings, the ledger engine and the outbox.

Built lazily on first use in each process and rebuilt after a fork, because an engine's connection
pool must never be shared between a parent and its prefork children.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from app.domain.outbox import Outbox, make_producer
from app.ledger.session import make_engine, make_sessionmaker
from config.settings import Settings, load_settings


@dataclass(frozen=True, slots=True)
class Runtime:
    """What a task needs besides its action: where the ledger is and how to send follow-ups."""

    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    outbox: Outbox


_runtime: Runtime | None = None
_pid: int | None = None


def configure(settings: Settings | None = None) -> Runtime:
    """Build (or rebuild) this process's runtime; tests pass their own Settings."""
    global _runtime, _pid
    if _runtime is not None:
        _runtime.engine.dispose()
    settings = settings or load_settings()
    engine = make_engine(settings.database_url)
    sessions = make_sessionmaker(engine)
    _runtime = Runtime(settings, engine, sessions, Outbox(make_producer(settings), sessions))
    _pid = os.getpid()
    return _runtime


def runtime() -> Runtime:
    """This process's runtime, built on first use and after any fork."""
    if _runtime is None or _pid != os.getpid():
        return configure(_runtime.settings if _runtime is not None else None)
    return _runtime
