"""The watchdog: alarms whose next step is overdue are raised to a person.

The dispatcher re-drives lost messages and expired leases, and the workers retry; the watchdog is
the check on all of them. It looks at the ledger only, so it notices what they cannot: a worker pool
that is down (steps queued and never started), a dispatcher that stopped (delayed steps past due), a
lease that expired and was never re-driven, or a step that keeps failing for longer than an alarm
can wait. Each such alarm is raised to a person once, with the reason on its timeline.

Only open alarms are raised: one already waiting for a person has one, and an ended alarm's
closing steps are visible in the dead-letter view and the overdue-steps gauge.

Once per finding: when an alarm is raised, each late step of it is marked with the lateness it was
raised for, one mark per way of being late, holding that way's column as it was then
(``watchdog_lease_mark``: its ``lease_until``; ``watchdog_due_mark``: its ``due_at``;
``watchdog_failing_mark``: its ``created_at``). A step is passed over while it is late only in ways
whose mark still equals the column, so an operator who acknowledges the alarm during an outage (its
steps still late the same way) is not handed it back on the next tick, while a step late anew (late
another way, retried, re-leased, re-planned) raises it again. Equality, not a comparison with the
time of the raise: that is the beat host's clock, and the columns are written by the workers'.
The message names every step it marks, so the operator knows all of what they acknowledge.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, select, union, update
from sqlalchemy.orm import InstrumentedAttribute, Session

from app.domain.alarms import note
from app.ledger.models import LIVE_ACTION_STATES, Action, ActionState, Alarm, AlarmState

LEASE_EXPIRED = "lease_expired"
OVERDUE = "overdue"
FAILING = "failing"
MAX_ALARMS_PER_CHECK = 500
MAX_ALSO_LATE_NAMED = 5  # further late steps are counted in the message, not named
_SHORT_REASONS = {FAILING: "failing", LEASE_EXPIRED: "lease expired", OVERDUE: "overdue"}


@dataclass(frozen=True, slots=True)
class LateStep:
    """One late step and the lateness it is raised for: the column of each way it is late now (None:
    not late that way), which the raise records as that way's mark. ``reason``: the first way it is
    late anew (FAILING, LEASE_EXPIRED, then OVERDUE)."""

    action_id: int
    kind: str
    reason: str
    lease_until: datetime | None
    due_at: datetime | None
    failing_since: datetime | None  # its created_at

    def marks(self) -> dict[str, Any]:
        """The step's marks to record when its alarm is raised, keyed by column, with its id."""
        marks: dict[str, Any] = {"id": self.action_id}
        if self.lease_until is not None:
            marks["watchdog_lease_mark"] = self.lease_until
        if self.due_at is not None:
            marks["watchdog_due_mark"] = self.due_at
        if self.failing_since is not None:
            marks["watchdog_failing_mark"] = self.failing_since
        return marks


@dataclass(frozen=True, slots=True)
class Finding:
    """Why one alarm needs a person: the first step found late anew on it (``late_steps``: every
    step of it this check found late anew, the first included; the message names them all)."""

    alarm_id: int
    action_id: int
    kind: str
    reason: str  # LEASE_EXPIRED, OVERDUE or FAILING
    message: str
    late_steps: tuple[LateStep, ...] = ()


@dataclass(frozen=True, slots=True)
class Limits:
    """How late a step may be (``grace``) and how long it may keep failing (``failing``)."""

    grace: timedelta
    failing: timedelta


def check(session: Session, *, now: datetime, limits: Limits) -> list[Finding]:
    """Raise every open alarm with a step late anew to a person; the caller's transaction commits."""
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
    marks = [step.marks() for finding in raised for step in finding.late_steps]
    if marks:  # each alarm's row is locked above, before its steps' (the ledger's lock order)
        # By primary key, each step with the values it was found late with: a step changed since
        # (a worker retried it) keeps an older mark, and is raised again if it is still late.
        session.execute(update(Action), marks)
    return raised


def _not_marked(
    mark: InstrumentedAttribute[datetime | None],
    column: InstrumentedAttribute[datetime] | InstrumentedAttribute[datetime | None],
) -> ColumnElement[bool]:
    """The step was not raised for being late this way with the column as it is now: a NULL mark
    (never raised this way) or one holding another value (a retry, a new lease, a re-plan since)."""
    return mark.is_(None) | (mark != column)


