"""A step that succeeds after the response was stood down is stood down by the same table (issue 15).

perform() runs a handler that is in flight while the operator ends the alarm, or while the panel's
cancel arrives, then reports what the upstream created, on both ledgers and the real Redis broker.
"""

from __future__ import annotations

import json
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import select

from app.domain import actions, operations
from app.domain.events import Event
from app.domain.intake import IntakeRules, record_event
from app.domain.outbox import RecordingOutbox
from app.ledger import queries
from app.ledger.models import Action, ActionState, Alarm, TimelineEntry, utcnow
from app.web import create_app
from tests.sites_fixture import MONTREAL_ACCOUNT
from vendors.rapidsos import steps as rapidsos_steps
from vendors.tracktik import steps as tracktik_steps
from workers.perform import Job, Outcome, perform
from workers.runtime import Runtime

pytestmark = pytest.mark.integration
OPERATOR_KEY = "op-key-for-the-tests"
OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)


def _signal(rt: Runtime, code: str, zone: str = "3") -> int | None:
    now = utcnow()
    event = Event(
        source_key="acme-panels", source_kind="panel", received_at=now, account=MONTREAL_ACCOUNT, code=code,
        zone=zone, occurred_at=now, payload={"code": code},
    )  # fmt: skip
    with rt.sessions.begin() as session:
        return record_event(session, event, sites=rt.sites, rules=RULES).alarm_id


def _step(rt: Runtime, alarm_id: int | None, kind: str) -> int:
    with rt.sessions() as session:
        return session.execute(
            select(Action.id).where(Action.alarm_id == alarm_id, Action.kind == kind)
        ).scalar_one()


def _published_kinds(rt: Runtime, queue: str) -> list[str]:
    client = redis.Redis.from_url(rt.settings.redis_url or "")
    raw_messages = client.lrange(f"{rt.settings.broker_key_prefix}{queue}", 0, -1)
    return [json.loads(raw)["headers"]["task"] for raw in raw_messages]


def _by_hand(rt: Runtime, alarm_id: int | None) -> list[str]:
    with rt.sessions() as session:
        return list(
            session.execute(
                select(TimelineEntry.message)
                .where(TimelineEntry.alarm_id == alarm_id, TimelineEntry.kind == "tracktik.cancel_by_hand")
                .order_by(TimelineEntry.id)
            ).scalars()
        )


def _alarm(rt: Runtime, alarm_id: int | None) -> Alarm:
    with rt.sessions() as session:
        return session.get_one(Alarm, alarm_id)


def test_a_tracktik_dispatch_created_after_the_alarm_ended_is_put_in_front_of_a_person(rt: Any) -> None:
    alarm_id = _signal(rt, "BA")
    assert alarm_id is not None

    def create(job: Job) -> Outcome:
        with rt.sessions.begin() as session:  # the operator ends it as false while the create is in flight
            operations.end(session, alarm_id, "false_alarm", now=utcnow(), max_attempts=5)
        return Outcome(external_id="77", refs={"tracktik_alarm_id": 77})

    assert perform(rt, _step(rt, alarm_id, tracktik_steps.CREATE_ALARM), create) == ActionState.SUCCEEDED
    line = "created after the alarm ended (false_alarm) — TrackTik dispatch 77 is active: cancel it there"
    assert _by_hand(rt, alarm_id) == [line]
    assert line in (_alarm(rt, alarm_id).needs_person_reason or "")


def test_a_dispatch_landing_after_an_end_without_outcome_that_only_saw_video_is_stood_down(rt: Any) -> None:
    """Only the Alta video was collected when the operator pressed End (no outcome): nobody had been
    dispatched, so the alarm ends as cancelled, and the guard's dispatch in flight is stood down."""
    alarm_id = _signal(rt, "BA")
    assert alarm_id is not None
    with rt.sessions.begin() as session:
        video = actions.new_action(
            kind="alta.collect_video", target="alta", queue="default", due_at=utcnow(), max_attempts=5,
            alarm_id=alarm_id,
        )  # fmt: skip
        video.state, video.external_id = ActionState.SUCCEEDED, "guid-1"
        session.add(video)

    def create(job: Job) -> Outcome:
        with rt.sessions.begin() as session:  # End, automatic outcome, while the create is on the wire
            operations.end(session, alarm_id, None, now=utcnow(), max_attempts=5)
        return Outcome(external_id="79", refs={"tracktik_alarm_id": 79})

    perform(rt, _step(rt, alarm_id, tracktik_steps.CREATE_ALARM), create)
    line = "created after the alarm ended (cancelled) — TrackTik dispatch 79 is active: cancel it there"
    assert _alarm(rt, alarm_id).outcome == "cancelled"
    assert _by_hand(rt, alarm_id) == [line]


