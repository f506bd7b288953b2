"""What operators do to an alarm: verify, acknowledge, end, and retry a failed step.

Each command is one transaction on the ledger; anything that must reach an upstream (the verdict and
the end to the vendor whose source raised the alarm, ``vendors.OPERATOR_STEPS``; standing responders
down, ``app.domain.stand_down``) becomes a step the workers run, returned for the outbox to publish
after commit.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain import sia
from app.domain.actions import CLOSING_KINDS, DueAction, check_by_hand, due_action, lock_alarm_first
from app.domain.alarms import note, plan_step
from app.domain.stand_down import stand_down
from app.ledger.models import Action, ActionState, Alarm, AlarmState, Outcome
from vendors import OPERATOR_STEPS, RESPONDER_STEPS
from vendors.base import OperatorSteps

Verdict = Literal["valid", "false", "none"]
VALID: Verdict = "valid"  # the operator's verdict that the alarm is real
# Outcomes after which responders should stand down upstream (a 911 request cancelled, calls stopped).
STAND_DOWN = frozenset({Outcome.FALSE_ALARM, Outcome.CANCELLED, Outcome.TEST})


class AlarmNotFoundError(LookupError):
    """No alarm with that id."""


class AlarmEndedError(RuntimeError):
    """The alarm has already ended; it takes no more commands."""


class ActionNotRetryableError(RuntimeError):
    """Only a failed action can be retried."""


def _locked_alarm(session: Session, alarm_id: int) -> Alarm:
    alarm = session.execute(select(Alarm).where(Alarm.id == alarm_id).with_for_update()).scalar_one_or_none()
    if alarm is None:
        raise AlarmNotFoundError(f"no alarm {alarm_id}")
    return alarm


def _active_alarm(session: Session, alarm_id: int) -> Alarm:
    alarm = _locked_alarm(session, alarm_id)
    if alarm.state == AlarmState.ENDED:
        raise AlarmEndedError(f"alarm {alarm_id} has ended ({alarm.outcome})")
    return alarm


def _told(alarm: Alarm) -> list[OperatorSteps]:
    """The vendors an operator's verdict and End go to: the one whose source raised the alarm."""
    return [entry for entry in OPERATOR_STEPS if entry.applies(alarm.code, alarm.refs or {})]


def verify(
    session: Session, alarm_id: int, verdict: Verdict, *, now: datetime, max_attempts: int
) -> list[DueAction]:
    """Record an operator's verdict and carry it to the alarm's source; a false alarm also ends it."""
    alarm = _active_alarm(session, alarm_id)
    alarm.verification = verdict
    alarm.verified_at = now
    note(session, alarm.id, now, "alarm.verified", f"operator verdict: {verdict}")
    due: list[DueAction] = []
    for entry in _told(alarm):
        step = plan_step(
            session,
            alarm,
            entry.verify,
            now=now,
            max_attempts=max_attempts,
            params={"verdict": verdict},
        )
        due += [step] if step else []
    if verdict == "false":
        # The source ends an alert verified false itself, so no end step is needed.
        due += end(
            session, alarm_id, Outcome.FALSE_ALARM, now=now, max_attempts=max_attempts, end_source=False
        )
    return due


