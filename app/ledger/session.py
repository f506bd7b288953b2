"""Engines and transactions for the ledger, tuned for durability on SQLite and PostgreSQL.

SQLite runs in WAL mode with ``synchronous=FULL`` and foreign keys on, and every transaction starts
with ``BEGIN IMMEDIATE``: SQLite has no row locks, so a writer takes the write lock up front instead
of failing to upgrade a read lock halfway through a claim. PostgreSQL keeps its defaults
(``synchronous_commit=on``): a 2xx from intake means the row is on disk.
"""

from __future__ import annotations

import select
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, sessionmaker

SQLITE_BUSY_TIMEOUT_MS = 15_000


def make_engine(database_url: str, *, pre_ping: bool = True, **kwargs: Any) -> Engine:
    """An engine for the ledger URL, with the durability pragmas for SQLite.

    ``pre_ping`` tests each pooled PostgreSQL connection before use. Workers keep it: a stale
    connection would cost an attempt. Intake turns it off: after a database restart a stale
    connection answers one request 503, SQLAlchemy then replaces the pool, and the sender retries.
    The test is a look at the connection's socket, not SQLAlchemy's ``pool_pre_ping`` (a ``SELECT 1``
    round trip on every checkout, two per worker step): a server that restarted or ended the session
    has closed it, and an idle connection's socket then has the goodbye or the end of the stream to
    read (``closed_by_server``).
    """
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
            **kwargs,
        )
        _tune_sqlite(engine)
        return engine
    engine = create_engine(url, **kwargs)
    if pre_ping:
        event.listen(engine, "checkout", _refuse_closed)
    return engine


def closed_by_server(dbapi_connection: Any) -> bool:
    """Whether an idle PostgreSQL connection has been closed: by psycopg's account, or because its
    socket has something to read (an idle session is sent nothing but the server's goodbye: a
    shutdown's or a terminated backend's error, or the end of the stream). No round trip."""
    if dbapi_connection.closed or dbapi_connection.broken:
        return True
    try:
        poller = select.poll()
        poller.register(dbapi_connection.fileno(), select.POLLIN | select.POLLPRI)
        return bool(poller.poll(0))
    except (OSError, ValueError, psycopg.Error):  # no socket any more
        return True


def _refuse_closed(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """SQLAlchemy's checkout hook: a closed connection is replaced by a new one before use (the pool
    reconnects that slot; each other stale connection is found at its own checkout)."""
    if closed_by_server(dbapi_connection):
        raise sa_exc.DisconnectionError("the database closed this connection")


def _tune_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _: Any) -> None:
        dbapi_connection.isolation_level = None  # we issue BEGIN ourselves, below
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def make_sessionmaker(engine: Engine) -> sessionmaker[Session]:
    """Sessions whose objects stay readable after commit (views answer from them)."""
    return sessionmaker(engine, expire_on_commit=False)


@contextmanager
def session_scope(factory: sessionmaker[Session]) -> Iterator[Session]:
    """One transaction: commit on success, roll back on any error."""
    with factory.begin() as session:
        yield session


def ping(engine: Engine) -> None:
    """Raise if the ledger cannot answer a trivial query."""
    with engine.connect() as connection:
        connection.execute(text("SELECT 1"))


def is_unreachable(exc: BaseException) -> bool:
    """Whether a database error means "the ledger cannot be reached now" rather than a bug.

    SQLAlchemy's ``OperationalError`` and ``InterfaceError`` (refused or cut connections, a server
    shutting down, SQLite busy) and any DBAPI error whose connection was invalidated; psycopg's own
    ``OperationalError`` when it escapes unwrapped. An ``IntegrityError`` or a ``ProgrammingError``
    is not: retrying would not help. Every door into the ledger answers the first kind "try again"
    (503 on the web, NAK on the DC-09 receiver).
    """
    if isinstance(exc, sa_exc.OperationalError | sa_exc.InterfaceError | psycopg.OperationalError):
        return True
    return isinstance(exc, sa_exc.DBAPIError) and bool(exc.connection_invalidated)
