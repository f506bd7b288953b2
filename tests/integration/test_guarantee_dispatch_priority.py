"""DESIGN.md: "a life-safety step never waits behind property or trouble work", at the dispatcher, on both
ledgers.

The dispatcher (Celery beat's tick) is the door of every step the broker did not take from intake:
all of them after a broker outage (the outbox marks them unsent), delayed steps coming due, steps
held for the 911 request. It sends at most DISPATCH_BATCH_SIZE a tick. A power cut is the design's
own storm (thousands of AC-loss troubles within a minute); if the broker is down meanwhile, every
trouble's step and the fire alarm that follows wait in the ledger, and the tick must send the fire's
steps first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from typing import Any

import fakeredis
import pytest
from celery import Celery
from kombu.exceptions import OperationalError
from sqlalchemy import select

from app.domain import task_names
from app.domain.events import Event
from app.domain.intake import IntakeRules, record_event
from app.domain.outbox import Outbox, RecordingOutbox
from app.ledger.models import Action, ActionState, utcnow
from app.ledger.session import make_engine, make_sessionmaker
from config.settings import Settings
from tests.conftest import worker_app
from tests.sites_fixture import EXAMPLE_SITES, MONTREAL_ACCOUNT, SOURCE_ENV, example_sites
from workers.runtime import Runtime

pytestmark = pytest.mark.integration
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)
BATCH = 20
TROUBLES = 3 * BATCH


class DownBroker:
    """A producer whose broker is unreachable: every send fails as kombu reports it."""

    def send_task(self, *args: Any, **kwargs: Any) -> None:
        raise OperationalError("Error 111 connecting to 127.0.0.1:6379. Connection refused.")


@pytest.fixture
def app(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Celery]:
    settings = make_settings(
        database_url=database_url,
        sites_file=str(EXAMPLE_SITES),
        environ=SOURCE_ENV,
        dispatch_batch_size=BATCH,
    )
    engine = make_engine(database_url)
    runtime = Runtime(
        settings,
        engine,
        make_sessionmaker(engine),
        RecordingOutbox(),
        example_sites(),
        given_cache=fakeredis.FakeRedis(),
    )
    with worker_app(settings, runtime) as celery:
        yield celery
    engine.dispose()


def signal_while_the_broker_is_down(runtime: Runtime, code: str, zone: str) -> int:
    """Intake as the web runs it (record, commit, publish) with the broker down: the steps stay in the
    ledger, marked unsent. Returns the alarm's id."""
    now = utcnow()
    event = Event(
        source_key="acme-panels", source_kind="panel", received_at=now, account=MONTREAL_ACCOUNT,
        code=code, zone=zone, occurred_at=now, payload={"code": code},
    )  # fmt: skip
    with runtime.sessions.begin() as session:
        receipt = record_event(session, event, sites=runtime.sites, rules=RULES)
    outbox = Outbox(DownBroker(), runtime.sessions)  # type: ignore[arg-type]
    assert outbox.publish(receipt.due_actions) == [d.id for d in receipt.due_actions]
    return int(receipt.alarm_id or 0)


def test_after_a_broker_outage_the_first_tick_sends_the_fire_s_steps_before_the_troubles(app: Celery) -> None:
    runtime: Runtime = app.tasks[task_names.DISPATCHER_SEND_DUE_ACTIONS].runtime  # type: ignore[attr-defined]
    for zone in range(TROUBLES):  # AC loss at every zone (the trouble plan: a call, bulk queue)
        signal_while_the_broker_is_down(runtime, "AT", f"t{zone}")
    fire = signal_while_the_broker_is_down(runtime, "FA", "kitchen")
    with runtime.sessions() as session:
        fire_steps = set(session.execute(select(Action.id).where(Action.alarm_id == fire)).scalars())
        pending = session.execute(select(Action.state).where(Action.id.in_(fire_steps))).scalars()
        assert set(pending) == {ActionState.PENDING} and len(fire_steps) == 3

    # The broker is back: beat's next tick.
    assert app.tasks[task_names.DISPATCHER_SEND_DUE_ACTIONS]() == BATCH

    assert isinstance(runtime.outbox, RecordingOutbox)
    first_tick = runtime.outbox.sent
    assert fire_steps <= {d.id for d in first_tick}, "the fire alarm's steps waited behind the troubles"
    assert {d.queue for d in first_tick if d.id in fire_steps} == {"life_safety"}
