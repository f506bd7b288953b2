"""The watchdog: alarms whose next step is overdue are raised to a person.

The dispatcher re-drives lost messages and expired leases, and the workers retry; the watchdog is
the check on all of them. It looks at the ledger only, so it notices what they cannot: a worker pool
that is down (steps queued and never started), a dispatcher that stopped (delayed steps past due), a
lease that expired and was never re-driven, or a step that keeps failing for longer than an alarm
can wait. Each such alarm is raised to a person once, with the reason on its timeline.

Only open alarms are raised: one already waiting for a person has one, and an ended alarm's
closing steps are visible in the dead-letter view and the overdue-steps gauge.

Once per finding: the late steps an alarm is raised for are stamped (``Action.watchdog_raised_at``),
and a step is passed over while it stays late the way it was then. An operator who acknowledges
the alarm during an outage (its steps still late) is not handed it back on the next tick; a step
that becomes late anew (another step, or the same one retried, re-leased or re-planned) raises it
again.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, select, union, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.domain.alarms import note
from app.ledger.models import Action, ActionState, Alarm, AlarmState

LEASE_EXPIRED = "lease_expired"
OVERDUE = "overdue"
FAILING = "failing"
MAX_ALARMS_PER_CHECK = 500


@dataclass(frozen=True, slots=True)
class Finding:
    """Why one alarm needs a person: the first overdue step found on it (``late_action_ids``: every
    late step of it this check found, the first included)."""

    alarm_id: int
    action_id: int
    kind: str
    reason: str  # LEASE_EXPIRED, OVERDUE or FAILING
    message: str
    late_action_ids: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """How late a step may be (``grace``) and how long it may keep failing (``failing``)."""

    grace: timedelta
    failing: timedelta


def check(session: Session, *, now: datetime, limits: Limits) -> list[Finding]:
    """Raise every open alarm with an overdue step to a person; the caller's transaction commits."""
    findings = find_overdue(session, now=now, limits=limits)
    raised: list[Finding] = []
    for finding in findings:
        alarm = session.execute(
            select(Alarm).where(Alarm.id == finding.alarm_id).with_for_update()
        ).scalar_one()
        if alarm.state != AlarmState.OPEN:  # ended or raised since the search: nothing to add
            continue
        alarm.flag_for_person(finding.message, now=now)
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
    stamped = [action_id for finding in raised for action_id in finding.late_action_ids]
    if stamped:  # each alarm's row is locked above, before its steps' (the ledger's lock order)
        session.execute(update(Action).where(Action.id.in_(stamped)).values(watchdog_raised_at=now))
    return raised


def _not_raised_since(
    became_late: InstrumentedAttribute[datetime] | InstrumentedAttribute[datetime | None],
) -> ColumnElement[bool]:
    """The step was not raised for since it became late the way it is now (``became_late``: its
    ``due_at``, ``lease_until`` or ``created_at``; each is set anew when the step is retried,
    re-leased or re-planned, after any raise for its previous lateness)."""
    return Action.watchdog_raised_at.is_(None) | (Action.watchdog_raised_at < became_late)


def find_overdue(session: Session, *, now: datetime, limits: Limits) -> list[Finding]:
    """The first overdue step of each open alarm (oldest alarms first).

    Read as three walks of the live steps' indexes, each in its own order and stopped at the cap
    (leases expired, due steps not started, steps failing for long), then joined to their alarms by
    id: during a storm, tens of thousands of steps may be late at once, and a join driven from the
    alarms (the planner's choice when its statistics lag behind a fast-growing backlog) took
    minutes on every tick, starving the workers of the database it was watching.
    """
    late = now - limits.grace
    cap = MAX_ALARMS_PER_CHECK * 4
    live = (ActionState.PENDING, ActionState.QUEUED, ActionState.RUNNING)
    # Each walk keeps only steps of open alarms before its cap: the steps of alarms already raised
    # (or ended) stay late through an outage, and as the oldest they would fill every walk, so that
    # once a few thousand of them piled up no open alarm was ever reached again. A scalar subquery,
    # not EXISTS: the planner cannot turn it into a join, so each walk stays driven by its own index
    # and probes the alarm by its primary key row by row (as a semi-join, with statistics that lag
    # behind a storm's backlog, the planner drove it from the alarms and a tick ran out of time).
    # Steps already raised for (and still late the same way) are passed over the same way, by a test
    # on the step's own row: an acknowledged alarm's late steps must not fill the walks either.
    of_open_alarm = (
        select(Alarm.state).where(Alarm.id == Action.alarm_id).scalar_subquery() == AlarmState.OPEN
    )
    walks = [
        select(Action.id)
        .where(
            Action.state == ActionState.RUNNING,
            Action.lease_until < late,
            _not_raised_since(Action.lease_until),
            of_open_alarm,
        )
        .order_by(Action.lease_until)
        .limit(cap),
        *(
            select(Action.id)
            .where(
                Action.state == state, Action.due_at < late, _not_raised_since(Action.due_at), of_open_alarm
            )
            .order_by(Action.due_at)
            .limit(cap)
            for state in (ActionState.PENDING, ActionState.QUEUED)
        ),
        select(Action.id)
        .where(
            Action.state.in_(live),
            Action.last_error.is_not(None),
            Action.created_at < now - limits.failing,
            _not_raised_since(Action.created_at),
            of_open_alarm,
        )
        .order_by(Action.created_at)
        .limit(cap),
    ]
    stuck = union(*(select(walk.subquery()) for walk in walks)).subquery()
    rows = session.execute(
        select(Action)
        .join(stuck, stuck.c.id == Action.id)
        .join(Alarm, Alarm.id == Action.alarm_id)
        .where(Alarm.state == AlarmState.OPEN)
        .order_by(Alarm.opened_at, Action.id)
        .limit(cap)
    ).scalars()
    findings: dict[int, Finding] = {}
    late_steps: dict[int, list[int]] = {}
    for action in rows:
        assert action.alarm_id is not None
        if action.alarm_id in findings:
            late_steps[action.alarm_id].append(action.id)
        elif len(findings) < MAX_ALARMS_PER_CHECK:
            findings[action.alarm_id] = _finding(action, now, limits)
            late_steps[action.alarm_id] = [action.id]
    return [
        replace(finding, late_action_ids=tuple(late_steps[alarm_id]))
        for alarm_id, finding in findings.items()
    ]


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