def find_overdue(session: Session, *, now: datetime, limits: Limits) -> list[Finding]:
    """The first step late anew of each open alarm (oldest alarms first), with the others late anew.

    Read as three walks of the live steps' indexes, each in its own order and stopped at the cap
    (leases expired, due steps not started, steps failing for long), then joined to their alarms by
    id: during a storm, tens of thousands of steps may be late at once, and a join driven from the
    alarms (the planner's choice when its statistics lag behind a fast-growing backlog) took
    minutes on every tick, starving the workers of the database it was watching.
    """
    late = now - limits.grace
    cap = MAX_ALARMS_PER_CHECK * 4
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
            _not_marked(Action.watchdog_lease_mark, Action.lease_until),
            of_open_alarm,
        )
        .order_by(Action.lease_until)
        .limit(cap),
        *(
            select(Action.id)
            .where(
                Action.state == state,
                Action.due_at < late,
                _not_marked(Action.watchdog_due_mark, Action.due_at),
                of_open_alarm,
            )
            .order_by(Action.due_at)
            .limit(cap)
            for state in (ActionState.PENDING, ActionState.QUEUED)
        ),
        select(Action.id)
        .where(
            Action.state.in_(LIVE_ACTION_STATES),
            Action.last_error.is_not(None),
            Action.created_at < now - limits.failing,
            _not_marked(Action.watchdog_failing_mark, Action.created_at),
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
    firsts: dict[int, Action] = {}
    late_steps: dict[int, list[LateStep]] = {}
    for action in rows:
        step = _late_step(action, now, limits)
        if step is None:  # changed between the walks and this read: not late anew any more
            continue
        assert action.alarm_id is not None
        if action.alarm_id in firsts:
            late_steps[action.alarm_id].append(step)
        elif len(firsts) < MAX_ALARMS_PER_CHECK:
            firsts[action.alarm_id] = action
            late_steps[action.alarm_id] = [step]
    findings = []
    for alarm_id, action in firsts.items():
        steps = late_steps[alarm_id]
        finding = _finding(action, steps[0].reason, now)
        findings.append(
            replace(finding, message=finding.message + _also_late(steps[1:]), late_steps=tuple(steps))
        )
    return findings


def _late_step(action: Action, now: datetime, limits: Limits) -> LateStep | None:
    """How the step is late now (each way's column), or None if it is late in no way it was not
    already raised for."""
    late = now - limits.grace
    lease_until = (
        action.lease_until
        if action.state == ActionState.RUNNING
        and action.lease_until is not None
        and action.lease_until < late
        else None
    )
    due_at = (
        action.due_at
        if action.state in (ActionState.PENDING, ActionState.QUEUED) and action.due_at < late
        else None
    )
    failing_since = (
        action.created_at
        if action.state in LIVE_ACTION_STATES
        and action.last_error is not None
        and action.created_at < now - limits.failing
        else None
    )
    anew = [
        reason
        for reason, value, mark in (
            (FAILING, failing_since, action.watchdog_failing_mark),
            (LEASE_EXPIRED, lease_until, action.watchdog_lease_mark),
            (OVERDUE, due_at, action.watchdog_due_mark),
        )
        if value is not None and value != mark
    ]
    if not anew:
        return None
    return LateStep(action.id, action.kind, anew[0], lease_until, due_at, failing_since)


def _finding(action: Action, reason: str, now: datetime) -> Finding:
    assert action.alarm_id is not None
    if reason == FAILING:
        assert action.last_error is not None
        age = (now - action.created_at).total_seconds()
        message = f"watchdog: {action.kind} has been failing for {age:.0f}s: {action.last_error[:200]}"
    elif reason == LEASE_EXPIRED:
        assert action.lease_until is not None
        age = (now - action.lease_until).total_seconds()
        message = f"watchdog: {action.kind} lost its worker {age:.0f}s ago and was not picked up again"
    else:
        age = (now - action.due_at).total_seconds()
        where = "queued but not started" if action.state == ActionState.QUEUED else "not sent"
        message = f"watchdog: {action.kind} is {age:.0f}s overdue ({where})"
    return Finding(action.alarm_id, action.id, action.kind, reason, message)


def _also_late(steps: list[LateStep]) -> str:
    """The other steps the raise marks, named (at most MAX_ALSO_LATE_NAMED), then counted."""
    if not steps:
        return ""
    named = [f"{step.kind} ({_SHORT_REASONS[step.reason]})" for step in steps[:MAX_ALSO_LATE_NAMED]]
    more = len(steps) - MAX_ALSO_LATE_NAMED
    return "; also late: " + ", ".join(named) + (f" and {more} more" if more > 0 else "")
