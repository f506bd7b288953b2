"""Standing responders down: the one table for an operator's End, a panel's cancel and a late success.

When an alarm turns out false, cancelled or a test, whoever is already on the way must be told. Three
paths find that out at different moments: an operator ends the alarm (``operations.end``), a panel's
cancel arrives within the cancel window (intake), or a step that was in flight when the alarm was
stood down succeeds afterwards (``workers.perform``). They all use :func:`stand_down`, so a responder
added to the table is stood down on every path.

- By API (``vendors.BY_API``): the step that stands the responder down, planned when its ref shows
  it engaged (e.g. a 911 request cancelled, a held call restored).
- By hand (``vendors.BY_HAND``): a responder with no API to recall it, so the timeline says which
  one is active and, when asked, the alarm is raised to a person with the same words.

Each vendor declares its entry in its package (``Vendor.stand_down``).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.actions import DueAction
from app.domain.alarms import note, plan_step
from app.ledger.models import Action, ActionState, Alarm
from vendors import BY_API, BY_HAND
from vendors.base import ByHand

# A stand-down step already planned, running or done is not planned again.
_PLANNED = (ActionState.PENDING, ActionState.QUEUED, ActionState.RUNNING, ActionState.SUCCEEDED)
# For what a step has just created, only one that has not started yet counts: one that ran (or is
# running) acted before it existed, or found nothing to stand down and did nothing.
_NOT_STARTED = (ActionState.PENDING, ActionState.QUEUED)


def engaged_by_hand(refs: Mapping[str, Any]) -> bool:
    """True when a responder only a person can stand down is engaged."""
    return any(refs.get(entry.ref) for entry in BY_HAND)


def _by_hand_reason(entry: ByHand, refs: Mapping[str, Any], why: str) -> str:
    """ "<why> — <vendor> <what> 42 is active: cancel it there" """
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
    maybe_engaged: Collection[str] = (),
    cancelled_by: str | None = None,
    just_created: bool = False,
) -> list[DueAction]:
    """Stand down every responder ``refs`` shows engaged; returns the steps due now.

    ``refs``: the alarm's refs, or only what a late step just created. ``maybe_engaged``: creates
    that tried although no ref records their answer (e.g. a phone call held in the vendor's own delay): their
    by-API stand-down runs even without the ref. ``raise_to_person``: also put the by-hand lines in
    the needs-a-person reason. ``cancelled_by``: the panel's cancel code, for the steps that take it
    (they wait for a create still in flight). ``just_created``: ``refs`` are what a step created
    after the stand-down (a late success), so a stand-down step that already ran does not cover it.
    """
    planned = set(
        session.execute(
            select(Action.kind).where(
                Action.alarm_id == alarm.id,
                Action.kind.in_([entry.step for entry in BY_API]),
                Action.state.in_(_NOT_STARTED if just_created else _PLANNED),
            )
        ).scalars()
    )
    kinds = [entry.step for entry in BY_API if refs.get(entry.ref) and entry.step not in planned]
    for entry in BY_API:
        if entry.maybe_engaged_by in maybe_engaged and entry.step not in {*planned, *kinds}:
            kinds.append(entry.step)
    takes_code = {entry.step for entry in BY_API if entry.takes_cancel_code}
    for by_hand in BY_HAND:
        if refs.get(by_hand.ref):
            reason = _by_hand_reason(by_hand, refs, why)
            note(session, alarm.id, now, f"{by_hand.vendor.lower()}.cancel_by_hand", reason)
            if raise_to_person:
                alarm.flag_for_person(reason, now=now)
    params = {"cancelled_by": cancelled_by} if cancelled_by else None
    due = [
        plan_step(
            session,
            alarm,
            kind,
            now=now,
            max_attempts=max_attempts,
            params=params if kind in takes_code else None,
        )
        for kind in kinds
    ]
    return [step for step in due if step is not None]