def acknowledge(session: Session, alarm_id: int, *, now: datetime, max_attempts: int) -> list[DueAction]:
    """A person has taken the alarm: it leaves the needs-a-person list (the reason stays on record).

    An alarm a panel's cancel stood down, waiting only for a person to recall a responder, then ends
    as ``cancelled``; otherwise nothing goes upstream. An ended alarm takes an acknowledge only while
    something raised after its end waits for a person (``person_needed_at``): that is cleared, and its
    outcome stands."""
    alarm = _locked_alarm(session, alarm_id)
    if alarm.state == AlarmState.ENDED:
        if alarm.person_needed_at is None:
            raise AlarmEndedError(f"alarm {alarm_id} has ended ({alarm.outcome}) and waits for no person")
        alarm.person_needed_at = None
        alarm.acknowledged_at = now
        note(
            session,
            alarm.id,
            now,
            "alarm.acknowledged",
            f"acknowledged by an operator (ended: {alarm.outcome})",
        )
        return []
    alarm.acknowledged_at = now
    if alarm.state == AlarmState.NEEDS_PERSON:
        alarm.state = AlarmState.OPEN
    note(session, alarm.id, now, "alarm.acknowledged", "acknowledged by an operator")
    if alarm.panel_cancelled_at is not None and alarm.verification != VALID:
        return end(session, alarm_id, Outcome.CANCELLED, now=now, max_attempts=max_attempts)
    return []


def stop_not_started(session: Session, alarm: Alarm, *, now: datetime, why: str) -> tuple[int, list[Action]]:
    """Stop every step of the alarm that has not started (closing steps excepted).

    Returns how many stopped, and those whose last attempt lost its answer: the upstream may hold what
    they created, so the caller puts them in front of a person.
    """
    actions = (
        session.execute(select(Action).where(Action.alarm_id == alarm.id).with_for_update()).scalars().all()
    )
    stopped = 0
    uncertain: list[Action] = []
    for action in actions:
        if action.state in (ActionState.PENDING, ActionState.QUEUED) and action.kind not in CLOSING_KINDS:
            action.state = ActionState.CANCELLED
            action.completed_at = now
            action.updated_at = now
            action.waiting_on = None
            action.last_error = why
            stopped += 1
            if action.outcome_unknown:
                uncertain.append(action)
    return stopped, uncertain


def flag_uncertain(
    session: Session, alarm: Alarm, uncertain: list[Action], *, now: datetime, when: str
) -> None:
    """Say on the alarm which stopped steps may have reached their upstream (their answer was lost)."""
    for action in uncertain:
        check_by_hand(session, alarm, action, now, when=when)


def end(
    session: Session,
    alarm_id: int,
    outcome: str | None,
    *,
    now: datetime,
    max_attempts: int,
    end_source: bool = True,
) -> list[DueAction]:
    """End the alarm with an outcome: stop what has not started and close it with the upstreams.

    With no outcome: ``cancelled`` for an alarm a panel's cancel stood down, else ``dispatched`` when
    a step reached a responder (``reached_a_responder``), else ``cancelled``, which stands down what
    is still in flight when it lands.
    """
    alarm = _active_alarm(session, alarm_id)
    if outcome is None and alarm.verification == VALID:
        # The operator's verdict is the outcome, a panel's cancel or not: "cancelled" would stand
        # down a guard or a 911 request landing later, against the word of the person who judged it.
        outcome = Outcome.VERIFIED
    elif outcome is None:
        panel_cancel = alarm.panel_cancelled_at is not None
        dispatched = not panel_cancel and reached_a_responder(session, alarm_id)
        outcome = Outcome.DISPATCHED if dispatched else Outcome.CANCELLED
    alarm.state = AlarmState.ENDED
    alarm.outcome = outcome
    alarm.ended_at = now
    stopped, uncertain = stop_not_started(session, alarm, now=now, why=f"alarm ended ({outcome})")
    note(
        session, alarm.id, now, "alarm.ended", f"ended: {outcome}; {stopped} step(s) not started were stopped"
    )
    flag_uncertain(session, alarm, uncertain, now=now, when="ended")
    due: list[DueAction] = []
    for entry in _told(alarm) if end_source else ():
        step = plan_step(session, alarm, entry.end, now=now, max_attempts=max_attempts)
        due += [step] if step else []
    if outcome in STAND_DOWN:
        # A responder only a person can recall keeps the ended alarm on the needs-a-person list until
        # an operator acknowledges it (the one who ended it, once they have called it off). Not when a
        # panel's cancel put that very to-do in front of a person already: the person acknowledging or
        # ending that alarm is the one acting on it, and a second acknowledge would be a chore.
        due += stand_down(
            session,
            alarm,
            alarm.refs or {},
            why=f"ended ({outcome})",
            now=now,
            max_attempts=max_attempts,
            raise_to_person=alarm.panel_cancelled_at is None,
        )
    return due


