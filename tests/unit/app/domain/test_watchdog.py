"""The watchdog's rules: which alarms are raised to a person, once, with the reason on the timeline."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.domain import actions, operations, watchdog
from app.ledger.models import Action, ActionState, Alarm, AlarmState, TimelineEntry
from app.ledger.session import make_engine, make_sessionmaker

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LIMITS = watchdog.Limits(grace=timedelta(seconds=60), failing=timedelta(seconds=300))


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _alarm_with_step(
    sessions: sessionmaker[Session], *, alarm_state: str = AlarmState.OPEN, **step: object
) -> tuple[int, int]:
    with sessions.begin() as session:
        alarm = Alarm(
            family="burglary", priority="property", opened_at=T0, last_event_at=T0, state=alarm_state
        )
        session.add(alarm)
        session.flush()
        action = actions.new_action(
            kind="tracktik.create_alarm",
            target="tracktik",
            queue="default",
            due_at=T0,
            max_attempts=5,
            alarm_id=alarm.id,
        )
        for name, value in step.items():
            setattr(action, name, value)
        session.add(action)
        session.flush()
        return alarm.id, action.id


def _check(sessions: sessionmaker[Session], now: datetime) -> list[watchdog.Finding]:
    with sessions.begin() as session:
        return watchdog.check(session, now=now, limits=LIMITS)


def _alarm(sessions: sessionmaker[Session], alarm_id: int) -> Alarm:
    with sessions() as session:
        return session.get_one(Alarm, alarm_id)


def test_a_step_within_its_grace_is_left_alone(sessions: sessionmaker[Session]) -> None:
    alarm_id, _ = _alarm_with_step(sessions, state=ActionState.QUEUED)

    assert _check(sessions, T0 + timedelta(seconds=59)) == []
    assert _alarm(sessions, alarm_id).state == AlarmState.OPEN


def test_a_queued_step_nobody_started_raises_the_alarm_once(sessions: sessionmaker[Session]) -> None:
    alarm_id, action_id = _alarm_with_step(sessions, state=ActionState.QUEUED)

    found = _check(sessions, T0 + timedelta(seconds=61))
    again = _check(sessions, T0 + timedelta(seconds=120))

    assert [(f.alarm_id, f.action_id, f.reason) for f in found] == [(alarm_id, action_id, watchdog.OVERDUE)]
    assert again == []
    alarm = _alarm(sessions, alarm_id)
    assert alarm.state == AlarmState.NEEDS_PERSON
    assert "tracktik.create_alarm is 61s overdue (queued but not started)" in (
        alarm.needs_person_reason or ""
    )
    with sessions() as session:
        lines = (
            session.execute(
                select(TimelineEntry).where(
                    TimelineEntry.alarm_id == alarm_id, TimelineEntry.kind == "alarm.needs_person"
                )
            )
            .scalars()
            .all()
        )
    assert len(lines) == 1
    assert lines[0].action_id == action_id
    assert lines[0].data == {"raised_by": "watchdog", "reason": "overdue"}


def test_a_delayed_step_the_dispatcher_never_sent_is_overdue(sessions: sessionmaker[Session]) -> None:
    _alarm_with_step(sessions, due_at=T0 + timedelta(seconds=90))

    assert _check(sessions, T0 + timedelta(seconds=149)) == []
    found = _check(sessions, T0 + timedelta(seconds=151))

    assert [f.reason for f in found] == [watchdog.OVERDUE]
    assert "(not sent)" in found[0].message


def test_an_expired_lease_not_redriven_raises_the_alarm(sessions: sessionmaker[Session]) -> None:
    lease_until = T0 + timedelta(seconds=90)
    alarm_id, _ = _alarm_with_step(sessions, state=ActionState.RUNNING, attempts=1, lease_until=lease_until)

    assert _check(sessions, lease_until + timedelta(seconds=30)) == []
    found = _check(sessions, lease_until + timedelta(seconds=61))

    assert [f.reason for f in found] == [watchdog.LEASE_EXPIRED]
    assert _alarm(sessions, alarm_id).needs_person


def test_a_step_failing_longer_than_allowed_raises_the_alarm(sessions: sessionmaker[Session]) -> None:
    # Retrying with backoff: always due a little later, so never "overdue", but failing for 5 minutes.
    now = T0 + timedelta(seconds=301)
    alarm_id, _ = _alarm_with_step(
        sessions, due_at=now + timedelta(seconds=20), attempts=4, last_error="tracktik: HTTP 503: busy"
    )

    assert _check(sessions, T0 + timedelta(seconds=299)) == []
    found = _check(sessions, now)

    assert [f.reason for f in found] == [watchdog.FAILING]
    assert "has been failing for 301s: tracktik: HTTP 503: busy" in found[0].message
    assert _alarm(sessions, alarm_id).needs_person


def _needs_person_lines(sessions: sessionmaker[Session], alarm_id: int) -> list[int | None]:
    with sessions() as session:
        return list(
            session.execute(
                select(TimelineEntry.action_id)
                .where(TimelineEntry.alarm_id == alarm_id, TimelineEntry.kind == "alarm.needs_person")
                .order_by(TimelineEntry.id)
            ).scalars()
        )


def _acknowledge(sessions: sessionmaker[Session], alarm_id: int, now: datetime) -> None:
    with sessions.begin() as session:
        operations.acknowledge(session, alarm_id, now=now, max_attempts=5)


def test_an_acknowledged_alarm_is_not_raised_again_while_the_same_step_stays_late(
    sessions: sessionmaker[Session],
) -> None:
    """A vendor outage: the step is still not started after the operator acknowledged the alarm. The
    next ticks leave it with the operator instead of raising it again and again."""
    alarm_id, action_id = _alarm_with_step(sessions, state=ActionState.QUEUED)
    assert [f.action_id for f in _check(sessions, T0 + timedelta(seconds=61))] == [action_id]
    _acknowledge(sessions, alarm_id, T0 + timedelta(seconds=70))

    assert _check(sessions, T0 + timedelta(seconds=100)) == []
    assert _check(sessions, T0 + timedelta(minutes=30)) == []  # failing or not, the same lateness

    alarm = _alarm(sessions, alarm_id)
    assert alarm.state == AlarmState.OPEN
    assert (
        alarm.needs_person_reason == "watchdog: tracktik.create_alarm is 61s overdue (queued but not started)"
    )
    assert _needs_person_lines(sessions, alarm_id) == [action_id]


def test_a_step_late_anew_after_the_acknowledgement_raises_the_alarm_again(
    sessions: sessionmaker[Session],
) -> None:
    alarm_id, action_id = _alarm_with_step(sessions, state=ActionState.QUEUED)
    with sessions.begin() as session:  # a second step, late at the same time: raised for together
        session.add(
            actions.new_action(
                kind="cad.upload_incident", target="cad", queue="default", due_at=T0, max_attempts=5,
                alarm_id=alarm_id,
            )
        )  # fmt: skip
    assert [f.action_id for f in _check(sessions, T0 + timedelta(seconds=61))] == [action_id]
    _acknowledge(sessions, alarm_id, T0 + timedelta(seconds=70))
    assert _check(sessions, T0 + timedelta(seconds=100)) == []

    with sessions.begin() as session:  # another step comes due, and nobody starts it either
        late = actions.new_action(
            kind="callonalarm.trigger", target="callonalarm", queue="default",
            due_at=T0 + timedelta(seconds=120), max_attempts=5, alarm_id=alarm_id,
        )  # fmt: skip
        late.state = ActionState.QUEUED
        session.add(late)
        session.flush()
        late_id = late.id
    assert [f.action_id for f in _check(sessions, T0 + timedelta(seconds=181))] == [late_id]
    _acknowledge(sessions, alarm_id, T0 + timedelta(seconds=190))

    with sessions.begin() as session:  # the first step ran, failed, and its retry is not started
        first = session.get_one(Action, action_id)
        first.due_at, first.last_error = T0 + timedelta(seconds=200), "tracktik: HTTP 503"
    found = _check(sessions, T0 + timedelta(seconds=261))

    assert [(f.action_id, f.reason) for f in found] == [(action_id, watchdog.OVERDUE)]
    assert _alarm(sessions, alarm_id).state == AlarmState.NEEDS_PERSON
    assert _needs_person_lines(sessions, alarm_id) == [action_id, late_id, action_id]


def test_a_step_raised_as_overdue_that_then_keeps_failing_is_raised_again_as_failing(
    sessions: sessionmaker[Session],
) -> None:
    """A broker blip: the step is queued and not started, raised as overdue, acknowledged. Then it
    runs and keeps failing (the vendor answers 503), retried with backoff, so never overdue again: it
    must still reach a person once it has failed for as long as an alarm may wait, not only when its
    attempts run out."""
    alarm_id, action_id = _alarm_with_step(sessions, state=ActionState.QUEUED)
    assert [(f.action_id, f.reason) for f in _check(sessions, T0 + timedelta(seconds=61))] == [
        (action_id, watchdog.OVERDUE)
    ]
    _acknowledge(sessions, alarm_id, T0 + timedelta(seconds=70))
    with sessions.begin() as session:  # it ran and failed; its next retry is later
        step = session.get_one(Action, action_id)
        step.state, step.attempts, step.last_error = ActionState.PENDING, 6, "tracktik: HTTP 503"
        step.due_at, step.enqueued_at = T0 + timedelta(seconds=900), None

    assert _check(sessions, T0 + timedelta(seconds=299)) == []
    found = _check(sessions, T0 + timedelta(seconds=301))

    assert [(f.action_id, f.reason) for f in found] == [(action_id, watchdog.FAILING)]
    assert found[0].message == (
        "watchdog: tracktik.create_alarm has been failing for 301s: tracktik: HTTP 503"
    )
    assert _alarm(sessions, alarm_id).state == AlarmState.NEEDS_PERSON
    _acknowledge(sessions, alarm_id, T0 + timedelta(seconds=310))
    assert _check(sessions, T0 + timedelta(seconds=850)) == []  # still failing: the same finding
    assert _needs_person_lines(sessions, alarm_id) == [action_id, action_id]


def _add_step(sessions: sessionmaker[Session], alarm_id: int, kind: str, **step: object) -> int:
    with sessions.begin() as session:
        action = actions.new_action(
            kind=kind, target=kind.split(".")[0], queue="life_safety", due_at=T0, max_attempts=50,
            alarm_id=alarm_id,
        )  # fmt: skip
        for name, value in step.items():
            setattr(action, name, value)
        session.add(action)
        session.flush()
        return action.id


def test_the_message_names_every_late_step_it_is_raised_for_and_each_is_raised_for_once(
    sessions: sessionmaker[Session],
) -> None:
    """A TrackTik create overdue and a 911 request failing at the same check: the operator who
    acknowledges must know of both, since neither is raised again while it stays late that way."""
    alarm_id, tracktik_id = _alarm_with_step(
        sessions, state=ActionState.QUEUED, due_at=T0 + timedelta(seconds=240)
    )
    rapidsos_id = _add_step(
        sessions, alarm_id, "rapidsos.create_alert",
        due_at=T0 + timedelta(seconds=5000), attempts=5, last_error="rapidsos: HTTP 503",
    )  # fmt: skip

    found = _check(sessions, T0 + timedelta(seconds=320))

    assert [(f.action_id, f.reason) for f in found] == [(tracktik_id, watchdog.OVERDUE)]
    message = (
        "watchdog: tracktik.create_alarm is 80s overdue (queued but not started); "
        "also late: rapidsos.create_alert (failing)"
    )
    assert found[0].message == message
    assert _alarm(sessions, alarm_id).needs_person_reason == message
    assert [step.action_id for step in found[0].late_steps] == [tracktik_id, rapidsos_id]
    _acknowledge(sessions, alarm_id, T0 + timedelta(seconds=330))

    assert _check(sessions, T0 + timedelta(seconds=900)) == []  # both still late, the same way

    third_id = _add_step(  # another step comes due, and nobody starts it either
        sessions, alarm_id, "callonalarm.trigger", state=ActionState.QUEUED,
        due_at=T0 + timedelta(seconds=1000),
    )  # fmt: skip
    found = _check(sessions, T0 + timedelta(seconds=1061))

    assert [(f.action_id, f.reason, f.message) for f in found] == [
        (third_id, watchdog.OVERDUE, "watchdog: callonalarm.trigger is 61s overdue (queued but not started)")
    ]
    assert _needs_person_lines(sessions, alarm_id) == [tracktik_id, third_id]


def test_the_message_names_a_few_late_steps_and_counts_the_rest(sessions: sessionmaker[Session]) -> None:
    alarm_id, first_id = _alarm_with_step(sessions, state=ActionState.QUEUED)
    others = [
        _add_step(sessions, alarm_id, f"cad.upload_incident_{n}", state=ActionState.QUEUED)
        for n in range(watchdog.MAX_ALSO_LATE_NAMED + 2)
    ]

    found = _check(sessions, T0 + timedelta(seconds=61))

    assert [step.action_id for step in found[0].late_steps] == [first_id, *others]
    named = ", ".join(f"cad.upload_incident_{n} (overdue)" for n in range(watchdog.MAX_ALSO_LATE_NAMED))
    assert found[0].message == (
        f"watchdog: tracktik.create_alarm is 61s overdue (queued but not started); also late: {named}"
        " and 2 more"
    )
    _acknowledge(sessions, alarm_id, T0 + timedelta(seconds=70))
    assert _check(sessions, T0 + timedelta(seconds=120)) == []  # the counted ones were raised for too


@pytest.mark.parametrize("way", [watchdog.OVERDUE, watchdog.LEASE_EXPIRED])
def test_a_step_late_again_raises_the_alarm_again_whatever_the_clocks(
    sessions: sessionmaker[Session], way: str
) -> None:
    """The raise happens on the beat host's clock, the step's due_at or lease is written on a
    worker's, which may run behind: a retry or new lease that is already late, at a time before the
    raise by the watchdog's clock, is still a new lateness."""
    if way == watchdog.OVERDUE:
        alarm_id, action_id = _alarm_with_step(sessions, state=ActionState.QUEUED)
        raised_at = T0 + timedelta(seconds=61)
    else:
        alarm_id, action_id = _alarm_with_step(
            sessions, state=ActionState.RUNNING, attempts=1, lease_until=T0 + timedelta(seconds=90)
        )
        raised_at = T0 + timedelta(seconds=151)
    assert [(f.action_id, f.reason) for f in _check(sessions, raised_at)] == [(action_id, way)]
    _acknowledge(sessions, alarm_id, raised_at + timedelta(seconds=5))
    assert _check(sessions, raised_at + timedelta(seconds=10)) == []

    again = raised_at - timedelta(seconds=31)  # by a worker's clock, before the raise
    with sessions.begin() as session:
        step = session.get_one(Action, action_id)
        if way == watchdog.OVERDUE:  # retried, queued again, and not started
            step.due_at, step.attempts = again, 1
        else:  # picked up again, and that worker was lost too
            step.lease_until, step.attempts = again, 2
    found = _check(sessions, again + timedelta(seconds=61))

    assert [(f.action_id, f.reason) for f in found] == [(action_id, way)]
    assert _alarm(sessions, alarm_id).state == AlarmState.NEEDS_PERSON
    assert _needs_person_lines(sessions, alarm_id) == [action_id, action_id]


