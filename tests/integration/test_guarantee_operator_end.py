"""DESIGN.md "Close": every alarm ends in an explicit outcome, and an ended alarm sends nobody; through
the operator API (Flask's test client) on both ledgers.

- An End without an outcome records what happened: ``dispatched`` when a step reached a responder (a
  guard's TrackTik dispatch), not ``cancelled``, which would say nobody was sent; and ``cancelled``
  when no step did (the video collected, the incident recorded, a call CallOnAlarm did not place, a
  911 request no PSAP dispatches from), not ``dispatched``, which would leave a create still in
  flight undisturbed when it lands.
- A failed dispatch step of an ended alarm cannot be retried: the retry would send a guard to an
  alarm that is over.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.domain import actions
from app.ledger.models import Action, ActionState, Alarm, utcnow
from tests.integration.test_operator_api import OP, Console
from tests.integration.test_operator_api import console as console  # the fixture, shared
from vendors.tracktik import steps as tracktik_steps

pytestmark = pytest.mark.integration
TRACKTIK = tracktik_steps.CREATE_ALARM


def _burglary_and_its_tracktik_step(console: Console) -> tuple[int, int]:
    """A commercial burglary through the intake door, and its TrackTik create."""
    alarm_id = console.panel("BA")
    with console.sessions() as session:
        step = session.execute(
            select(Action.id).where(Action.alarm_id == alarm_id, Action.kind == TRACKTIK)
        ).scalar_one()
    return alarm_id, int(step)


def test_ending_without_an_outcome_after_a_guard_was_dispatched_records_dispatched(console: Console) -> None:
    alarm_id, step = _burglary_and_its_tracktik_step(console)
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


@pytest.mark.parametrize(
    ("kind", "external_id", "result", "outcome"),
    [
        pytest.param("alta.collect_video", "guid-1", {"links": 2}, "cancelled", id="video-collected"),
        pytest.param("alta.find_ongoing_alert", "guid-1", {}, "cancelled", id="alert-found"),
        pytest.param("cad.upload_incident", "inc-1", {}, "cancelled", id="incident-recorded"),
        pytest.param("callonalarm.trigger", "coa-1", {"status": "ignored"}, "cancelled", id="call-ignored"),
        pytest.param(
            "callonalarm.trigger", "coa-1", {"status": "logged_inactive"}, "cancelled", id="call-inactive"
        ),
        pytest.param("rapidsos.create_alert", "rs-1", {"status_code": 216}, "cancelled", id="911-no-psap"),
        pytest.param("rapidsos.create_alert", None, {"status_code": 201}, "cancelled", id="911-no-alert-id"),
        pytest.param(
            "callonalarm.trigger", "coa-1", {"status": "call_delayed"}, "dispatched", id="call-placed"
        ),
        pytest.param("rapidsos.create_alert", "rs-1", {"status_code": 201}, "dispatched", id="911-taken"),
    ],
)
def test_ending_without_an_outcome_counts_only_a_step_that_reached_a_responder(
    console: Console, kind: str, external_id: str | None, result: dict[str, Any], outcome: str
) -> None:
    alarm_id, _ = _burglary_and_its_tracktik_step(console)  # its TrackTik create has not run
    with console.sessions.begin() as session:  # a step of another kind succeeded
        step = actions.new_action(
            kind=kind, target=kind.split(".")[0], queue="default", due_at=utcnow(), max_attempts=5,
            alarm_id=alarm_id,
        )  # fmt: skip
        session.add(step)
        session.flush()
        now = utcnow()
        claimed = actions.claim(session, step.id, now=now, lease=timedelta(seconds=90))
        assert claimed is not None
        assert actions.succeed(session, claimed, now=now, external_id=external_id, result=result)

    response = console.client.post(f"/v1/alarms/{alarm_id}/end", json={}, headers=OP)

    assert response.status_code == 200
    assert (response.json["state"], response.json["outcome"]) == ("ended", outcome)


def test_a_failed_dispatch_of_an_ended_alarm_cannot_be_retried(console: Console) -> None:
    alarm_id, step = _burglary_and_its_tracktik_step(console)
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
