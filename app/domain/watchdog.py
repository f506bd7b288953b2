"""The watchdog: alarms whose next step is overdue are raised to a person.

The dispatcher re-drives lost messages and expired leases, and the workers retry; the watchdog is
the check on all of them. It looks at the ledger only, so it notices what they cannot: a worker pool
that is down (steps queued and never started), a dispatcher that stopped (delayed steps past due), a
lease that expired and was never re-driven, or a step that keeps failing for longer than an alarm
can wait. Each such alarm is raised to a person once, with the reason on its timeline.

Only open alarms are raised: one already waiting for a person has one, and an ended alarm's
closing steps are visible in the dead-letter view and the overdue-steps gauge.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from app.domain.alarms import note
from app.ledger.models import Action, ActionState, Alarm, AlarmState

LEASE_EXPIRED = "lease_expired"
OVERDUE = "overdue"
FAILING = "failing"
MAX_ALARMS_PER_CHECK = 500


@dataclass(frozen=True, slots=True)
class Finding:
    """Why one alarm needs a person: the first overdue step found on it."""

    alarm_id: int
    action_id: int
    kind: str
    reason: str  # LEASE_EXPIRED, OVERDUE or FAILING
    message: str


@dataclass(frozen=True, slots=True)
class Limits:
    """How late a step may be (``grace``) and how long it may keep failing (``failing``)."""

    grace: timedelta
    failing: timedelta


def check(session: Session, *, now: datetime, limits: Limits) -> list[Finding]:
    """Raise every open alarm with an overdue step to a person; the caller's transaction commits."""
    findings = find_overdue(session, now=now, limits=limits)
    raised = []
    for finding in findings:
        alarm = session.execute(
            select(Alarm).where(Alarm.id == finding.alarm_id).with_for_update()
        ).scalar_one()
        if alarm.state != AlarmState.OPEN:  # ended or raised since the search: nothing to add
            continue
        alarm.flag_for_person(finding.message)
        note(
            session,
            alarm.id,
            now,
            "alarm.needs_person",
            finding.message,
            action_id=finding.action_id,
            raised_by="watchdog",
            reason=finding.reason,
        )
        raised.append(finding)
    return raised


def find_overdue(session: Session, *, now: datetime, limits: Limits) -> list[Finding]:
    """The first overdue step of each open alarm (oldest alarms first)."""
    late = now - limits.grace
    stuck = or_(
        and_(Action.state == ActionState.RUNNING, Action.lease_until < late),
        and_(Action.state.in_((ActionState.PENDING, ActionState.QUEUED)), Action.due_at < late),
        and_(
            Action.state.in_((ActionState.PENDING, ActionState.QUEUED, ActionState.RUNNING)),
            Action.last_error.is_not(None),
            Action.created_at < now - limits.failing,
        ),
    )
    rows = session.execute(
        select(Action)
        .join(Alarm, Alarm.id == Action.alarm_id)
        .where(Alarm.state == AlarmState.OPEN, stuck)
        .order_by(Alarm.opened_at, Action.id)
        .limit(MAX_ALARMS_PER_CHECK * 4)
    ).scalars()
    findings: dict[int, Finding] = {}
    for action in rows:
        assert action.alarm_id is not None
        if action.alarm_id in findings or len(findings) >= MAX_ALARMS_PER_CHECK:
            continue
        findings[action.alarm_id] = _finding(action, now, limits)
    return list(findings.values())


def _finding(action: Action, now: datetime, limits: Limits) -> Finding:
    assert action.alarm_id is not None
    if action.last_error is not None and action.created_at < now - limits.failing:
        age = (now - action.created_at).total_seconds()
        reason = FAILING
        message = f"watchdog: {action.kind} has been failing for {age:.0f}s: {action.last_error[:200]}"
    elif action.state == ActionState.RUNNING:
        assert action.lease_until is not None
        age = (now - action.lease_until).total_seconds()
        reason = LEASE_EXPIRED
        message = f"watchdog: {action.kind} lost its worker {age:.0f}s ago and was not picked up again"
    else:
        age = (now - action.due_at).total_seconds()
        reason = OVERDUE
        where = "queued but not started" if action.state == ActionState.QUEUED else "not sent"
        message = f"watchdog: {action.kind} is {age:.0f}s overdue ({where})"
    return Finding(action.alarm_id, action.id, action.kind, reason, message)
