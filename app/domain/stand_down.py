"""Standing responders down: the one table for an operator's End, a panel's cancel and a late success.

When an alarm turns out false, cancelled or a test, whoever is already on the way must be told. Three
paths find that out at different moments: an operator ends the alarm (``operations.end``), a panel's
cancel arrives within the cancel window (intake), or a step that was in flight when the alarm was
stood down succeeds afterwards (``workers.perform``). They all use :func:`stand_down`, so a responder
added to the table is stood down on every path.

- By API: a RapidSOS alert is cancelled (``PATCH status CANCELED``); a CallOnAlarm alert still held
  gets the restore code that stops its calls (CONTRACTS Part A 11).
- By hand: TrackTik has no API to cancel an alarm (CONTRACTS Part A 9), so the timeline says which
  dispatch is active and, when asked, the alarm is raised to a person with the same words.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Final

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain import task_names
from app.domain.actions import DueAction
from app.domain.alarms import note, plan_step
from app.ledger.models import Action, ActionState, Alarm


@dataclass(frozen=True, slots=True)
class ByApi:
    """A responder the bridge stands down itself: the ref that says it was engaged, and the step."""

    ref: str
    step: str


@dataclass(frozen=True, slots=True)
class ByHand:
    """A responder only a person can stand down: the ref, and how people name it."""

    ref: str
    vendor: str
    what: str  # "dispatch" -> "TrackTik dispatch 42 is active"


BY_API: Final = (
    ByApi("rapidsos_alert_id", task_names.RAPIDSOS_CANCEL_ALERT),
    ByApi("callonalarm_alert_id", task_names.CALLONALARM_SEND_RESTORE),
)
BY_HAND: Final = (ByHand("tracktik_alarm_id", "TrackTik", "dispatch"),)
# The creates whose result a person must stand down by hand: while one is in flight (or lost its
# answer) the responder may be engaged although no ref says so yet.
BY_HAND_CREATES: Final = {task_names.TRACKTIK_CREATE_ALARM: "TrackTik"}

# A stand-down step already planned, running or done is not planned again.
_PLANNED = (ActionState.PENDING, ActionState.QUEUED, ActionState.RUNNING, ActionState.SUCCEEDED)


def engaged_by_hand(refs: Mapping[str, Any]) -> bool:
    """True when a responder only a person can stand down is engaged."""
    return any(refs.get(entry.ref) for entry in BY_HAND)


def _by_hand_reason(entry: ByHand, refs: Mapping[str, Any], why: str) -> str:
    """ "<why> — TrackTik dispatch 42 is active: cancel it there" """
    return f"{why} — {entry.vendor} {entry.what} {refs[entry.ref]} is active: cancel it there"


def stand_down(
    session: Session,
    alarm: Alarm,
    refs: Mapping[str, Any],
    *,
    why: str,
    now: datetime,
    max_attempts: int,
    raise_to_person: bool,
    restore_call: bool = False,
    cancelled_by: str | None = None,
) -> list[DueAction]:
    """Stand down every responder ``refs`` shows engaged; returns the steps due now.

    ``refs``: the alarm's refs, or only what a late step just created. ``restore_call``: send the
    CallOnAlarm restore even without an alert id (a call that may be held although its answer was
    not recorded). ``raise_to_person``: also put the by-hand lines in the needs-a-person reason.
    ``cancelled_by``: the panel's cancel code, so the restore waits for a trigger still in flight.
    """
    planned = set(
        session.execute(
            select(Action.kind).where(
                Action.alarm_id == alarm.id,
                Action.kind.in_([entry.step for entry in BY_API]),
                Action.state.in_(_PLANNED),
            )
        ).scalars()
    )
    kinds = [entry.step for entry in BY_API if refs.get(entry.ref) and entry.step not in planned]
    if restore_call and task_names.CALLONALARM_SEND_RESTORE not in {*planned, *kinds}:
        kinds.append(task_names.CALLONALARM_SEND_RESTORE)
    for entry in BY_HAND:
        if refs.get(entry.ref):
            reason = _by_hand_reason(entry, refs, why)
            note(session, alarm.id, now, f"{entry.vendor.lower()}.cancel_by_hand", reason)
            if raise_to_person:
                alarm.flag_for_person(reason)
    params = {"cancelled_by": cancelled_by} if cancelled_by else None
    due = [
        plan_step(
            session,
            alarm,
            kind,
            now=now,
            max_attempts=max_attempts,
            params=params if kind == task_names.CALLONALARM_SEND_RESTORE else None,
        )
        for kind in kinds
    ]
    return [step for step in due if step is not None]