@pytest.mark.parametrize("alarm_state", [AlarmState.ENDED, AlarmState.NEEDS_PERSON])
def test_alarms_that_are_not_open_are_not_raised(sessions: sessionmaker[Session], alarm_state: str) -> None:
    alarm_id, _ = _alarm_with_step(sessions, alarm_state=alarm_state, state=ActionState.QUEUED)

    assert _check(sessions, T0 + timedelta(hours=1)) == []
    assert _alarm(sessions, alarm_id).state == alarm_state


@pytest.mark.parametrize("state", [ActionState.SUCCEEDED, ActionState.FAILED, ActionState.CANCELLED])
def test_finished_steps_are_not_overdue(sessions: sessionmaker[Session], state: str) -> None:
    alarm_id, _ = _alarm_with_step(sessions, state=state, last_error="x")

    assert _check(sessions, T0 + timedelta(hours=1)) == []
    assert _alarm(sessions, alarm_id).state == AlarmState.OPEN


def test_one_finding_per_alarm_and_oldest_first(sessions: sessionmaker[Session]) -> None:
    first, _ = _alarm_with_step(sessions, state=ActionState.QUEUED)
    with sessions.begin() as session:
        session.add(
            actions.new_action(
                kind="callonalarm.trigger", target="callonalarm", queue="default", due_at=T0, max_attempts=3,
                alarm_id=first,
            )
        )  # fmt: skip
    second, _ = _alarm_with_step(sessions, state=ActionState.QUEUED)
    with sessions.begin() as session:
        session.get_one(Alarm, second).opened_at = T0 - timedelta(minutes=1)

    found = _check(sessions, T0 + timedelta(minutes=5))

    assert [f.alarm_id for f in found] == [second, first]
    with sessions() as session:
        assert session.execute(select(Action).where(Action.alarm_id == first)).scalars().all()