def reached_a_responder(session: Session, alarm_id: int) -> bool:
    """True when a step of the alarm reached a responder (``RESPONDER_STEPS``): it succeeded with the
    responder's id (a TrackTik dispatch, a RapidSOS alert, a CallOnAlarm alert) and its result does
    not say that nobody was reached after all (a call CallOnAlarm did not place, a 911 request no
    PSAP dispatches from). Finding the alert or its video, or recording the incident, is no dispatch."""
    rows = session.execute(
        select(Action.kind, Action.result).where(
            Action.alarm_id == alarm_id,
            Action.state == ActionState.SUCCEEDED,
            Action.kind.in_(RESPONDER_STEPS),
            Action.external_id.is_not(None),
        )
    ).all()
    return any(reached_nobody(kind, result) is None for kind, result in rows)


def reached_nobody(kind: str, result: Mapping[str, Any] | None) -> str | None:
    """What a responder step's result says when it reached nobody after all (``RESPONDER_STEPS``:
    a call CallOnAlarm did not place, a 911 request no PSAP dispatches from), else None."""
    nobody = RESPONDER_STEPS.get(kind, {})
    said = [
        f"{key} {(result or {}).get(key)}"
        for key, values in nobody.items()
        if (result or {}).get(key) in values
    ]
    return ", ".join(said) or None


def flag_if_nobody_is_sent(
    session: Session, alarm: Alarm, action_id: int, why: str, *, now: datetime
) -> None:
    """A responder step succeeded but reached nobody (``why``): when no other step of a live alarm
    has reached a responder or may still reach one, nobody is on the way and nobody knows it, so a
    person is told. A trouble's call answered ``technical_only`` (a technician's email) is its plan's
    intent; only an alarm a person could act on (life-safety, property) is raised."""
    if not alarm.is_active or alarm.panel_cancelled_at is not None:
        return
    if alarm.priority not in (sia.Priority.LIFE_SAFETY, sia.Priority.PROPERTY):
        return
    live = session.execute(
        select(Action.id).where(
            Action.alarm_id == alarm.id,
            Action.id != action_id,
            Action.kind.in_(RESPONDER_STEPS),
            Action.state.in_((ActionState.PENDING, ActionState.QUEUED, ActionState.RUNNING)),
        )
    ).first()
    if live is not None or reached_a_responder(session, alarm.id):
        return
    reason = f"the response reached nobody ({why}) and no other step sends anyone"
    alarm.flag_for_person(reason, now=now)
    note(session, alarm.id, now, "alarm.needs_person", reason, action_id=action_id)


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
        if alarm is not None and alarm.panel_cancelled_at is not None and action.kind not in CLOSING_KINDS:
            # The panel's cancel stood the response down: whatever the step created would be stood
            # down again the moment it succeeded (a 911 request cancelled, a call restored). Said now,
            # rather than answered 202 and undone: a person who judges the cancel false calls directly.
            raise ActionNotRetryableError(
                f"alarm {alarm.id} was cancelled at the panel: a retried {action.kind} would be stood "
                "down again; contact the responder directly, or end the alarm"
            )
    action.state = ActionState.QUEUED
    action.due_at = now
    action.enqueued_at = now
    action.max_attempts = action.attempts + max_attempts
    action.completed_at = None
    action.updated_at = now
    # Planned anew by a person: the watchdog's failing clock starts again with it (its last error
    # stays shown until the new attempt).
    action.created_at = now
    note(
        session,
        action.alarm_id,
        now,
        "action.retried",
        f"{action.kind} retried by an operator",
        action_id=action.id,
    )
    return due_action(action)
