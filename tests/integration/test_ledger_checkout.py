"""A worker's pooled PostgreSQL connection is tested before use without a round trip: a connection
the server closed (a restart, a terminated backend) is replaced, and a healthy one is sent nothing."""

from __future__ import annotations

from collections.abc import Iterator

import psycopg
import pytest
from sqlalchemy import Engine, text

from app.ledger.session import make_engine
from tests.polling import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture
def worker_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url, pool_size=1, max_overflow=0)  # one slot: the same connection
    yield engine
    engine.dispose()


def _backend_pid(engine: Engine) -> int:
    with engine.connect() as connection:
        return int(connection.execute(text("SELECT pg_backend_pid()")).scalar_one())


def _admin(postgres_url: str) -> psycopg.Connection[tuple[object, ...]]:
    return psycopg.connect(postgres_url.replace("postgresql+psycopg://", "postgresql://"), autocommit=True)


def test_a_connection_the_server_closed_is_replaced_before_use(
    worker_engine: Engine, postgres_url: str
) -> None:
    stale = _backend_pid(worker_engine)
    with _admin(postgres_url) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (stale,))
        gone = "SELECT count(*) = 0 FROM pg_stat_activity WHERE pid = %s"
        wait_until(lambda: (admin.execute(gone, (stale,)).fetchone() or (False,))[0], timeout_s=10)
    # Without a test at checkout, this statement fails on the dead connection and costs the step.
    assert _backend_pid(worker_engine) != stale


def test_a_healthy_pooled_connection_is_sent_nothing_at_checkout(
    worker_engine: Engine, postgres_url: str
) -> None:
    pid = _backend_pid(worker_engine)  # returned to the pool: its ROLLBACK is the last thing it ran
    with _admin(postgres_url) as admin:

        def last_query() -> tuple[object, ...] | None:
            return admin.execute(
                "SELECT query, query_start FROM pg_stat_activity WHERE pid = %s", (pid,)
            ).fetchone()

        before = last_query()
        with worker_engine.connect() as connection:
            assert connection.connection.dbapi_connection is not None
            during = last_query()
        assert during == before  # SQLAlchemy's pool_pre_ping sent a SELECT 1 here
