"""perform(), the one place an upstream's answer becomes a step's state: each kind of outcome a
handler can have, and what the ledger then holds (a real ledger, the real Redis broker under a
private key prefix, the example sites file).

| handler | state | also |
| --- | --- | --- |
| returns an Outcome | succeeded | external id and result kept, the alarm's refs merged |
| UpstreamUnavailableError (503, Retry-After) | pending | due after Retry-After, attempt counted |
| OutcomeUnknownError (lost answer) | pending | outcome_unknown set: the retry checks before it sends |
| UpstreamRejectedError (e.g. 422) | failed | dead letter; a failed TrackTik create calls a person now |
| PreconditionError (no site table...) | failed | "not sent: ...", never an HTTP status |
| NotYetError | pending | not counted as an attempt |
| any other exception | pending, then re-raised | "internal error" kept, attempt counted |
| its last attempt unavailable | failed | "attempts exhausted" |
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select

from app.domain.events import Event
from app.domain.intake import IntakeRules, record_event
from app.ledger.models import Action, ActionState, Alarm, AlarmState, utcnow
from tests.sites_fixture import MONTREAL_ACCOUNT
from workers.clients.errors import (
    NotYetError,
    OutcomeUnknownError,
    PreconditionError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from workers.perform import Job, Outcome, perform
from workers.runtime import Runtime

pytestmark = pytest.mark.integration
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)
TRACKTIK = "tracktik.create_alarm"


def _tracktik_step(rt: Runtime, zone: str) -> int:
    """A commercial burglary's TrackTik create (example sites file): the step under test."""
    now = utcnow()
    event = Event(
        source_key="acme-panels", source_kind="panel", received_at=now, account=MONTREAL_ACCOUNT,
        code="BA", zone=zone, occurred_at=now, payload={"code": "BA"},
    )  # fmt: skip
    with rt.sessions.begin() as session:
        receipt = record_event(session, event, sites=rt.sites, rules=RULES)
        step = session.execute(
            select(Action.id).where(Action.alarm_id == receipt.alarm_id, Action.kind == TRACKTIK)
        ).scalar_one()
    return int(step)


def _row(rt: Runtime, action_id: int) -> Action:
    with rt.sessions() as session:
        action = session.get_one(Action, action_id)
        session.expunge(action)
        return action


def _raise(exc: BaseException) -> Callable[[Job], Outcome]:
    def handler(job: Job) -> Outcome:
        raise exc

    return handler


def test_an_outcome_is_a_success_with_its_external_id_result_and_refs(rt: Any) -> None:
    step = _tracktik_step(rt, "1")
    outcome = Outcome(external_id="77", result={"id": 77}, refs={"tracktik_alarm_id": 77})

    assert perform(rt, step, lambda job: outcome) == ActionState.SUCCEEDED
    row = _row(rt, step)
    assert (row.state, row.external_id, row.result, row.attempts) == (
        ActionState.SUCCEEDED,
        "77",
        {"id": 77},
        1,
    )
    with rt.sessions() as session:
        alarm = session.get_one(Alarm, row.alarm_id)
        assert alarm.refs["tracktik_alarm_id"] == 77


def test_an_unavailable_upstream_is_retried_after_its_retry_after(rt: Any) -> None:
    step = _tracktik_step(rt, "2")
    before = utcnow()

    state = perform(rt, step, _raise(UpstreamUnavailableError("tracktik", "HTTP 503", retry_after_s=120)))

    row = _row(rt, step)
    assert state == ActionState.PENDING == row.state
    assert row.attempts == 1 and "HTTP 503" in (row.last_error or "")
    assert row.due_at >= before + timedelta(seconds=119)  # Retry-After honoured, not the short backoff
    assert not row.outcome_unknown


def test_a_lost_answer_is_retried_as_outcome_unknown(rt: Any) -> None:
    step = _tracktik_step(rt, "3")

    state = perform(
        rt, step, _raise(OutcomeUnknownError("tracktik", "read timeout after the request was sent"))
    )

    row = _row(rt, step)
    assert state == ActionState.PENDING == row.state
    assert row.outcome_unknown  # the retry looks for what the lost attempt may have created
    assert row.attempts == 1


def test_a_rejection_is_a_dead_letter_and_a_failed_tracktik_create_calls_a_person_now(rt: Any) -> None:
    step = _tracktik_step(rt, "4")
    before = utcnow()

    state = perform(rt, step, _raise(UpstreamRejectedError("tracktik", 422, "alarm type code unknown")))

    row = _row(rt, step)
    assert state == ActionState.FAILED == row.state
    assert "alarm type code unknown" in (row.last_error or "")
    with rt.sessions() as session:
        alarm = session.get_one(Alarm, row.alarm_id)
        assert alarm.state == AlarmState.NEEDS_PERSON
        assert f"{TRACKTIK} failed" in (alarm.needs_person_reason or "")
        call = session.execute(
            select(Action).where(Action.alarm_id == row.alarm_id, Action.kind == "callonalarm.trigger")
        ).scalar_one()
        # The plan's call (60 s later, cancellable) is the fallback: now, and no cancel stops it.
        assert (call.state, call.cancellable) == (ActionState.QUEUED, False)
        assert call.due_at <= utcnow() and call.due_at >= before - timedelta(seconds=1)


def test_a_step_that_cannot_be_built_fails_as_not_sent_not_as_an_http_status(rt: Any) -> None:
    step = _tracktik_step(rt, "8")

    state = perform(rt, step, _raise(PreconditionError("tracktik", "site has no tracktik table")))

    row = _row(rt, step)
    assert state == ActionState.FAILED == row.state
    assert row.last_error == "tracktik: not sent: site has no tracktik table"  # never "HTTP 0"


def test_not_yet_is_deferred_without_spending_an_attempt(rt: Any) -> None:
    step = _tracktik_step(rt, "5")

    state = perform(rt, step, _raise(NotYetError("waiting for the Alta video links", retry_after_s=30)))

    row = _row(rt, step)
    assert state == ActionState.PENDING == row.state
    assert row.attempts == 0


def test_an_error_of_ours_is_retried_and_raised(rt: Any) -> None:
    step = _tracktik_step(rt, "6")

    with pytest.raises(KeyError):
        perform(rt, step, _raise(KeyError("missing")))

    row = _row(rt, step)
    assert row.state == ActionState.PENDING and row.attempts == 1
    assert (row.last_error or "").startswith("internal error: KeyError")


def test_the_last_attempt_unavailable_fails_the_step(rt: Any) -> None:
    step = _tracktik_step(rt, "7")
    with rt.sessions.begin() as session:
        action = session.get_one(Action, step)
        action.attempts = action.max_attempts - 1

    state = perform(rt, step, _raise(UpstreamUnavailableError("tracktik", "HTTP 503")))

    row = _row(rt, step)
    assert state == ActionState.FAILED == row.state
    assert (row.last_error or "").startswith("attempts exhausted")
