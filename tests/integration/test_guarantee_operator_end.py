"""DESIGN.md "Close": every alarm ends in an explicit outcome, and an ended alarm sends nobody; through
the operator API (Flask's test client) on both ledgers.

- An End without an outcome records what happened: ``dispatched`` when a step reached a responder (a
  guard's TrackTik dispatch), not ``cancelled``, which would say nobody was sent.
- A failed dispatch step of an ended alarm cannot be retried: the retry would send a guard to an
  alarm that is over.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from app.domain import actions
from app.domain.outbox import RecordingOutbox
from app.ledger.models import Action, ActionState, Alarm, utcnow
from app.web import create_app
from config.settings import Settings
from tests.sites_fixture import EXAMPLE_SITES, MONTREAL_ACCOUNT, PANEL_TOKEN, SOURCE_ENV
from vendors.tracktik import steps as tracktik_steps

pytestmark = pytest.mark.integration
OPERATOR_KEY = "op-key-for-the-guarantee-tests"
OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}
TRACKTIK = tracktik_steps.CREATE_ALARM


class Console:
    def __init__(self, settings: Settings) -> None:
        self.outbox = RecordingOutbox()
        self.app = create_app(settings, outbox=self.outbox, ping_broker=lambda: None)
        self.client: FlaskClient = self.app.test_client()
        self.sessions = self.app.extensions["alarm_bridge"].sessions

    def burglary(self) -> int:
        body = {
            "account": MONTREAL_ACCOUNT,
            "code": "BA",
            "zone": "3",
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        response = self.client.post(
            "/v1/events", json=body, headers={"Authorization": f"Bearer {PANEL_TOKEN}"}
        )
        assert response.status_code == 202
        return int(response.json["alarm_id"])

    def tracktik_step(self, alarm_id: int) -> int:
        with self.sessions() as session:
            return int(
                session.execute(
                    select(Action.id).where(Action.alarm_id == alarm_id, Action.kind == TRACKTIK)
                ).scalar_one()
            )


@pytest.fixture
def console(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Console]:
    console = Console(
        make_settings(
            database_url=database_url,
            sites_file=str(EXAMPLE_SITES),
            environ=SOURCE_ENV,
            operator_api_keys=(OPERATOR_KEY,),
        )
    )
    yield console
    console.app.extensions["alarm_bridge"].engine.dispose()


def test_ending_without_an_outcome_after_a_guard_was_dispatched_records_dispatched(console: Console) -> None:
    alarm_id = console.burglary()
    step = console.tracktik_step(alarm_id)
    with console.sessions.begin() as session:  # the worker's claim and its recorded success
        now = utcnow()
        claimed = actions.claim(session, step, now=now, lease=timedelta(seconds=90))
        assert claimed is not None
        assert actions.succeed(session, claimed, now=now, external_id="dispatch-task-7")

    response = console.client.post(f"/v1/alarms/{alarm_id}/end", json={}, headers=OP)

    assert response.status_code == 200
    assert (response.json["state"], response.json["outcome"]) == ("ended", "dispatched")
    with console.sessions() as session:
        assert session.get_one(Alarm, alarm_id).outcome == "dispatched"


def test_a_failed_dispatch_of_an_ended_alarm_cannot_be_retried(console: Console) -> None:
    alarm_id = console.burglary()
    step = console.tracktik_step(alarm_id)
    with console.sessions.begin() as session:  # its attempts ran out: a dead letter
        now = utcnow()
        claimed = actions.claim(session, step, now=now, lease=timedelta(seconds=90))
        assert claimed is not None
        assert actions.fail(session, claimed, now=now, error="tracktik: HTTP 422")
    ended = console.client.post(f"/v1/alarms/{alarm_id}/end", json={"outcome": "false_alarm"}, headers=OP)
    assert ended.status_code == 200
    sent_before = list(console.outbox.sent)

    response = console.client.post(f"/v1/actions/{step}/retry", json={}, headers=OP)

    assert response.status_code == 409
    assert response.json["error"] == "conflict"
    assert console.outbox.sent == sent_before  # nothing handed to the workers
    with console.sessions() as session:
        assert session.get_one(Action, step).state == ActionState.FAILED
