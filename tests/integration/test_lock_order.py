"""Every writer locks an alarm's row before its actions' rows, so a worker recording a result and an
operator ending the alarm at the same moment wait for each other instead of deadlocking."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select, text
from sqlalchemy.orm import Session, sessionmaker

from app.domain import actions
from app.ledger.models import Action, ActionState, Alarm
from app.ledger.session import make_engine, make_sessionmaker
from tests.polling import wait_until

pytestmark = pytest.mark.integration
T0 = datetime.now(UTC)


@pytest.fixture
def sessions(postgres_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(postgres_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def test_a_worker_recording_a_result_and_an_operator_ending_the_alarm_do_not_deadlock(
    sessions: sessionmaker[Session],
) -> None:
    with sessions.begin() as session:
        alarm = Alarm(family="fire", priority="life_safety", opened_at=T0, last_event_at=T0)
        session.add(alarm)
        session.flush()
        row = actions.new_action(
            kind="tracktik.create_alarm", target="tracktik", queue="life_safety", due_at=T0, max_attempts=3,
            alarm_id=alarm.id,
        )  # fmt: skip
        session.add(row)
        session.flush()
        alarm_id, action_id = alarm.id, row.id
    with sessions.begin() as session:
        claimed = actions.claim(session, action_id, now=T0, lease=timedelta(seconds=90))
    assert claimed is not None

    errors: list[BaseException] = []
    worker_pid: list[int] = []

    def worker() -> None:  # what perform() does on success: record it, then touch the alarm
        try:
            with sessions.begin() as session:
                worker_pid.append(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
                actions.succeed(session, claimed, now=T0 + timedelta(seconds=2), external_id="42")
                session.execute(select(Alarm).where(Alarm.id == alarm_id).with_for_update())
        except BaseException as exc:
            errors.append(exc)

    with sessions.begin() as operator:  # what operations.end() does: the alarm, then its actions
        operator.execute(text("SET LOCAL lock_timeout = '5s'"))
        operator.execute(select(Alarm).where(Alarm.id == alarm_id).with_for_update())
        thread = threading.Thread(target=worker)
        thread.start()

        def worker_waits() -> bool:
            if not worker_pid:
                return False
            waiting = operator.execute(
                text("SELECT count(*) FROM pg_locks WHERE pid = :pid AND NOT granted"), {"pid": worker_pid[0]}
            ).scalar_one()
            return bool(waiting)

        wait_until(worker_waits, timeout_s=10)
        operator.execute(select(Action).where(Action.alarm_id == alarm_id).with_for_update()).all()
    thread.join(timeout=10)

    assert not errors, errors
    with sessions() as session:
        assert session.get_one(Action, action_id).state == ActionState.SUCCEEDED