def test_an_alarm_ended_before_its_dispatch_landed_stays_in_front_of_a_person_until_acknowledged(
    rt: Any,
) -> None:
    """The operator presses Verify false while the TrackTik create is on the wire; the guard is
    dispatched anyway. The ended alarm is on the needs-a-person list, the queue and the gauge until
    an operator acknowledges it; the acknowledge keeps its outcome; a second one is refused."""
    app = create_app(
        replace(rt.settings, operator_api_keys=(OPERATOR_KEY,)),
        outbox=RecordingOutbox(),
        ping_broker=lambda: None,
    )
    client = app.test_client()

    def listed(path: str) -> list[int]:
        return [alarm["id"] for alarm in client.get(path, headers=OP).json["alarms"]]

    def on_the_lists() -> tuple[list[int], list[int], list[int], list[int], list[int], int]:
        with rt.sessions() as session:
            return (
                listed("/v1/alarms?needs_person=true"),
                listed("/v1/alarms"),
                listed("/v1/alarms?state=needs_person"),
                [alarm["id"] for alarm in queries.alarm_queue(session, needs_person=True)],
                [alarm["id"] for alarm in queries.alarm_queue(session)],
                queries.alarms_needing_person(session),
            )

    try:
        alarm_id = _signal(rt, "BA")
        assert alarm_id is not None

        def create(job: Job) -> Outcome:
            verdict = client.post(f"/v1/alarms/{alarm_id}/verify", json={"verdict": "false"}, headers=OP)
            assert (verdict.json["state"], verdict.json["needs_person"]) == ("ended", False)
            return Outcome(external_id="77", refs={"tracktik_alarm_id": 77})

        perform(rt, _step(rt, alarm_id, tracktik_steps.CREATE_ALARM), create)

        assert on_the_lists() == ([alarm_id], [alarm_id], [alarm_id], [alarm_id], [alarm_id], 1)
        detail = client.get(f"/v1/alarms/{alarm_id}", headers=OP).json
        assert (detail["state"], detail["outcome"], detail["needs_person"]) == ("ended", "false_alarm", True)
        assert "TrackTik dispatch 77 is active: cancel it there" in detail["needs_person_reason"]

        acknowledged = client.post(f"/v1/alarms/{alarm_id}/acknowledge", json={}, headers=OP)

        assert acknowledged.status_code == 200
        body = acknowledged.json
        assert (body["state"], body["outcome"], body["needs_person"]) == ("ended", "false_alarm", False)
        assert body["acknowledged_at"] is not None
        assert on_the_lists() == ([], [], [], [], [], 0)
        again = client.post(f"/v1/alarms/{alarm_id}/acknowledge", json={}, headers=OP)
        assert again.status_code == 409 and again.json["error"] == "conflict"
    finally:
        app.extensions["alarm_bridge"].engine.dispose()


def test_a_rapidsos_alert_created_after_the_alarm_ended_is_cancelled(rt: Any) -> None:
    alarm_id = _signal(rt, "BA")
    assert alarm_id is not None
    step = _step(rt, alarm_id, tracktik_steps.CREATE_ALARM)
    with rt.sessions.begin() as session:  # this site's burglary plan has no RapidSOS step: give it one
        session.get_one(Action, step).kind = rapidsos_steps.CREATE_ALERT

    def create(job: Job) -> Outcome:
        with rt.sessions.begin() as session:
            operations.end(session, alarm_id, "cancelled", now=utcnow(), max_attempts=5)
        return Outcome(external_id="rs-1", refs={"rapidsos_alert_id": "rs-1"})

    perform(rt, step, create)
    with rt.sessions() as session:
        planned = session.execute(
            select(Action.kind, Action.state).where(
                Action.alarm_id == alarm_id, Action.kind == rapidsos_steps.CANCEL_ALERT
            )
        ).all()
    assert [tuple(row) for row in planned] == [(rapidsos_steps.CANCEL_ALERT, ActionState.QUEUED)]
    assert rapidsos_steps.CANCEL_ALERT in _published_kinds(rt, "default")


