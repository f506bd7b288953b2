"""DESIGN.md "No double dispatch" applied to standing responders down, on both ledgers: a responder is
told to stand down once, however many paths find out that it must (the panel's cancel, then the
operator's End of the alarm the cancel left waiting for a person).

A second CallOnAlarm restore is not harmless: a restore code cancels every pending alert of the account
(vendors/callonalarm), so one sent later than needed can stop another alarm's calls.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, select
from sqlalchemy.orm import Session, sessionmaker

from app.domain import actions as action_rules
from app.domain import operations
from app.domain.events import Event
from app.domain.intake import IntakeRules, Receipt, record_event
from app.ledger.models import Action, Alarm
from app.ledger.session import make_sessionmaker
from tests.sites_fixture import MONTREAL_ACCOUNT, example_sites
from vendors.callonalarm import steps as callonalarm_steps
from vendors.tracktik import steps as tracktik_steps

pytestmark = pytest.mark.unit
T0 = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)
SITES = example_sites()


@pytest.fixture
def sessions(engine: Engine) -> sessionmaker[Session]:
    return make_sessionmaker(engine)


def signal(sessions: sessionmaker[Session], code: str, *, after_s: float) -> Receipt:
    at = T0 + timedelta(seconds=after_s)
    event = Event(
        source_key="acme-panels", source_kind="panel", received_at=at, account=MONTREAL_ACCOUNT,
        code=code, zone="3", occurred_at=at, payload={"code": code},
    )  # fmt: skip
    with sessions.begin() as session:
        return record_event(session, event, sites=SITES, rules=RULES)


def run_step(
    sessions: sessionmaker[Session], alarm_id: int, kind: str, *, after_s: float, refs: dict[str, Any]
) -> None:
    """A worker ran the step and the upstream created what ``refs`` name."""
    now = T0 + timedelta(seconds=after_s)
    with sessions.begin() as session:
        step = session.execute(
            select(Action).where(Action.alarm_id == alarm_id, Action.kind == kind)
        ).scalar_one()
        step.due_at = now
        claimed = action_rules.claim(session, step.id, now=now, lease=timedelta(seconds=90))
        assert claimed is not None
        assert action_rules.succeed(session, claimed, now=now, external_id=None)
        alarm = session.get_one(Alarm, alarm_id)
        alarm.refs = {**(alarm.refs or {}), **refs}


def restores(sessions: sessionmaker[Session], alarm_id: int) -> list[int]:
    with sessions() as session:
        return list(
            session.execute(
                select(Action.id).where(
                    Action.alarm_id == alarm_id, Action.kind == callonalarm_steps.SEND_RESTORE
                )
            ).scalars()
        )


@pytest.mark.parametrize("command", ["acknowledge", "end"])
def test_the_operator_closing_an_alarm_the_panel_cancelled_does_not_restore_the_call_twice(
    sessions: sessionmaker[Session], command: str
) -> None:
    # Montréal burglary: the guard's dispatch (by hand only) and the call (restored by API) are live.
    opened = signal(sessions, "BA", after_s=0)
    alarm_id = opened.alarm_id or 0
    run_step(
        sessions, alarm_id, tracktik_steps.CREATE_ALARM, after_s=1,
        refs={"tracktik_alarm_id": 42, "callonalarm_alert_id": "coa-7"},
    )  # fmt: skip
    cancel = signal(sessions, "BC", after_s=5)
    assert [d.task_name for d in cancel.due_actions] == [callonalarm_steps.SEND_RESTORE]
    first = restores(sessions, alarm_id)
    assert len(first) == 1

    now = T0 + timedelta(seconds=40)
    with sessions.begin() as session:  # the person recalled the guard; the alarm ends as cancelled
        if command == "acknowledge":
            due = operations.acknowledge(session, alarm_id, now=now, max_attempts=5)
        else:
            due = operations.end(session, alarm_id, "cancelled", now=now, max_attempts=5)

    assert [d.task_name for d in due] == []
    assert restores(sessions, alarm_id) == first
    with sessions() as session:
        assert session.get_one(Alarm, alarm_id).outcome == "cancelled"
