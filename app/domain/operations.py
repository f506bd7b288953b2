"""What operators do to an alarm: verify, acknowledge, end, and retry a failed step.

Each command is one transaction on the ledger; anything that must reach an upstream (the verdict to
Alta, ending the Alta alert, cancelling the RapidSOS alert or the pending phone calls) becomes a step
the workers run, returned for the outbox to publish after commit.
"""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain import task_names
from app.domain.actions import CLOSING_KINDS, DueAction, due_action, lock_alarm_first
from app.domain.alarms import note, plan_step
from app.ledger.models import Action, ActionState, Alarm, AlarmState, Outcome

Verdict = Literal["valid", "false", "none"]
# Outcomes after which responders should stand down upstream (RapidSOS cancel, calls stopped).
STAND_DOWN = frozenset({Outcome.FALSE_ALARM, Outcome.CANCELLED, Outcome.TEST})


class AlarmNotFoundError(LookupError):
    """No alarm with that id."""


class AlarmEndedError(RuntimeError):
    """The alarm has already ended; it takes no more commands."""


class ActionNotRetryableError(RuntimeError):
    """Only a failed action can be retried."""


def _active_alarm(session: Session, alarm_id: int) -> Alarm:
    alarm = session.execute(select(Alarm).where(Alarm.id == alarm_id).with_for_update()).scalar_one_or_none()
    if alarm is None:
        raise AlarmNotFoundError(f"no alarm {alarm_id}")
    if alarm.state == AlarmState.ENDED:
        raise AlarmEndedError(f"alarm {alarm_id} has ended ({alarm.outcome})")
    return alarm


def _is_alta(alarm: Alarm) -> bool:
    return alarm.code is None or "alta_alert_guid" in (alarm.refs or {})


def verify(
    session: Session, alarm_id: int, verdict: Verdict, *, now: datetime, max_attempts: int
) -> list[DueAction]:
    """Record an operator's verdict and carry it to Alta; a false alarm also ends the alarm."""
    alarm = _active_alarm(session, alarm_id)
    alarm.verification = verdict
    alarm.verified_at = now
    note(session, alarm.id, now, "alarm.verified", f"operator verdict: {verdict}")
    due: list[DueAction] = []
    if _is_alta(alarm):
        step = plan_step(
            session,
            alarm,
            task_names.ALTA_VERIFY,
            now=now,
            max_attempts=max_attempts,
            params={"verdict": verdict},
        )
        due += [step] if step else []
    if verdict == "false":
        # Alta ends a false alert itself (code 202), so no separate alta.end is needed.
        due += end(session, alarm_id, Outcome.FALSE_ALARM, now=now, max_attempts=max_attempts, end_alta=False)
    return due


def acknowledge(session: Session, alarm_id: int, *, now: datetime) -> list[DueAction]:
    """A person has taken the alarm: it leaves the needs-a-person list (the reason stays on record).

    Nothing goes upstream; the empty list keeps the shape of the other commands."""
    alarm = _active_alarm(session, alarm_id)
    alarm.acknowledged_at = now
    if alarm.state == AlarmState.NEEDS_PERSON:
        alarm.state = AlarmState.OPEN
    note(session, alarm.id, now, "alarm.acknowledged", "acknowledged by an operator")
    return []


def end(
    session: Session,
    alarm_id: int,
    outcome: str | None,
    *,
    now: datetime,
    max_attempts: int,
    end_alta: bool = True,
) -> list[DueAction]:
    """End the alarm with an outcome: stop what has not started and close it with the upstreams."""
    alarm = _active_alarm(session, alarm_id)
    actions = (
        session.execute(select(Action).where(Action.alarm_id == alarm_id).with_for_update()).scalars().all()
    )
    if outcome is None:
        dispatched = any(a.state == ActionState.SUCCEEDED and a.kind not in CLOSING_KINDS for a in actions)
        outcome = Outcome.DISPATCHED if dispatched else Outcome.CANCELLED
    alarm.state = AlarmState.ENDED
    alarm.outcome = outcome
    alarm.ended_at = now
    stopped = 0
    uncertain: list[Action] = []
    for action in actions:
        if action.state in (ActionState.PENDING, ActionState.QUEUED) and action.kind not in CLOSING_KINDS:
            action.state = ActionState.CANCELLED
            action.completed_at = now
            action.updated_at = now
            action.last_error = f"alarm ended ({outcome})"
            stopped += 1
            if action.outcome_unknown:
                uncertain.append(action)
    note(
        session, alarm.id, now, "alarm.ended", f"ended: {outcome}; {stopped} step(s) not started were stopped"
    )
    for action in uncertain:
        # Its last attempt lost its answer: the upstream may hold what it created, and nothing will
        # look for it now. Say so on the alarm rather than let a dispatch run on unseen.
        reason = (
            f"{action.kind} may have reached {action.target} before the alarm ended (its answer was "
            f"lost): check {action.target} and stand it down there"
        )
        alarm.flag_for_person(reason)
        note(session, alarm.id, now, "upstream.check_by_hand", reason, action_id=action.id)
    refs = alarm.refs or {}
    kinds: list[str] = []
    if end_alta and _is_alta(alarm):
        kinds.append(task_names.ALTA_END)
    if outcome in STAND_DOWN and refs.get("rapidsos_alert_id"):
        kinds.append(task_names.RAPIDSOS_CANCEL_ALERT)
    if outcome in STAND_DOWN and refs.get("callonalarm_alert_id"):
        kinds.append(task_names.CALLONALARM_SEND_RESTORE)
    if outcome in STAND_DOWN and refs.get("tracktik_alarm_id"):
        # TrackTik has no API to cancel an alarm (CONTRACTS Part A 9): a person must do it there.
        note(
            session,
            alarm.id,
            now,
            "tracktik.cancel_by_hand",
            f"dispatch active in TrackTik (alarm {refs['tracktik_alarm_id']}) — cancel it there",
        )
    due = [plan_step(session, alarm, kind, now=now, max_attempts=max_attempts) for kind in kinds]
    return [step for step in due if step is not None]


def retry_action(session: Session, action_id: int, *, now: datetime, max_attempts: int) -> DueAction:
    """Give a failed action a fresh set of attempts, due now."""
    lock_alarm_first(session, session.execute(select(Action.alarm_id).where(Action.id == action_id)).scalar())
    action = session.execute(
        select(Action).where(Action.id == action_id).with_for_update()
    ).scalar_one_or_none()
    if action is None:
        raise AlarmNotFoundError(f"no action {action_id}")
    if action.state != ActionState.FAILED:
        raise ActionNotRetryableError(
            f"action {action_id} is {action.state}; only a failed action can be retried"
        )
    if action.alarm_id is not None:
        alarm = session.get(Alarm, action.alarm_id)
        if alarm is not None and alarm.state == AlarmState.ENDED and action.kind not in CLOSING_KINDS:
            raise AlarmEndedError(f"alarm {alarm.id} has ended ({alarm.outcome})")
    action.state = ActionState.QUEUED
    action.due_at = now
    action.enqueued_at = now
    action.max_attempts = action.attempts + max_attempts
    action.completed_at = None
    action.updated_at = now
    note(
        session,
        action.alarm_id,
        now,
        "action.retried",
        f"{action.kind} retried by an operator",
        action_id=action.id,
    )
    return due_action(action)