def test_a_dispatch_in_flight_at_the_panel_s_cancel_names_itself_when_it_lands(rt: Any) -> None:
    alarm_id = _signal(rt, "BA")

    def create(job: Job) -> Outcome:
        _signal(rt, "BC", zone="12")  # the user cancels at the panel while the request is on the wire
        return Outcome(external_id="78", refs={"tracktik_alarm_id": 78})

    perform(rt, _step(rt, alarm_id, tracktik_steps.CREATE_ALARM), create)
    alarm = _alarm(rt, alarm_id)
    assert alarm.state == "needs_person" and alarm.panel_cancelled_at is not None
    assert _by_hand(rt, alarm_id) == [
        "cancelled at the panel — a TrackTik dispatch was being created: check TrackTik and cancel it there",
        "created after the panel's cancel — TrackTik dispatch 78 is active: cancel it there",
    ]


@pytest.mark.parametrize("outcome", ["verified", "dispatched"])
def test_a_dispatch_landing_after_the_operator_ruled_a_panel_cancelled_alarm_real_is_left_to_a_person(
    rt: Any, outcome: str
) -> None:
    """The user cancels at the panel while the guard's dispatch and a 911 request are on the wire; an
    operator then ends the alarm as real (a coerced code, a person on the video). The operator's word
    wins over the cancel: what lands is not recalled by the bridge (no 911 request cancelled against
    it), and the ended alarm goes in front of a person with the ids, to keep or stand down."""
    alarm_id = _signal(rt, "BA")
    assert alarm_id is not None
    step = _step(rt, alarm_id, tracktik_steps.CREATE_ALARM)

    def create(job: Job) -> Outcome:
        _signal(rt, "BC", zone="12")  # the user's cancel, in time
        with rt.sessions.begin() as session:
            operations.end(session, alarm_id, outcome, now=utcnow(), max_attempts=5)
        return Outcome(external_id="80", refs={"tracktik_alarm_id": 80, "rapidsos_alert_id": "rs-80"})

    perform(rt, step, create)
    alarm = _alarm(rt, alarm_id)
    assert (alarm.state, alarm.outcome) == ("ended", outcome)
    assert alarm.panel_cancelled_at is not None
    assert alarm.person_needed_at is not None
    reason = alarm.needs_person_reason or ""
    assert f"after the alarm was ended as {outcome}" in reason and "rapidsos_alert_id rs-80" in reason
    with rt.sessions() as session:
        cancels = session.execute(
            select(Action.state).where(
                Action.alarm_id == alarm_id, Action.kind == rapidsos_steps.CANCEL_ALERT
            )
        ).all()
    assert cancels == []


def test_a_dispatch_landing_after_a_valid_verdict_on_a_panel_cancelled_alarm_is_left_to_a_person(
    rt: Any,
) -> None:
    """The same, with the operator's verdict "valid" on the alarm still open (not ended): what lands
    is not recalled (no 911 request cancelled against the verdict); a person decides, with the ids."""
    alarm_id = _signal(rt, "BA")
    assert alarm_id is not None
    step = _step(rt, alarm_id, tracktik_steps.CREATE_ALARM)

    def create(job: Job) -> Outcome:
        _signal(rt, "BC", zone="12")  # the user's cancel, in time
        with rt.sessions.begin() as session:
            operations.verify(session, alarm_id, "valid", now=utcnow(), max_attempts=5)
        return Outcome(external_id="81", refs={"tracktik_alarm_id": 81, "rapidsos_alert_id": "rs-81"})

    perform(rt, step, create)
    alarm = _alarm(rt, alarm_id)
    assert alarm.state == "needs_person" and alarm.panel_cancelled_at is not None
    reason = alarm.needs_person_reason or ""
    assert "after the alarm was verified valid" in reason and "rapidsos_alert_id rs-81" in reason
    assert not any("created after the panel's cancel" in line for line in _by_hand(rt, alarm_id))
    with rt.sessions() as session:
        cancels = session.execute(
            select(Action.state).where(
                Action.alarm_id == alarm_id, Action.kind == rapidsos_steps.CANCEL_ALERT
            )
        ).all()
    assert cancels == []
