"""What a step knows about its alarm, and what a finished step may change on it.

Handlers get an ``AlarmContext`` snapshot (site, the event that opened it, refs) instead of ORM rows;
what they learn comes back as refs to merge (each vendor's keys are declared in
``vendors/<key>/refs.py``), follow-up steps to plan, a reason for a person, or a request for the
fallback step. All of it is applied in the same transaction that records the step's success or
failure.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Row, bindparam, select, update
from sqlalchemy.exc import NoResultFound
from sqlalchemy.orm import Session

from app.domain import sia
from app.domain.actions import ALARM_SNAPSHOT, DueAction, core, due_action, new_action, written_behind
from app.domain.sites import Site, Sites
from app.ledger.models import Action, ActionState, Alarm, AlarmState, TimelineEntry
from vendors import FALLBACK_FROM as FALLBACK_FROM
from vendors import PHONE_FALLBACK

# Every step reads its context and most record refs: prebuilt Core statements, not ORM loads (cheaper
# by a multiple in CPU on this hot path).
# Families whose phone fallback never rings the site's own connection (the premises): a hold-up or a
# duress code (HA). The monitoring centre's connection is still called.
NO_CALL_TO_THE_PREMISES = frozenset({sia.Family.HOLDUP})
_ALARMS = Alarm.__table__
_ACTIONS = Action.__table__
_SNAPSHOT = select(*ALARM_SNAPSHOT).where(_ALARMS.c.id == bindparam("alarm_id"))
_LOCKED_ALARM = (
    select(_ALARMS.c.id, _ALARMS.c.state, _ALARMS.c.outcome, _ALARMS.c.refs, _ALARMS.c.panel_cancelled_at)
    .where(_ALARMS.c.id == bindparam("alarm_id"))
    .with_for_update()
)
_SET_REFS = update(_ALARMS).where(_ALARMS.c.id == bindparam("alarm_id")).values(refs=bindparam("merged"))


@dataclass(frozen=True, slots=True)
class AlarmContext:
    """A read-only snapshot of an alarm for a step handler."""

    id: int
    state: str
    site: Site | None
    source_kind: str  # "alta" or "panel"
    account: str | None
    zone: str | None
    code: str | None
    family: str
    priority: str
    description: str | None
    opened_at: datetime
    occurred_at: datetime | None  # the opening event's own time, when it carried one
    message: str | None
    payload: dict[str, Any]  # the opening event's body as received
    refs: dict[str, Any]
    verification: str | None
    event_count: int = 1
    action_kinds: tuple[str, ...] = ()  # the kinds of the alarm's steps, sorted by name
    extra: dict[str, Any] = field(default_factory=dict)


def load_context(
    session: Session, alarm_id: int, sites: Sites, *, alarm: Row[Any] | None = None
) -> AlarmContext | None:
    """The snapshot of one alarm (None when it does not exist).

    ``alarm``: its ``ALARM_SNAPSHOT`` row when the caller has just read it (the claim does, as it
    locks the alarm), so that it is not read twice.
    """
    connection = core(session)
    if alarm is None:
        alarm = connection.execute(_SNAPSHOT, {"alarm_id": alarm_id}).first()
        if alarm is None:
            return None
    payload = dict(alarm.first_event_payload or {})
    return AlarmContext(
        id=alarm.id,
        state=alarm.state,
        site=sites.site(alarm.site_key) if alarm.site_key else None,
        source_kind="alta" if alarm.code is None else "panel",
        account=alarm.account,
        zone=alarm.zone,
        code=alarm.code,
        family=alarm.family,
        priority=alarm.priority,
        description=alarm.description,
        opened_at=alarm.opened_at,
        occurred_at=alarm.first_event_occurred_at,
        message=payload.get("message") or payload.get("description") or payload.get("detection"),
        payload=payload,
        refs=dict(alarm.refs or {}),
        verification=alarm.verification,
        event_count=alarm.event_count,
        action_kinds=tuple(sorted(alarm.step_kinds or ())),
    )


def locked_alarm(session: Session, alarm_id: int | None) -> Row[Any, Any, Any, Any, Any] | None:
    """The alarm's id, state, outcome, refs and panel cancel, under its row lock (before any action's)."""
    if alarm_id is None:
        return None
    return core(session).execute(_LOCKED_ALARM, {"alarm_id": alarm_id}).first()


def merge_refs(
    session: Session, alarm_id: int, refs: dict[str, Any], *, current: dict[str, Any] | None = None
) -> None:
    """Add what an upstream told us to the alarm (under the row lock, so steps never lose each other's).

    ``current``: the refs the caller read under that lock in this transaction (``locked_alarm``).
    """
    if not refs:
        return
    if current is None:
        row = locked_alarm(session, alarm_id)
        if row is None:
            raise NoResultFound(f"no alarm {alarm_id}")
        current = row.refs
    merged = {**(current or {}), **refs}
    core(session).execute(_SET_REFS, {"alarm_id": alarm_id, "merged": merged})
    written_behind(session, Alarm, alarm_id)


def note(session: Session, alarm_id: int | None, now: datetime, kind: str, message: str, **data: Any) -> None:
    """Append a line to an alarm's timeline."""
    session.add(
        TimelineEntry(
            alarm_id=alarm_id,
            action_id=data.pop("action_id", None),
            at=now,
            kind=kind,
            message=message,
            data=data,
        )
    )


def plan_step(
    session: Session,
    alarm: Alarm,
    kind: str,
    *,
    now: datetime,
    max_attempts: int,
    after_s: float = 0.0,
    params: dict[str, Any] | None = None,
    cancellable: bool = False,
) -> DueAction | None:
    """Add one step to an alarm; returns it when due now (the caller publishes after commit)."""
    immediate = after_s <= 0
    action = new_action(
        kind=kind,
        target=kind.split(".", 1)[0],
        queue=sia.queue_for(alarm.priority),
        due_at=now + timedelta(seconds=max(after_s, 0)),
        max_attempts=max_attempts,
        alarm_id=alarm.id,
        cancellable=cancellable,
        params=params or {},
        enqueued=immediate,
        now=now,
    )
    session.add(action)
    session.flush()
    when = "now" if immediate else f"in {after_s:g}s"
    note(session, alarm.id, now, "action.planned", f"{kind} {when}", action_id=action.id)
    return due_action(action) if immediate else None


def plan_fallback(
    session: Session,
    alarm_id: int,
    reason: str,
    *,
    now: datetime,
    max_attempts: int,
    sites: Sites,
    fallback_account: str | None,
) -> DueAction | None:
    """Call a person by phone (``vendors.PHONE_FALLBACK``) because a dispatch step could not do its job.

    A call already planned but waiting is made due now and no longer cancellable; one already placed
    stands; otherwise a new call goes to the site's connection, else the monitoring centre's.
    """
    alarm = session.execute(select(Alarm).where(Alarm.id == alarm_id).with_for_update()).scalar_one()
    alarm.flag_for_person(reason, now=now)
    if alarm.panel_cancelled_at is not None:
        # The user cancelled at the panel and the response was stood down: a call now would ring the
        # people the cancel spared. The alarm waits for a person, who may still call.
        note(
            session,
            alarm_id,
            now,
            "fallback.none",
            f"{reason}: no phone fallback, the alarm was cancelled at the panel; a person must act",
        )
        return None
    calls = (
        session.execute(
            select(Action)
            .where(Action.alarm_id == alarm_id, Action.kind == PHONE_FALLBACK.step)
            .with_for_update()
        )
        .scalars()
        .all()
    )
    for call in calls:
        if call.state in (ActionState.PENDING, ActionState.QUEUED):
            call.due_at = min(call.due_at, now)
            call.cancellable = False
            note(
                session,
                alarm_id,
                now,
                "fallback.call_now",
                f"{reason}: the planned call goes now",
                action_id=call.id,
            )
            if call.state == ActionState.PENDING:
                call.state = ActionState.QUEUED
                call.enqueued_at = now
                return due_action(call)
            return None
        if call.state in (ActionState.RUNNING, ActionState.SUCCEEDED):
            note(session, alarm_id, now, "fallback.call_placed", f"{reason}: a call is already placed")
            return None
    site = sites.site(alarm.site_key) if alarm.site_key else None
    own = PHONE_FALLBACK.account(site) if site is not None else None
    if own is not None and alarm.family in NO_CALL_TO_THE_PREMISES:
        # A hold-up or duress: the site's own connection rings the people there, maybe in front of
        # whoever holds them. Only the monitoring centre's connection may be called.
        note(
            session,
            alarm_id,
            now,
            "fallback.not_the_premises",
            f"{reason}: no call to the premises for a {alarm.family} alarm",
        )
        own = None
    account = own or fallback_account
    if account is None or alarm.state == AlarmState.ENDED:
        note(
            session,
            alarm_id,
            now,
            "fallback.none",
            f"{reason}: no phone fallback configured; a person must act",
        )
        return None
    note(session, alarm_id, now, "fallback.call", f"{reason}: calling {account} by phone")
    return plan_step(
        session,
        alarm,
        PHONE_FALLBACK.step,
        now=now,
        max_attempts=max_attempts,
        params={"fallback": True, "account": account, "reason": reason},
    )
