"""Ending an alarm: a stopped step whose last answer was lost is not stopped silently, and what a
person must still do after the end keeps the ended alarm in front of one until acknowledged."""

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
    # On the needs-a-person list (the ended alarm's outcome unchanged) only when there is a check.
    assert alarm.needs_person is outcome_unknown
    assert (alarm.person_needed_at is not None) is outcome_unknown


def _needing_person(sessions: sessionmaker[Session]) -> list[int]:
    with sessions() as session:
        return list(session.execute(select(Alarm.id).where(Alarm.needs_person)).scalars())


def test_a_responder_to_recall_by_hand_keeps_the_ended_alarm_in_front_of_a_person(
    sessions: sessionmaker[Session],
) -> None:
    alarm_id, _ = _alarm_with_create(sessions, outcome_unknown=False)
    with sessions.begin() as session:
        session.get_one(Alarm, alarm_id).refs = {"tracktik_alarm_id": 5}  # a guard is on the way

    with sessions.begin() as session:
        operations.end(session, alarm_id, "false_alarm", now=T0 + timedelta(seconds=5), max_attempts=5)

    with sessions() as session:
        alarm = session.get_one(Alarm, alarm_id)
        assert (alarm.state, alarm.outcome, alarm.needs_person) == (AlarmState.ENDED, "false_alarm", True)
        assert alarm.person_needed_at == T0 + timedelta(seconds=5)
        assert alarm.needs_person_reason == (
            "ended (false_alarm) — TrackTik dispatch 5 is active: cancel it there"
        )
    assert _needing_person(sessions) == [alarm_id]

    with sessions.begin() as session:
        operations.acknowledge(session, alarm_id, now=T0 + timedelta(seconds=60), max_attempts=5)

    with sessions() as session:
        alarm = session.get_one(Alarm, alarm_id)
        assert (alarm.state, alarm.outcome, alarm.needs_person) == (AlarmState.ENDED, "false_alarm", False)
        assert (alarm.person_needed_at, alarm.acknowledged_at) == (None, T0 + timedelta(seconds=60))
        line = session.execute(
            select(TimelineEntry.message).where(
                TimelineEntry.alarm_id == alarm_id, TimelineEntry.kind == "alarm.acknowledged"
            )
        ).scalar_one()
    assert line == "acknowledged by an operator (ended: false_alarm)"
    assert _needing_person(sessions) == []
    with pytest.raises(operations.AlarmEndedError), sessions.begin() as session:  # nothing waits now
        operations.acknowledge(session, alarm_id, now=T0 + timedelta(seconds=61), max_attempts=5)


def test_a_step_running_at_the_end_whose_answer_was_lost_raises_the_ended_alarm(
    sessions: sessionmaker[Session],
) -> None:
    """The step's worker died mid-call while the operator ended the alarm: its redelivery finds the
    alarm ended and stops, and the ended alarm goes back in front of a person to check the upstream."""
    alarm_id, step_id = _alarm_with_create(sessions, outcome_unknown=False)
    with sessions.begin() as session:
        step = session.get_one(Action, step_id)
        step.state, step.due_at, step.lease_until = ActionState.RUNNING, T0, T0 + timedelta(seconds=30)
    with sessions.begin() as session:
        operations.end(session, alarm_id, "cancelled", now=T0 + timedelta(seconds=5), max_attempts=5)
    assert _needing_person(sessions) == []  # nothing said yet: the step may still answer

    with sessions.begin() as session:  # the lease ran out: the message is delivered again
        claimed = actions.claim(session, step_id, now=T0 + timedelta(seconds=40), lease=timedelta(seconds=90))

    assert claimed is None
    with sessions() as session:
        alarm = session.get_one(Alarm, alarm_id)
        assert (alarm.state, alarm.outcome) == (AlarmState.ENDED, "cancelled")
        assert "tracktik.create_alarm may have reached tracktik before the alarm ended" in (
            alarm.needs_person_reason or ""
        )
        assert session.get_one(Action, step_id).state == ActionState.CANCELLED
    assert _needing_person(sessions) == [alarm_id]
