"""The lease rules that make at-least-once delivery act once: claim, retry, fail, succeed (on SQLite
and PostgreSQL: the common claim and success are single Core statements, the rest goes through the
ORM)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.domain import actions
from app.ledger.models import Action, ActionState, Alarm, AlarmState, Event, TimelineEntry
from app.ledger.session import make_engine, make_sessionmaker

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=90)


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _add(sessions: sessionmaker[Session], *, alarm: bool = False, **overrides: object) -> int:
    with sessions.begin() as session:
        alarm_id = None
        if alarm:
            row = Alarm(family="burglary", priority="property", opened_at=T0, last_event_at=T0)
            session.add(row)
            session.flush()
            alarm_id = row.id
        values: dict[str, object] = {
            "kind": "system.selftest",
            "target": "system",
            "queue": "default",
            "due_at": T0,
            "max_attempts": 3,
            "alarm_id": alarm_id,
        }
        values.update(overrides)
        action = actions.new_action(**values)  # type: ignore[arg-type]
        session.add(action)
        session.flush()
        return action.id


def _claim(sessions: sessionmaker[Session], action_id: int, now: datetime) -> actions.ClaimedAction | None:
    with sessions.begin() as session:
        return actions.claim(session, action_id, now=now, lease=LEASE)


def _row(sessions: sessionmaker[Session], action_id: int) -> Action:
    with sessions() as session:
        return session.get_one(Action, action_id)


def test_an_action_is_not_claimed_before_it_is_due(sessions: sessionmaker[Session]) -> None:
    action_id = _add(sessions, due_at=T0 + timedelta(seconds=60))
    assert _claim(sessions, action_id, T0) is None
    assert _claim(sessions, action_id, T0 + timedelta(seconds=60)) is not None


def test_a_live_lease_keeps_a_second_delivery_out(sessions: sessionmaker[Session]) -> None:
    action_id = _add(sessions)
    first = _claim(sessions, action_id, T0)
    assert first is not None and first.attempts == 1
    assert _claim(sessions, action_id, T0 + LEASE - timedelta(seconds=1)) is None


def test_an_expired_lease_is_taken_over_and_counts_an_attempt(sessions: sessionmaker[Session]) -> None:
    action_id = _add(sessions)
    first = _claim(sessions, action_id, T0)
    second = _claim(sessions, action_id, T0 + LEASE + timedelta(seconds=1))
    assert first is not None and second is not None
    assert second.attempts == 2
    assert second.lease_token != first.lease_token


def test_a_stale_worker_cannot_reschedule_an_action_it_no_longer_holds(
    sessions: sessionmaker[Session],
) -> None:
    action_id = _add(sessions)
    stale = _claim(sessions, action_id, T0)
    current = _claim(sessions, action_id, T0 + LEASE + timedelta(seconds=1))
    assert stale is not None and current is not None
    with sessions.begin() as session:
        state = actions.retry_later(session, stale, now=T0 + LEASE, error="late timeout")
    assert state == ActionState.RUNNING
    assert _row(sessions, action_id).lease_token == current.lease_token


def test_a_success_is_recorded_even_after_the_lease_was_lost(sessions: sessionmaker[Session]) -> None:
    action_id = _add(sessions)
    stale = _claim(sessions, action_id, T0)
    _claim(sessions, action_id, T0 + LEASE + timedelta(seconds=1))
    assert stale is not None
    with sessions.begin() as session:
        assert actions.succeed(session, stale, now=T0 + LEASE, external_id="ext-1")
    row = _row(sessions, action_id)
    assert row.state == ActionState.SUCCEEDED and row.external_id == "ext-1"
    assert _claim(sessions, action_id, T0 + 3 * LEASE) is None  # finished actions never run again


def test_retry_later_gives_the_action_back_with_a_new_due_time(sessions: sessionmaker[Session]) -> None:
    action_id = _add(sessions)
    claimed = _claim(sessions, action_id, T0)
    assert claimed is not None
    with sessions.begin() as session:
        actions.retry_later(session, claimed, now=T0, error="HTTP 503", delay_s=30, outcome_unknown=True)
    row = _row(sessions, action_id)
    assert row.state == ActionState.PENDING
    assert row.due_at == T0 + timedelta(seconds=30)
    assert row.enqueued_at is None  # the dispatcher will send it when due
    assert row.outcome_unknown is True
    assert row.last_error == "HTTP 503"


def test_exhausted_attempts_fail_the_action_and_flag_the_alarm_for_a_person(
    sessions: sessionmaker[Session],
) -> None:
    action_id = _add(sessions, alarm=True, max_attempts=1)
    claimed = _claim(sessions, action_id, T0)
    assert claimed is not None
    with sessions.begin() as session:
        assert actions.retry_later(session, claimed, now=T0, error="HTTP 503") == ActionState.FAILED
    row = _row(sessions, action_id)
    assert row.state == ActionState.FAILED
    with sessions() as session:
        alarm = session.get_one(Alarm, row.alarm_id)
        assert alarm.needs_person is True
        assert "HTTP 503" in (alarm.needs_person_reason or "")
        kinds = [t.kind for t in session.query(TimelineEntry).filter_by(action_id=action_id)]
    assert kinds == ["action.failed"]


def test_a_lease_that_expires_on_the_last_attempt_fails_instead_of_running_again(
    sessions: sessionmaker[Session],
) -> None:
    action_id = _add(sessions, alarm=True, max_attempts=1)
    assert _claim(sessions, action_id, T0) is not None  # the worker dies holding it
    assert _claim(sessions, action_id, T0 + LEASE + timedelta(seconds=1)) is None
    assert _row(sessions, action_id).state == ActionState.FAILED


def test_a_step_of_an_ended_alarm_is_cancelled_not_run(sessions: sessionmaker[Session]) -> None:
    action_id = _add(sessions, alarm=True, kind="tracktik.create_alarm", target="tracktik")
    with sessions.begin() as session:
        alarm_id = session.get_one(Action, action_id).alarm_id
        session.get_one(Alarm, alarm_id).state = AlarmState.ENDED
    assert _claim(sessions, action_id, T0) is None
    assert _row(sessions, action_id).state == ActionState.CANCELLED


def test_a_closing_step_of_an_ended_alarm_still_runs(sessions: sessionmaker[Session]) -> None:
    action_id = _add(sessions, alarm=True, kind="alta.end", target="alta")
    with sessions.begin() as session:
        alarm_id = session.get_one(Action, action_id).alarm_id
        session.get_one(Alarm, alarm_id).state = AlarmState.ENDED
    assert _claim(sessions, action_id, T0) is not None


def test_dispatch_collects_due_unsent_and_expired_leases_once(sessions: sessionmaker[Session]) -> None:
    due_unsent = _add(sessions)
    _add(sessions, due_at=T0 + timedelta(minutes=5))  # not due yet
    sent_recently = _add(sessions, enqueued=True)
    leased = _add(sessions)
    assert _claim(sessions, leased, T0) is not None
    resend = timedelta(seconds=90)

    def collect(now: datetime) -> set[int]:
        with sessions.begin() as session:
            return {
                d.id for d in actions.collect_for_dispatch(session, now=now, resend_after=resend, limit=100)
            }

    assert collect(T0) == {due_unsent}
    assert collect(T0 + timedelta(seconds=1)) == set()  # just sent: not again
    assert _row(sessions, due_unsent).state == ActionState.QUEUED
    later = T0 + LEASE + timedelta(seconds=1)
    assert collect(later) == {due_unsent, sent_recently, leased}  # lost messages and an expired lease


def test_a_step_retried_after_its_alarm_ended_is_cancelled_not_run(sessions: sessionmaker[Session]) -> None:
    action_id = _add(sessions, alarm=True, kind="callonalarm.trigger", target="callonalarm")
    first = _claim(sessions, action_id, T0)
    assert first is not None
    with sessions.begin() as session:
        actions.retry_later(session, first, now=T0, error="HTTP 503", delay_s=1)
        session.get_one(Alarm, session.get_one(Action, action_id).alarm_id).state = AlarmState.ENDED
    assert _claim(sessions, action_id, T0 + timedelta(seconds=2)) is None
    assert _row(sessions, action_id).state == ActionState.CANCELLED


def test_an_early_message_hands_the_action_back_to_the_next_dispatcher_tick(
    sessions: sessionmaker[Session],
) -> None:
    action_id = _add(sessions, due_at=T0 + timedelta(milliseconds=5), enqueued=True)
    assert _row(sessions, action_id).state == ActionState.QUEUED
    assert _claim(sessions, action_id, T0) is None  # this worker's clock is a little behind
    row = _row(sessions, action_id)
    assert (row.state, row.enqueued_at) == (ActionState.PENDING, None)
    with sessions.begin() as session:
        due = actions.collect_for_dispatch(
            session, now=T0 + timedelta(seconds=1), resend_after=timedelta(seconds=90), limit=10
        )
    assert [d.id for d in due] == [action_id]


def test_taking_over_an_expired_lease_marks_the_outcome_unknown(sessions: sessionmaker[Session]) -> None:
    action_id = _add(sessions)
    assert _claim(sessions, action_id, T0) is not None
    second = _claim(sessions, action_id, T0 + LEASE + timedelta(seconds=1))
    assert second is not None and second.outcome_unknown is True


def test_attempts_exhausted_under_an_expired_lease_report_it_for_the_fallback(
    sessions: sessionmaker[Session],
) -> None:
    action_id = _add(sessions, alarm=True, max_attempts=1)
    assert _claim(sessions, action_id, T0) is not None
    seen: list[int] = []
    with sessions.begin() as session:
        result = actions.claim(
            session,
            action_id,
            now=T0 + LEASE + timedelta(seconds=1),
            lease=LEASE,
            on_exhausted=lambda _s, action: seen.append(action.id),
        )
    assert result is None and seen == [action_id]


def test_a_success_is_recorded_once_with_one_timeline_line(sessions: sessionmaker[Session]) -> None:
    action_id = _add(sessions, alarm=True, params={"account": "ab-1"})
    claimed = _claim(sessions, action_id, T0)
    assert claimed is not None and claimed.params == {"account": "ab-1"}
    done_at = T0 + timedelta(seconds=2)
    with sessions.begin() as session:
        assert actions.succeed(session, claimed, now=done_at, external_id="ext-9", result={"n": 1})
    with sessions.begin() as session:
        assert not actions.succeed(session, claimed, now=done_at, external_id="ext-10")  # a late twin
    row = _row(sessions, action_id)
    assert (row.state, row.external_id, row.result, row.completed_at) == (
        "succeeded",
        "ext-9",
        {"n": 1},
        done_at,
    )
    assert (row.lease_token, row.lease_until, row.outcome_unknown, row.last_error) == (
        None,
        None,
        False,
        None,
    )
    with sessions() as session:
        lines = session.query(TimelineEntry).filter_by(action_id=action_id).all()
    assert [(t.kind, t.message, t.data, t.alarm_id) for t in lines] == [
        (
            "action.succeeded",
            "system.selftest succeeded",
            {"kind": "system.selftest", "attempts": 1},
            row.alarm_id,
        )
    ]


def test_a_retry_after_a_lost_answer_is_claimed_still_marked_outcome_unknown(
    sessions: sessionmaker[Session],
) -> None:
    action_id = _add(sessions)
    first = _claim(sessions, action_id, T0)
    assert first is not None and first.outcome_unknown is False
    with sessions.begin() as session:
        actions.retry_later(session, first, now=T0, error="read timeout", delay_s=1, outcome_unknown=True)
    second = _claim(sessions, action_id, T0 + timedelta(seconds=1))
    assert second is not None
    assert (second.attempts, second.outcome_unknown) == (2, True)
    assert _row(sessions, action_id).lease_until == T0 + timedelta(seconds=1) + LEASE


def test_the_claim_returns_the_alarm_it_locked_with_its_first_event(sessions: sessionmaker[Session]) -> None:
    action_id = _add(sessions, alarm=True)
    with sessions.begin() as session:
        alarm_id = session.get_one(Action, action_id).alarm_id
        for n, at in ((1, T0 - timedelta(seconds=3)), (2, T0 - timedelta(seconds=1))):
            session.add(
                Event(
                    dedupe_key=f"e{n}",
                    source="panels",
                    received_at=T0,
                    occurred_at=at,
                    payload={"message": f"event {n}"},
                    alarm_id=alarm_id,
                )
            )
    with sessions.begin() as session:
        claimed, alarm = actions.claim_with_alarm(session, action_id, now=T0, lease=LEASE)
    assert claimed is not None and alarm is not None
    assert (alarm.id, alarm.state, alarm.family) == (alarm_id, AlarmState.OPEN, "burglary")
    assert alarm.first_event_payload == {"message": "event 1"}
    assert alarm.first_event_occurred_at == T0 - timedelta(seconds=3)


def test_claim_and_success_agree_with_rows_the_same_session_already_holds(
    sessions: sessionmaker[Session],
) -> None:
    action_id = _add(sessions, alarm=True, due_at=T0 + timedelta(minutes=5))
    with sessions.begin() as session:
        row = session.get_one(Action, action_id)
        row.due_at = T0  # a change not yet written: the claim must see it
        claimed = actions.claim(session, action_id, now=T0, lease=LEASE)
        assert claimed is not None
        assert (row.state, row.attempts, row.lease_token) == (ActionState.RUNNING, 1, claimed.lease_token)
        assert actions.succeed(session, claimed, now=T0, external_id="ext-1")
        assert (row.state, row.external_id, row.lease_token) == (ActionState.SUCCEEDED, "ext-1", None)
    assert _row(sessions, action_id).state == ActionState.SUCCEEDED
