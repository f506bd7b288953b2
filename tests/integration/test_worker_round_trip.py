"""A task sent by the web side is executed by a real Celery worker and its result lands in the ledger."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from celery import Celery
from flask.testing import FlaskClient
from sqlalchemy import select

from app.domain import actions, task_names
from app.domain.selftest import plan_selftest
from app.ledger.models import Action, ActionState, utcnow
from app.ledger.session import make_engine, make_sessionmaker
from app.web import create_app
from config.settings import Settings
from tests.conftest import running_worker
from tests.polling import wait_until

pytestmark = pytest.mark.integration
AUTH = {"Authorization": "Bearer test-operator-key"}


@pytest.fixture
def client(broker_settings: Settings) -> Iterator[FlaskClient]:
    app = create_app(broker_settings)
    yield app.test_client()
    app.extensions["alarm_bridge"].engine.dispose()


def test_selftest_sent_by_web_is_run_by_a_real_worker_and_recorded(
    celery_worker: Celery, client: FlaskClient
) -> None:
    accepted = client.post("/v1/system/selftest", headers=AUTH)
    assert accepted.status_code == 202
    url = accepted.json["status_url"]

    done = wait_until(
        lambda: (r := client.get(url, headers=AUTH).json)["state"] == ActionState.SUCCEEDED and r,
        timeout_s=30,
    )
    assert done["attempts"] == 1
    assert done["external_id"]  # the worker that ran it
    assert [line["kind"] for line in done["timeline"]] == ["selftest.requested", "action.succeeded"]


def test_selftest_on_life_safety_queue_reaches_a_worker_that_consumes_only_that_queue(
    broker_settings: Settings, client: FlaskClient
) -> None:
    # A worker of every queue would run the self-test whatever queue it went to; this one proves it
    # went to life_safety (as the urgent process, which consumes life_safety apart from the rest).
    with running_worker(broker_settings, ["life_safety"]):
        accepted = client.post("/v1/system/selftest", headers=AUTH, json={"queue": "life_safety"})
        assert accepted.status_code == 202
        url = accepted.json["status_url"]
        wait_until(lambda: client.get(url, headers=AUTH).json["state"] == ActionState.SUCCEEDED, timeout_s=30)


def test_dispatcher_sends_an_action_whose_message_never_reached_the_broker(
    celery_worker: Celery, broker_settings: Settings
) -> None:
    engine = make_engine(broker_settings.database_url)
    sessions = make_sessionmaker(engine)
    with sessions.begin() as session:
        due = plan_selftest(session, now=utcnow())
        session.get(Action, due.id).enqueued_at = None  # as if the broker was down at commit time
    # No publish: only the dispatcher can rescue it.
    send_due_actions = celery_worker.tasks[task_names.DISPATCHER_SEND_DUE_ACTIONS]
    assert send_due_actions() == 1

    def state() -> str:
        with sessions() as session:
            return session.execute(select(Action.state).where(Action.id == due.id)).scalar_one()

    wait_until(lambda: state() == ActionState.SUCCEEDED, timeout_s=30)
    assert send_due_actions() == 0  # nothing left to send
    engine.dispose()


def test_a_duplicate_delivery_does_not_run_the_action_twice(broker_settings: Settings) -> None:
    engine = make_engine(broker_settings.database_url)
    sessions = make_sessionmaker(engine)
    from datetime import timedelta

    with sessions.begin() as session:
        due = plan_selftest(session, now=utcnow())
    with sessions.begin() as session:
        first = actions.claim(session, due.id, now=utcnow(), lease=timedelta(seconds=90))
    with sessions.begin() as session:
        second = actions.claim(session, due.id, now=utcnow(), lease=timedelta(seconds=90))
    assert first is not None
    assert second is None
    engine.dispose()
