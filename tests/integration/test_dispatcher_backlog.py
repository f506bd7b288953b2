"""The dispatcher tick against the real Redis (a private key prefix) and each ledger: it reads how many
messages each queue holds, leaves a backlog alone and re-sends what the broker lost."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
import redis
from celery import Celery
from sqlalchemy import select

from app.domain import actions, task_names
from app.ledger.models import Action, ActionState, utcnow
from config.settings import Settings
from tests.conftest import worker_app
from workers.dispatcher import waiting_messages
from workers.runtime import Runtime, runtime_holder

pytestmark = pytest.mark.integration
PRIORITY_3 = "\x06\x163"  # kombu's key suffix for the priority-3 list of a queue


@pytest.fixture
def app(broker_settings: Settings) -> Iterator[Celery]:
    """A test app with its worker runtime installed: its dispatcher task runs in the test's thread."""
    with worker_app(broker_settings) as app:
        yield app


def send_due_actions(app: Celery) -> int:
    """One dispatcher tick, as beat has the worker run it."""
    return int(app.tasks[task_names.DISPATCHER_SEND_DUE_ACTIONS]())


@pytest.fixture
def broker(broker_settings: Settings, app: Celery) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(broker_settings.redis_url or "")
    yield client
    keys = list(client.scan_iter(match=f"{broker_settings.broker_key_prefix}*"))
    if keys:
        client.delete(*keys)
    client.close()


def _queued_long_ago(rt: Runtime, count: int) -> list[int]:
    """``count`` actions handed to the broker more than a lease ago, their messages really published."""
    then = utcnow() - timedelta(seconds=2 * rt.settings.action_lease_s)
    with rt.sessions.begin() as session:
        rows = [
            actions.new_action(
                kind="system.selftest",
                target="system",
                queue="default",
                due_at=then,
                max_attempts=3,
                enqueued=True,
                now=then,
            )
            for _ in range(count)
        ]
        session.add_all(rows)
        session.flush()
        due = [actions.due_action(row) for row in rows]
    assert rt.outbox.publish(due) == []
    return [d.id for d in due]


def _enqueued_at(rt: Runtime, ids: list[int]) -> set[object]:
    with rt.sessions() as session:
        return set(session.execute(select(Action.enqueued_at).where(Action.id.in_(ids))).scalars())


def test_a_backlog_waiting_in_redis_is_not_sent_again(
    broker: redis.Redis, broker_settings: Settings, app: Celery
) -> None:
    rt = runtime_holder(app).get()
    ids = _queued_long_ago(rt, 30)
    before = _enqueued_at(rt, ids)

    assert send_due_actions(app) == 0
    assert broker.llen(f"{broker_settings.broker_key_prefix}default") == 30  # no duplicates added
    assert _enqueued_at(rt, ids) == before


def test_messages_redis_lost_are_sent_again_and_only_once(
    broker: redis.Redis, broker_settings: Settings, app: Celery
) -> None:
    rt = runtime_holder(app).get()
    ids = _queued_long_ago(rt, 30)
    broker.delete(f"{broker_settings.broker_key_prefix}default")  # Redis restarted without persistence

    assert send_due_actions(app) == 30
    assert broker.llen(f"{broker_settings.broker_key_prefix}default") == 30
    with rt.sessions() as session:
        states = set(session.execute(select(Action.state).where(Action.id.in_(ids))).scalars())
    assert states == {ActionState.QUEUED}
    assert send_due_actions(app) == 0  # the queue holds them again


def test_an_unreadable_broker_falls_back_to_re_sending_every_stale_action(broker_settings: Settings) -> None:
    unreachable = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5)

    assert waiting_messages(broker_settings, unreachable) is None
    assert waiting_messages(broker_settings, None) is None


def test_queue_lengths_count_every_priority_list_under_the_key_prefix(
    broker: redis.Redis, broker_settings: Settings
) -> None:
    prefix = broker_settings.broker_key_prefix
    broker.lpush(f"{prefix}default", "a", "b")
    broker.lpush(f"{prefix}default{PRIORITY_3}", "c")
    broker.lpush(f"{prefix}life_safety", "d")

    waiting = waiting_messages(broker_settings, broker)

    assert waiting is not None
    assert (waiting["default"], waiting["life_safety"], waiting["bulk"]) == (3, 1, 0)
