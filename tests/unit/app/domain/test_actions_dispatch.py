"""What the dispatcher re-sends: a backlog still waiting in the broker is not sent twice, a message the
broker lost is, and an expired lease is re-driven whatever the queues hold (SQLite and PostgreSQL)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy.orm import Session, sessionmaker

from app.domain import actions
from app.ledger.models import Action, ActionState
from app.ledger.session import make_engine, make_sessionmaker

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
LEASE = timedelta(seconds=90)
LATER = T0 + LEASE + timedelta(seconds=1)  # every message handed over at T0 is now "stale"


@pytest.fixture
def sessions(database_url: str) -> Iterator[sessionmaker[Session]]:
    engine = make_engine(database_url)
    yield make_sessionmaker(engine)
    engine.dispose()


def _queued(
    sessions: sessionmaker[Session], count: int, *, queue: str = "default", at: datetime = T0
) -> list[int]:
    """``count`` actions handed to the broker at ``at`` (a millisecond apart, in that order)."""
    with sessions.begin() as session:
        rows = [
            actions.new_action(
                kind="system.selftest",
                target="system",
                queue=queue,
                due_at=at,
                max_attempts=3,
                enqueued=True,
                now=at + timedelta(milliseconds=i),
            )
            for i in range(count)
        ]
        session.add_all(rows)
        session.flush()
        return [row.id for row in rows]


def _collect(
    sessions: sessionmaker[Session], now: datetime, waiting: dict[str, int] | None, limit: int = 1000
) -> list[int]:
    with sessions.begin() as session:
        due = actions.collect_for_dispatch(session, now=now, resend_after=LEASE, limit=limit, waiting=waiting)
    return [d.id for d in due]


def test_a_backlog_still_waiting_in_its_queue_is_not_sent_again(sessions: sessionmaker[Session]) -> None:
    _queued(sessions, 40)

    assert _collect(sessions, LATER, {"default": 40, "bulk": 0, "life_safety": 0}) == []
    assert _collect(sessions, LATER + 10 * LEASE, {"default": 40}) == []  # however long it waits


def test_messages_lost_by_the_broker_are_sent_again_once(sessions: sessionmaker[Session]) -> None:
    lost = _queued(sessions, 40)

    assert sorted(_collect(sessions, LATER, {"default": 0})) == sorted(lost)  # e.g. Redis restarted empty
    with sessions() as session:
        assert {session.get_one(Action, i).enqueued_at for i in lost} == {LATER}
    assert _collect(sessions, LATER + timedelta(seconds=1), {"default": 40}) == []  # not again


def test_when_some_messages_are_lost_the_oldest_actions_are_the_ones_sent_again(
    sessions: sessionmaker[Session],
) -> None:
    old = _queued(sessions, 30)  # lost when the broker restarted...
    recent = _queued(sessions, 10, at=T0 + LEASE)  # ...before these were queued (and are waiting)

    assert sorted(_collect(sessions, LATER + LEASE, {"default": 10})) == sorted(old)
    assert not set(recent) & set(_collect(sessions, LATER + 2 * LEASE, {"default": 40}))


def test_a_queue_holding_part_of_its_backlog_gets_only_the_missing_part_again(
    sessions: sessionmaker[Session],
) -> None:
    ids = _queued(sessions, 40)

    # The queue is first in, first out: the 25 messages left are those of the 25 newest actions.
    assert sorted(_collect(sessions, LATER, {"default": 25})) == sorted(ids[:15])


def test_each_queue_is_judged_on_its_own_messages(sessions: sessionmaker[Session]) -> None:
    _queued(sessions, 20, queue="default")
    lost = _queued(sessions, 5, queue="bulk")

    assert sorted(_collect(sessions, LATER, {"default": 20, "bulk": 0})) == sorted(lost)


def test_an_expired_lease_is_re_driven_whatever_its_queue_holds(sessions: sessionmaker[Session]) -> None:
    _queued(sessions, 20)
    (leased,) = _queued(sessions, 1)
    with sessions.begin() as session:
        assert actions.claim(session, leased, now=T0 + timedelta(seconds=30), lease=LEASE) is not None

    assert _collect(sessions, T0 + timedelta(seconds=30) + LEASE, {"default": 20}) == [leased]


def test_due_pending_actions_are_sent_whatever_the_queues_hold(sessions: sessionmaker[Session]) -> None:
    with sessions.begin() as session:
        row = actions.new_action(
            kind="system.selftest", target="system", queue="default", due_at=T0, max_attempts=3
        )
        session.add(row)
        session.flush()
        pending = row.id

    assert _collect(sessions, T0, {"default": 500}) == [pending]
    with sessions() as session:
        assert session.get_one(Action, pending).state == ActionState.QUEUED


def test_without_queue_lengths_every_stale_queued_action_is_sent_again(
    sessions: sessionmaker[Session],
) -> None:
    ids = _queued(sessions, 10)

    assert sorted(_collect(sessions, LATER, None)) == sorted(ids)  # the broker could not be read


def test_lost_messages_respect_the_batch_limit(sessions: sessionmaker[Session]) -> None:
    ids = _queued(sessions, 10)

    first = _collect(sessions, LATER, {"default": 0}, limit=4)
    assert sorted(first) == sorted(ids[:4])
    second = _collect(sessions, LATER + timedelta(seconds=1), {"default": 4}, limit=4)
    assert sorted(second) == sorted(ids[4:8])


def test_a_queued_action_with_no_hand_off_time_is_sent_whatever_the_queues_hold(
    sessions: sessionmaker[Session],
) -> None:
    _queued(sessions, 5)
    (unsent,) = _queued(sessions, 1)
    with sessions.begin() as session:
        session.get_one(Action, unsent).enqueued_at = None  # "the dispatcher must send"

    assert _collect(sessions, T0 + timedelta(seconds=1), {"default": 5}) == [unsent]


def test_a_lost_life_safety_message_goes_out_ahead_of_a_backlog_of_due_troubles(
    sessions: sessionmaker[Session],
) -> None:
    """Redis restarted without its data: the fire step's message is gone, and troubles are due by the
    hundred. The batch limit must not make the fire step wait until the troubles have gone out."""
    [fire] = _queued(sessions, 1, queue="life_safety")
    with sessions.begin() as session:
        troubles = [
            actions.new_action(
                kind="system.selftest", target="system", queue="bulk", due_at=T0, max_attempts=3
            )
            for _ in range(30)
        ]
        session.add_all(troubles)

    first = _collect(sessions, LATER, waiting={"life_safety": 0, "bulk": 0}, limit=10)

    assert first[0] == fire and len(first) == 10
