"""Ending an alarm: a stopped step whose last answer was lost is not stopped silently."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.domain import actions, operations
from app.ledger.models import Action, ActionState, Alarm, AlarmState, TimelineEntry
from app.ledger.session import make_engine, make_sessionmaker

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _alarm_with_create(sessions: sessionmaker[Session], *, outcome_unknown: bool) -> tuple[int, int]:
    with sessions.begin() as session:
        alarm = Alarm(family="burglary", priority="property", opened_at=T0, last_event_at=T0)
        session.add(alarm)
        session.flush()
        step = actions.new_action(
            kind="tracktik.create_alarm", target="tracktik", queue="default",
            due_at=T0 + timedelta(seconds=20), max_attempts=5, alarm_id=alarm.id,
        )  # fmt: skip
        step.attempts = 1
        step.outcome_unknown = outcome_unknown  # a retry is waiting after a lost answer
        session.add(step)
        session.flush()
        return alarm.id, step.id


@pytest.mark.parametrize("outcome_unknown", [True, False])
def test_ending_an_alarm_says_when_a_stopped_create_may_have_reached_the_upstream(
    sessions: sessionmaker[Session], outcome_unknown: bool
) -> None:
    alarm_id, step_id = _alarm_with_create(sessions, outcome_unknown=outcome_unknown)

    with sessions.begin() as session:
        operations.end(session, alarm_id, "false_alarm", now=T0 + timedelta(seconds=5), max_attempts=5)

    with sessions() as session:
        alarm = session.get_one(Alarm, alarm_id)
        step = session.get_one(Action, step_id)
        warnings = (
            session.execute(
                select(TimelineEntry).where(
                    TimelineEntry.alarm_id == alarm_id, TimelineEntry.kind == "upstream.check_by_hand"
                )
            )
            .scalars()
            .all()
        )
    assert (alarm.state, alarm.outcome, step.state) == (
        AlarmState.ENDED,
        "false_alarm",
        ActionState.CANCELLED,
    )
    if outcome_unknown:
        assert [w.action_id for w in warnings] == [step_id]
        assert "tracktik.create_alarm may have reached tracktik" in warnings[0].message
        assert "check tracktik" in (alarm.needs_person_reason or "")
    else:
        assert warnings == []
        assert alarm.needs_person_reason is None