@pytest.mark.parametrize("held", [AlarmState.NEEDS_PERSON, AlarmState.ENDED, "acknowledged"])
def test_steps_of_alarms_already_raised_never_hide_an_open_alarm(
    sessions: sessionmaker[Session], held: str
) -> None:
    """A worker pool down through a storm: the alarms raised on earlier ticks (or ended, or raised
    and acknowledged since) keep their late steps, the oldest in every index. More of them than a
    tick reads must not hide the open alarm whose step is late behind them."""
    held_steps = watchdog.MAX_ALARMS_PER_CHECK * 4 + 50
    acknowledged = held == "acknowledged"
    state = AlarmState.OPEN if acknowledged else held
    with sessions.begin() as session:
        alarm = Alarm(family="burglary", priority="property", opened_at=T0, last_event_at=T0, state=state)
        session.add(alarm)
        session.flush()
        for n in range(held_steps):
            step = actions.new_action(
                kind="tracktik.create_alarm", target="tracktik", queue="default",
                due_at=T0 + timedelta(milliseconds=n), max_attempts=5, alarm_id=alarm.id,
            )  # fmt: skip
            step.state = ActionState.QUEUED
            step.last_error = "tracktik: HTTP 503"  # and failing, for the failing walk too
            if acknowledged:  # raised for on an earlier tick (late both ways), then acknowledged
                step.watchdog_due_mark, step.watchdog_failing_mark = step.due_at, step.created_at
            session.add(step)
    alarm_id, action_id = _alarm_with_step(
        sessions, state=ActionState.QUEUED, due_at=T0 + timedelta(seconds=5)
    )

    found = _check(sessions, T0 + timedelta(minutes=10))

    assert [(f.alarm_id, f.action_id) for f in found] == [(alarm_id, action_id)]
    assert _alarm(sessions, alarm_id).state == AlarmState.NEEDS_PERSON
