"""The outbox never fails a caller whose rows are committed, and leaves unsent work to the dispatcher."""

from __future__ import annotations

import socket
from datetime import UTC, datetime

import pytest

from app.domain.actions import new_action
from app.domain.outbox import Outbox, make_producer
from app.ledger.models import Action
from app.ledger.session import make_engine, make_sessionmaker
from config.settings import Settings

pytestmark = pytest.mark.unit


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_a_dead_broker_marks_actions_unsent_instead_of_raising(sqlite_url: str) -> None:
    engine = make_engine(sqlite_url)
    sessions = make_sessionmaker(engine)
    now = datetime.now(UTC)
    with sessions.begin() as session:
        action = new_action(
            kind="system.selftest",
            target="system",
            queue="default",
            due_at=now,
            max_attempts=3,
            enqueued=True,
        )
        session.add(action)
        session.flush()
        action_id = action.id
    settings = Settings(database_url=sqlite_url, redis_url=f"redis://127.0.0.1:{_closed_port()}/0")
    outbox = Outbox(make_producer(settings), sessions)
    from app.domain.actions import DueAction

    assert outbox.publish([DueAction(action_id, "system.selftest", "default")]) == [action_id]
    with sessions() as session:
        assert session.get_one(Action, action_id).enqueued_at is None
    engine.dispose()
