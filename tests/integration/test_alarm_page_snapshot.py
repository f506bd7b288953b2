"""An alarm's page is read as of one moment: a worker's commit landing between its reads never shows
a step done beside an alarm row that does not yet hold what the step wrote."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import Engine, event, update

from app.ledger import queries
from app.ledger.models import Action, Alarm
from app.ledger.session import make_engine, make_sessionmaker

pytestmark = pytest.mark.integration
T0 = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)


@pytest.fixture
def pg_engine(postgres_url: str) -> Iterator[Engine]:
    engine = make_engine(postgres_url)
    yield engine
    engine.dispose()


def _alarm_with_a_pending_step(engine: Engine) -> int:
    with make_sessionmaker(engine).begin() as session:
        alarm = Alarm(family="burglary", priority="high", opened_at=T0, last_event_at=T0, refs={})
        session.add(alarm)
        session.flush()
        session.add(
            Action(
                alarm_id=alarm.id, kind="tracktik.dispatch", target="tracktik", queue="default",
                due_at=T0, max_attempts=5, idempotency_key="snapshot-test-dispatch",
                created_at=T0, updated_at=T0,
            )
        )  # fmt: skip
        return alarm.id


def _a_worker_commits_after_the_alarm_row_is_read(engine: Engine, alarm_id: int) -> Callable[[], None]:
    """After the page's first read (the alarm's row), another connection commits what a worker's
    success writes: the step succeeded and the alarm's refs hold its dispatch id."""
    landed: list[bool] = []

    def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if landed or "FROM alarms" not in statement:
            return
        landed.append(True)
        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as other:
            other.execute(update(Action).where(Action.alarm_id == alarm_id).values(state="succeeded"))
            other.execute(update(Alarm).where(Alarm.id == alarm_id).values(refs={"dispatch_id": "D-1"}))

    event.listen(engine, "after_cursor_execute", after)
    return lambda: event.remove(engine, "after_cursor_execute", after)


@pytest.mark.parametrize("read", [queries.alarm_detail, queries.alarm_page], ids=["api", "dashboard"])
def test_a_commit_between_the_reads_is_not_half_seen(pg_engine: Engine, read: Callable[..., Any]) -> None:
    alarm_id = _alarm_with_a_pending_step(pg_engine)
    stop = _a_worker_commits_after_the_alarm_row_is_read(pg_engine, alarm_id)
    try:
        with make_sessionmaker(pg_engine)() as session:
            page = read(session, alarm_id)
    finally:
        stop()
    assert page["refs"] == {}
    assert [action["state"] for action in page["actions"]] == ["pending"]
    with make_sessionmaker(pg_engine)() as session:  # the commit did land: the next page shows it all
        page = read(session, alarm_id)
    assert page["refs"] == {"dispatch_id": "D-1"}
    assert [action["state"] for action in page["actions"]] == ["succeeded"]


def test_the_connection_returns_to_the_pool_at_read_committed(pg_engine: Engine) -> None:
    alarm_id = _alarm_with_a_pending_step(pg_engine)
    with make_sessionmaker(pg_engine)() as session:
        queries.alarm_detail(session, alarm_id)
    with pg_engine.connect() as connection:
        assert connection.exec_driver_sql("SHOW transaction_isolation").scalar() == "read committed"
