"""DESIGN.md "No silent drop" and "an idempotency key per upstream call ... where the upstream allows
it": RapidSOS does not allow it (no dedupe on source_id, no lookup), so a 911 request whose answer was
lost is sent again, and the possible second alert must be put in front of a person.

Through the ``rapidsos.create_alert`` task by its name (the example sites file's residential fire plan)
against the RapidSOS simulator, on both ledgers: the step's own Outcome says so, and what the alarm
then shows is what perform() made of it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
import requests
from celery import Celery
from sqlalchemy import select, update

import vendors.rapidsos.tasks  # noqa: F401 - registers the step's task with the test app
from app.domain.events import Event
from app.domain.intake import IntakeRules, record_event
from app.domain.outbox import RecordingOutbox
from app.ledger.models import Action, ActionState, Alarm, AlarmState, TimelineEntry, utcnow
from app.ledger.session import make_engine, make_sessionmaker
from config.settings import Settings
from sandbox.config import load_config
from sandbox.rapidsos import create_app as create_rapidsos
from sandbox.server import serve_in_thread
from tests.conftest import worker_app
from tests.contract.sandbox.harness import LiveSimulator
from tests.sites_fixture import EXAMPLE_SITES, NEWTON_ACCOUNT, SOURCE_ENV, example_sites
from vendors.rapidsos import steps as rapidsos_steps
from vendors.rapidsos.client import RapidSOSClient
from vendors.rapidsos.settings import RapidSOSSettings
from workers.clients import Clients
from workers.runtime import Runtime

pytestmark = pytest.mark.integration
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)
CREATE = rapidsos_steps.CREATE_ALERT


@pytest.fixture
def sim() -> Iterator[LiveSimulator]:
    server = serve_in_thread(create_rapidsos(config=load_config()), port=0)
    with requests.Session() as http:
        yield LiveSimulator(server=server, http=http)
    server.stop()


@pytest.fixture
def app(make_settings: Callable[..., Settings], database_url: str, sim: LiveSimulator) -> Iterator[Celery]:
    settings = make_settings(
        RapidSOSSettings(base_url=sim.base_url, create_read_timeout_s=1.0),  # a held answer: lost after 1 s
        database_url=database_url,
        sites_file=str(EXAMPLE_SITES),
        environ=SOURCE_ENV,
        http_read_timeout_s=1.0,
    )
    engine = make_engine(database_url)
    cache = fakeredis.FakeRedis()
    client = RapidSOSClient.from_settings(settings, cache)
    runtime = Runtime(
        settings,
        engine,
        make_sessionmaker(engine),
        RecordingOutbox(),
        example_sites(),
        given_cache=cache,
        given_clients=Clients.of(client),
    )
    with worker_app(settings, runtime) as celery:
        yield celery
    client.session.close()
    engine.dispose()


def fire_at_newton(app: Celery) -> tuple[int, int]:
    """A fire at the residential site: its plan's first step is the 911 request."""
    runtime: Any = app.tasks[CREATE].runtime
    now = utcnow()
    event = Event(
        source_key="acme-panels", source_kind="panel", received_at=now, account=NEWTON_ACCOUNT,
        code="FA", zone="1", occurred_at=now, payload={"code": "FA"},
    )  # fmt: skip
    with runtime.sessions.begin() as session:
        receipt = record_event(session, event, sites=runtime.sites, rules=RULES)
        step = session.execute(
            select(Action.id).where(Action.alarm_id == receipt.alarm_id, Action.kind == CREATE)
        ).scalar_one()
    return int(receipt.alarm_id or 0), int(step)


def test_a_911_request_sent_again_after_a_lost_answer_puts_the_possible_duplicate_before_a_person(
    app: Celery, sim: LiveSimulator
) -> None:
    runtime: Any = app.tasks[CREATE].runtime
    alarm_id, step = fire_at_newton(app)
    sim.add_fault(method="POST", path="/v1/alerts/", timeout_after_commit=True, hold_s=5)

    assert app.tasks[CREATE](step) == ActionState.PENDING  # the answer was lost: outcome unknown
    with runtime.sessions.begin() as session:
        assert session.get_one(Action, step).outcome_unknown
        session.execute(update(Action).where(Action.id == step).values(due_at=utcnow()))
    assert app.tasks[CREATE](step) == ActionState.SUCCEEDED

    stored = sim.request("GET", "/_sandbox/alerts", params={"source_id": f"alarm-bridge-{alarm_id}"}).json()
    assert len(stored) == 2  # the PSAP may hold both
    with runtime.sessions() as session:
        alarm = session.get_one(Alarm, alarm_id)
        assert alarm.state == AlarmState.NEEDS_PERSON
        assert f"alarm-bridge-{alarm_id}" in (alarm.needs_person_reason or "")
        assert (alarm.refs or {}).get("rapidsos_possible_duplicate") is True
        kinds = session.execute(
            select(TimelineEntry.kind).where(
                TimelineEntry.alarm_id == alarm_id, TimelineEntry.action_id == step
            )
        ).scalars()
        assert "alarm.needs_person" in set(kinds)
