"""The life cycle of an Action row: plan, claim under a lease, and record what happened.

At-least-once delivery is the broker's promise; "once in effect" is made here. A worker may only act
on an action it has claimed: the claim takes the row lock, checks the action is still wanted and
due, and stamps a fresh lease token. Whatever the broker does (redeliver, duplicate, deliver late),
a second delivery finds the action running under a live lease, or already finished, and does nothing.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Required, TypedDict, Unpack

from sqlalchemy import (
    JSON,
    BindParameter,
    ColumnElement,
    Connection,
    Row,
    bindparam,
    case,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.orm import Session
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

from app.ledger.models import (
    Action,
    ActionState,
    Alarm,
    AlarmState,
    Event,
    Outcome,
    TimelineEntry,
)
from config.celery import BULK_QUEUE, DEFAULT_QUEUE, DISPATCH_QUEUE, LIFE_SAFETY_QUEUE
from vendors import CLOSING_STEPS, RESPONDER_STEPS

# Steps that still run after the alarm has ended (those that close it with the upstreams, and what they
# need): each vendor declares its own.
CLOSING_KINDS = CLOSING_STEPS
# An operator's End that says the alarm was real: a responder's step it stopped mid-way is a person's.
_REAL_OUTCOMES = frozenset({Outcome.VERIFIED, Outcome.DISPATCHED})

BACKOFF_BASE_S = 2.0
BACKOFF_CAP_S = 300.0

# The hot path of every step (claim, then record a success) runs as prebuilt Core statements: each ORM
# load and flush costs several times the CPU of the round trip itself (a 3x cut per step, measured).
_ACTIONS = Action.__table__
_ALARMS = Alarm.__table__
_EVENTS = Event.__table__
_TIMELINE = TimelineEntry.__table__
_LIVE_STATES = (ActionState.PENDING, ActionState.QUEUED)


def _first_event(column: Any) -> Any:
    """The alarm's opening event: the first of its events that carries the alarm's own code.

    Not simply its lowest id: a restore that came before the alarm (dual-path reordering) is adopted
    by it with a lower id, and its time and text must never become the alarm's in a dispatch.
    ``IS NOT DISTINCT FROM`` so that an Alta alarm (no code) finds its webhook; an alarm none of whose
    events carries its code (none that intake opens) still gets its first event rather than nothing.
    The choice is made in WHERE, not ORDER BY: SQLite cannot see the outer alarm from a subquery's
    ORDER BY.
    """
    events = _EVENTS.alias("opening")
    mine = events.c.alarm_id == _ALARMS.c.id
    opening_id = func.coalesce(
        select(func.min(events.c.id))
        .where(mine, events.c.code.is_not_distinct_from(_ALARMS.c.code))
        .correlate(_ALARMS)
        .scalar_subquery(),
        select(func.min(events.c.id)).where(mine).correlate(_ALARMS).scalar_subquery(),
    )
    return select(column).where(_EVENTS.c.id == opening_id)


class _JsonArrayOf(FunctionElement[Any]):
    """An aggregate of a column's values as one JSON array: ``json_agg`` on PostgreSQL,
    ``json_group_array`` on SQLite (NULL on PostgreSQL when there are no rows)."""

    type = JSON()
    inherit_cache = True


@compiles(_JsonArrayOf, "postgresql")
def _json_agg(element: _JsonArrayOf, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_agg({compiler.process(element.clauses, **kw)})"


@compiles(_JsonArrayOf, "sqlite")
def _json_group_array(element: _JsonArrayOf, compiler: SQLCompiler, **kw: Any) -> str:
    return f"json_group_array({compiler.process(element.clauses, **kw)})"


# What a step sees of its alarm, read in the round trip that takes the alarm's lock: its columns, its
# opening event's time and body (``_first_event``), and the kinds of its steps
# (app.domain.alarms.load_context builds the step's context from it; the kinds were a round trip of
# their own on every step).
ALARM_SNAPSHOT = (
    *_ALARMS.c,
    _first_event(_EVENTS.c.occurred_at).scalar_subquery().label("first_event_occurred_at"),
    _first_event(_EVENTS.c.payload).scalar_subquery().label("first_event_payload"),
    select(_JsonArrayOf(_ACTIONS.c.kind))
    .where(_ACTIONS.c.alarm_id == _ALARMS.c.id)
    .scalar_subquery()
    .label("step_kinds"),
)
_LOCK_ALARM = select(_ALARMS.c.id).where(_ALARMS.c.id == bindparam("alarm_id")).with_for_update()
_LOCK_ALARM_OF_ACTION = (
    select(*ALARM_SNAPSHOT)
    .where(
        _ALARMS.c.id
        == select(_ACTIONS.c.alarm_id).where(_ACTIONS.c.id == bindparam("action_id")).scalar_subquery()
    )
    .with_for_update()
)
# The claim's rules, each stated once, as conditions on the action's row at ``now``. _TAKE_LEASE
# combines them into one statement, the common claim's only round trip (measured: keep it so); when it
# takes nothing, _claim_slowly reads the same conditions back to learn which one refused, and does what
# a refusal alone cannot: hand an early message back, cancel a step of an ended alarm, fail a step
# whose attempts ran out.
_NOW: BindParameter[datetime] = bindparam("now")
_IS_DUE = _ACTIONS.c.due_at <= _NOW
_HAS_ATTEMPTS_LEFT = _ACTIONS.c.attempts < _ACTIONS.c.max_attempts
# Not finished, and not held under a live lease.
_IS_FREE = _ACTIONS.c.state.in_(_LIVE_STATES) | (
    (_ACTIONS.c.state == ActionState.RUNNING)
    & (_ACTIONS.c.lease_until.is_(None) | (_ACTIONS.c.lease_until <= _NOW))
)
# A lease taken over mid-attempt: the previous holder's request may have reached the upstream.
_OUTCOME_UNKNOWN_ONCE_CLAIMED = _ACTIONS.c.outcome_unknown | (_ACTIONS.c.state == ActionState.RUNNING)
_TAKE_LEASE = (
    update(_ACTIONS)
    .where(_ACTIONS.c.id == bindparam("action_id"), _IS_DUE, _HAS_ATTEMPTS_LEFT, _IS_FREE)
    .values(
        state=ActionState.RUNNING,
        attempts=_ACTIONS.c.attempts + 1,
        lease_token=bindparam("token"),
        lease_until=bindparam("until"),
        updated_at=bindparam("now"),
        outcome_unknown=_OUTCOME_UNKNOWN_ONCE_CLAIMED,
    )
    .returning(
        _ACTIONS.c.id,
        _ACTIONS.c.alarm_id,
        _ACTIONS.c.kind,
        _ACTIONS.c.attempts,
        _ACTIONS.c.max_attempts,
        _ACTIONS.c.idempotency_key,
        _ACTIONS.c.outcome_unknown,
        _ACTIONS.c.params,
    )
)
# The same rules, read back for the action _TAKE_LEASE left (its row locked, as the ORM object the
# slow path may cancel or fail; populate_existing: a copy the session holds is read afresh).
_WHY_NOT_TAKEN = (
    select(
        Action,
        _IS_DUE.label("is_due"),
        _IS_FREE.label("is_free"),
        _HAS_ATTEMPTS_LEFT.label("has_attempts_left"),
        _OUTCOME_UNKNOWN_ONCE_CLAIMED.label("outcome_unknown_once_claimed"),
    )
    .where(Action.id == bindparam("action_id"))
    .with_for_update()
    .execution_options(populate_existing=True)
)
_RECORD_SUCCESS = (
    update(_ACTIONS)
    .where(_ACTIONS.c.id == bindparam("action_id"), _ACTIONS.c.state != ActionState.SUCCEEDED)
    .values(
        state=ActionState.SUCCEEDED,
        external_id=bindparam("external"),
        result=bindparam("outcome"),
        outcome_unknown=False,
        last_error=None,  # what it waited for or failed on before is on the timeline
        lease_token=None,
        lease_until=None,
        completed_at=bindparam("now"),
        updated_at=bindparam("now"),
    )
    .returning(_ACTIONS.c.kind, _ACTIONS.c.attempts, _ACTIONS.c.alarm_id)
)
_ADD_TIMELINE = insert(_TIMELINE)


def core(session: Session) -> Connection:
    """The session's connection for a Core statement, once the session's pending changes are written."""
    session.flush()
    return session.connection()


def written_behind(session: Session, entity: type[Any], ident: int) -> None:
    """A Core statement changed this row: a copy the session already loaded is read again on next use."""
    loaded = session.identity_map.get(Session.identity_key(entity, ident))
    if loaded is not None:
        session.expire(loaded)


@dataclass(frozen=True, slots=True)
class DueAction:
    """What the outbox needs to announce an action: its id, its task and its queue."""

    id: int
    task_name: str
    queue: str


@dataclass(frozen=True, slots=True)
class ClaimedAction:
    """A snapshot of an action a worker holds the lease on (detached from any session)."""

    id: int
    alarm_id: int | None
    kind: str
    attempts: int
    max_attempts: int
    lease_token: str
    idempotency_key: str
    outcome_unknown: bool
    params: dict[str, Any]


class NewAction(TypedDict, total=False):
    """What a new action is made from: ``new_action``'s and ``action_values``' keyword arguments."""

    kind: Required[str]
    target: Required[str]
    queue: Required[str]
    due_at: Required[datetime]
    max_attempts: Required[int]
    alarm_id: int | None  # None: a system step
    cancellable: bool
    params: dict[str, Any] | None
    enqueued: bool  # the caller hands it to the broker after commit
    now: datetime | None  # when it is created; None: its due time
    waiting_on: str | None


def new_action(**spec: Unpack[NewAction]) -> Action:
    """A pending action row, for the ORM; ``enqueued`` says the caller will hand it to the broker
    after commit."""
    return Action(**action_values(**spec))


def action_values(**spec: Unpack[NewAction]) -> dict[str, Any]:
    """A new action's column values: for ``new_action`` and for intake's multi-row Core insert."""
    enqueued = spec.get("enqueued", False)
    now = spec.get("now") or spec["due_at"]
    return {
        "waiting_on": spec.get("waiting_on"),
        "alarm_id": spec.get("alarm_id"),
        "kind": spec["kind"],
        "target": spec["target"],
        "queue": spec["queue"],
        "state": ActionState.QUEUED if enqueued else ActionState.PENDING,
        "due_at": spec["due_at"],
        "enqueued_at": now if enqueued else None,
        "attempts": 0,
        "max_attempts": spec["max_attempts"],
        "cancellable": spec.get("cancellable", False),
        "idempotency_key": str(uuid.uuid4()),
        "outcome_unknown": False,
        "params": spec.get("params") or {},
        "created_at": now,
        "updated_at": now,
    }


def wake(session: Session, alarm_id: int, waiting_on: str, *, now: datetime) -> list[DueAction]:
    """Start now the alarm's pending steps that were waiting on ``waiting_on``; returns them, for the
    caller to publish after commit. The caller holds the alarm's lock (alarm before actions)."""
    rows = (
        core(session)
        .execute(
            update(_ACTIONS)
            .where(
                _ACTIONS.c.alarm_id == alarm_id,
                _ACTIONS.c.state == ActionState.PENDING.value,
                _ACTIONS.c.waiting_on == waiting_on,
            )
            .values(
                state=ActionState.QUEUED.value, due_at=now, enqueued_at=now, waiting_on=None, updated_at=now
            )
            .returning(_ACTIONS.c.id, _ACTIONS.c.kind, _ACTIONS.c.queue)
        )
        .all()
    )
    return [DueAction(id=row.id, task_name=row.kind, queue=row.queue) for row in rows]


def due_action(action: Action) -> DueAction:
    """The outbox's view of an action row."""
    return DueAction(id=action.id, task_name=action.kind, queue=action.queue)


def claim(
    session: Session,
    action_id: int,
    *,
    now: datetime,
    lease: timedelta,
    on_exhausted: Callable[[Session, Action], None] | None = None,
) -> ClaimedAction | None:
    """Take the lease on an action if it is due, wanted and not held; None means "do nothing".

    Called inside a transaction that commits right after, so the lease is visible to every other
    delivery of the same message before any upstream call is made. ``on_exhausted`` runs (in the same
    transaction) when the action fails here because its attempts ran out under expired leases.
    """
    return claim_with_alarm(session, action_id, now=now, lease=lease, on_exhausted=on_exhausted)[0]


def claim_with_alarm(
    session: Session,
    action_id: int,
    *,
    now: datetime,
    lease: timedelta,
    on_exhausted: Callable[[Session, Action], None] | None = None,
) -> tuple[ClaimedAction | None, Row[Any] | None]:
    """``claim``, also returning the alarm's row it locked first (``ALARM_SNAPSHOT``), so the caller
    need not read it again."""
    connection = core(session)
    alarm = connection.execute(_LOCK_ALARM_OF_ACTION, {"action_id": action_id}).first()
    stood_down = _stood_down(alarm)
    if stood_down is None:  # a stood-down alarm's steps may be cancelled: the slow path decides
        claimed = _take_lease(session, connection, action_id, now=now, lease=lease)
        if claimed is not None:
            return claimed, alarm
    claimed = _claim_slowly(
        session, action_id, now=now, lease=lease, stood_down=stood_down, on_exhausted=on_exhausted
    )
    return claimed, alarm


@dataclass(frozen=True, slots=True)
class _StoodDown:
    """Why an alarm's response stopped, and which of its steps that stops (those planned by then)."""

    why: str  # "the alarm has ended"
    when: str  # "ended": "… may have reached X before the alarm <when>"
    planned_by: datetime | None = None  # the steps planned before this; None: every step (an ended alarm)


def _stood_down(alarm: Row[Any] | None) -> _StoodDown | None:
    """An ended alarm stops every step but its closing ones. A cancel at the panel within the window
    stops the steps planned before it, also those running at the cancel whose attempt then failed or
    lost its answer: their retry must not send again what the user cancelled (a 911 request, a call).
    Steps planned after it (the stand-down, an operator's) run."""
    if alarm is None:
        return None
    if alarm.state == AlarmState.ENDED:
        return _StoodDown("the alarm has ended", "ended")
    if alarm.panel_cancelled_at is not None:
        return _StoodDown(
            "the alarm was cancelled at the panel", "was cancelled at the panel", alarm.panel_cancelled_at
        )
    return None


def _take_lease(
    session: Session, connection: Connection, action_id: int, *, now: datetime, lease: timedelta
) -> ClaimedAction | None:
    """Run _TAKE_LEASE: the claimed action, or None when one of the claim's rules refused."""
    token = str(uuid.uuid4())
    values = {"action_id": action_id, "now": now, "token": token, "until": now + lease}
    taken = connection.execute(_TAKE_LEASE, values).first()
    if taken is None:
        return None
    written_behind(session, Action, action_id)
    return ClaimedAction(
        id=taken.id,
        alarm_id=taken.alarm_id,
        kind=taken.kind,
        attempts=taken.attempts,
        max_attempts=taken.max_attempts,
        lease_token=token,
        idempotency_key=taken.idempotency_key,
        outcome_unknown=bool(taken.outcome_unknown),
        params=dict(taken.params or {}),
    )


def _claim_slowly(
    session: Session,
    action_id: int,
    *,
    now: datetime,
    lease: timedelta,
    stood_down: _StoodDown | None,
    on_exhausted: Callable[[Session, Action], None] | None,
) -> ClaimedAction | None:
    """The claim when _TAKE_LEASE took nothing (or was not tried: the alarm was stood down): not
    found, early, finished or held, a step of a stood-down alarm, attempts exhausted. The alarm is
    already locked; the rules are _TAKE_LEASE's own, read back by _WHY_NOT_TAKEN."""
    found = session.execute(_WHY_NOT_TAKEN, {"action_id": action_id, "now": now}).first()
    if found is None:
        return None
    action: Action = found.Action
    if not found.is_due:
        if action.state == ActionState.QUEUED:
            # Early (clocks differ between hosts): hand it back so the next dispatcher tick sends it.
            action.state = ActionState.PENDING
            action.enqueued_at = None
        return None
    if not found.is_free:
        return None  # finished, or another delivery holds a live lease
    if (
        stood_down is not None
        and action.kind not in CLOSING_KINDS
        and (stood_down.planned_by is None or action.created_at < stood_down.planned_by)
    ):
        _finish(session, action, ActionState.CANCELLED, now, message=f"not run: {stood_down.why}")
        if found.outcome_unknown_once_claimed:
            alarm = session.get_one(Alarm, action.alarm_id)
            check_by_hand(session, alarm, action, now, when=stood_down.when)
        elif action.attempts > 0 and action.kind in RESPONDER_STEPS:
            unsent_after_a_real_end(session, action, now)
        return None
    if not found.has_attempts_left:
        action.outcome_unknown = bool(found.outcome_unknown_once_claimed)
        _fail(session, action, now, error=action.last_error or "attempts exhausted (lease expired)")
        if on_exhausted is not None:
            on_exhausted(session, action)
        return None
    # Every rule holds (a closing step of an ended alarm): the statement takes the lease.
    return _take_lease(session, core(session), action_id, now=now, lease=lease)


def lock_alarm_first(session: Session, alarm_id: int | None) -> None:
    """Take the alarm's row lock before any of its actions' rows.

    Every writer locks in this order — alarm, then actions — (an operator ending an alarm, intake
    cancelling its steps, a worker recording a result), so two of them can never deadlock.
    """
    if alarm_id is not None:
        session.execute(_LOCK_ALARM, {"alarm_id": alarm_id})


def _held(session: Session, claimed: ClaimedAction) -> Action | None:
    """The row, locked, if this worker's lease is still the current one."""
    lock_alarm_first(session, claimed.alarm_id)
    action = session.execute(select(Action).where(Action.id == claimed.id).with_for_update()).scalar_one()
    if action.lease_token != claimed.lease_token or action.state != ActionState.RUNNING:
        return None
    return action


def succeed(
    session: Session,
    claimed: ClaimedAction,
    *,
    now: datetime,
    external_id: str | None = None,
    result: dict[str, Any] | None = None,
    message: str | None = None,
    alarm_locked: bool = False,
) -> bool:
    """Record success. A success is kept even if the lease was lost: the upstream did it.

    ``alarm_locked``: the caller already holds the alarm's row lock in this transaction.
    """
    if not alarm_locked:
        lock_alarm_first(session, claimed.alarm_id)
    connection = core(session)
    values = {"action_id": claimed.id, "now": now, "external": external_id, "outcome": result}
    row = connection.execute(_RECORD_SUCCESS, values).first()
    if row is None:
        return False  # already recorded by another delivery
    written_behind(session, Action, claimed.id)
    connection.execute(
        _ADD_TIMELINE,
        {
            "alarm_id": row.alarm_id,
            "action_id": claimed.id,
            "event_id": None,
            "at": now,
            "kind": f"action.{ActionState.SUCCEEDED.value}",
            "message": message or f"{row.kind} succeeded",
            "data": {"kind": row.kind, "attempts": row.attempts},
        },
    )
    return True


def retry_later(
    session: Session,
    claimed: ClaimedAction,
    *,
    now: datetime,
    error: str,
    delay_s: float | None = None,
    outcome_unknown: bool = False,
) -> ActionState:
    """Give the action back to the ledger with a new due time, or fail it when attempts are spent."""
    action = _held(session, claimed)
    if action is None:
        return ActionState.RUNNING  # someone else holds it now; their outcome counts
    action.last_error = error
    action.outcome_unknown = action.outcome_unknown or outcome_unknown
    if action.attempts >= action.max_attempts:
        _fail(session, action, now, error=f"attempts exhausted: {error}")
        return ActionState.FAILED
    wait = delay_s if delay_s is not None else backoff_s(action.attempts)
    action.state = ActionState.PENDING
    action.waiting_on = None  # a backoff runs to its due time: nothing wakes it early
    action.due_at = now + timedelta(seconds=wait)
    action.enqueued_at = None
    action.lease_token = None
    action.lease_until = None
    action.updated_at = now
    _timeline(
        session, action, now, "action.retry_scheduled", f"{action.kind} will retry in {wait:.1f}s: {error}"
    )
    return ActionState.PENDING


def fail(session: Session, claimed: ClaimedAction, *, now: datetime, error: str) -> bool:
    """Record a permanent failure; the alarm then needs a person."""
    action = _held(session, claimed)
    if action is None:
        return False
    _fail(session, action, now, error=error)
    return True


def backoff_s(attempts: int) -> float:
    """Exponential backoff with full jitter, so retries from many alarms do not arrive together."""
    ceiling = min(BACKOFF_CAP_S, BACKOFF_BASE_S * 2 ** max(0, attempts - 1))
    return random.uniform(ceiling / 2, ceiling)  # noqa: S311 - jitter, not security


def _fail(session: Session, action: Action, now: datetime, *, error: str) -> None:
    action.last_error = error
    _finish(session, action, ActionState.FAILED, now, message=f"{action.kind} failed: {error}")
    if action.alarm_id is not None:
        alarm = session.execute(
            select(Alarm).where(Alarm.id == action.alarm_id).with_for_update()
        ).scalar_one()
        alarm.flag_for_person(f"{action.kind} failed: {error}"[:500], now=now)


def _finish(session: Session, action: Action, state: ActionState, now: datetime, *, message: str) -> None:
    action.state = state
    action.lease_token = None
    action.lease_until = None
    action.completed_at = now
    action.updated_at = now
    _timeline(session, action, now, f"action.{state.value}", message)


def unsent_after_a_real_end(session: Session, action: Action, now: datetime) -> None:
    """A responder's step that was under way when an operator ended the alarm as real, and whose
    attempt then failed: nobody was sent by it. The operator who said "real" may count on that guard
    or 911 request, so a person is told (once: when the attempt fails, and not again when its retry
    is stopped); an alarm ended as false, cancelled or a test needs nobody. The alarm's row is
    locked by the caller, before the action's."""
    alarm = session.get_one(Alarm, action.alarm_id)
    if alarm.state != AlarmState.ENDED or alarm.outcome not in _REAL_OUTCOMES:
        return
    reason = (
        f"{action.kind} was under way when the alarm was ended as {alarm.outcome}, and its attempt "
        f"failed ({action.last_error or 'no answer'}): {action.target} sent nobody; send one by hand"
    )
    if reason in (alarm.needs_person_reason or ""):
        return
    alarm.flag_for_person(reason, now=now)
    _timeline(session, action, now, "alarm.needs_person", reason)


def check_by_hand(session: Session, alarm: Alarm, action: Action, now: datetime, *, when: str) -> None:
    """A stopped step whose last attempt may have reached its upstream: a person must check it.

    Its answer was lost, or its worker died mid-call (its lease expired): what it created (a guard's
    dispatch, a 911 alert, a phone call) may be live, with no id to stand it down by. Said by End of
    the steps it stops, and by the claim of a step that was running when its alarm was stood down.
    """
    reason = (
        f"{action.kind} may have reached {action.target} before the alarm {when} (its answer was lost): "
        f"check {action.target} and stand it down there"
    )
    alarm.flag_for_person(reason, now=now)
    action.outcome_unknown = True
    _timeline(session, action, now, "upstream.check_by_hand", reason)


def _timeline(session: Session, action: Action, now: datetime, kind: str, message: str) -> None:
    session.add(
        TimelineEntry(
            alarm_id=action.alarm_id,
            action_id=action.id,
            at=now,
            kind=kind,
            message=message,
            data={"kind": action.kind, "attempts": action.attempts},
        )
    )


# The order the dispatcher sends what is due in: life-safety steps first, so that after a broker
# outage during a storm of troubles a fire alarm's steps never wait a tick per batch of older troubles.
_QUEUE_RANKS = {LIFE_SAFETY_QUEUE: 0, DISPATCH_QUEUE: 1, DEFAULT_QUEUE: 2, BULK_QUEUE: 3}


def _queue_rank(queue: str | None) -> int:
    return _QUEUE_RANKS.get(queue or "", _QUEUE_RANKS[DEFAULT_QUEUE])


def collect_for_dispatch(
    session: Session,
    *,
    now: datetime,
    resend_after: timedelta,
    limit: int,
    waiting: Mapping[str, int] | None = None,
) -> list[DueAction]:
    """Pick the actions the broker should hear about now, and stamp them as sent.

    - pending and due (never handed to the broker, or handed back by a failed publish), and queued
      ones with no hand-off time;
    - running with an expired lease (a killed worker), not re-sent within ``resend_after``;
    - queued longer than ``resend_after`` ago whose message the broker can no longer hold (lost, e.g.
      Redis restarted without persistence). ``waiting`` is how many messages each queue holds, read
      from the broker just before: see ``_lost_messages``. Without it (the broker did not answer)
      every queued action older than ``resend_after`` is re-sent, which at-least-once allows.
    Rows another dispatcher (or a claim) is handling are skipped (PostgreSQL ``SKIP LOCKED``), and a
    duplicate message is harmless anyway: the claim lets only one delivery act. Life-safety steps
    come first in each batch (then the dispatcher's own, property, trouble), each kind by due time:
    ``limit`` never makes a fire alarm's step wait behind older troubles.
    """
    stale = now - resend_after
    never_or_stale = (Action.enqueued_at.is_(None)) | (Action.enqueued_at <= stale)
    due_pending = (Action.state == ActionState.PENDING) & (Action.due_at <= now)
    queued = (Action.state == ActionState.QUEUED) & (Action.due_at <= now)
    never_sent = queued & Action.enqueued_at.is_(None)
    sent_long_ago = queued & (Action.enqueued_at <= stale)
    lease_expired = (Action.state == ActionState.RUNNING) & (Action.lease_until <= now) & never_or_stale
    wanted = due_pending | never_sent | lease_expired
    if waiting is None:
        wanted |= sent_long_ago
    rows = list(
        session.execute(
            select(Action)
            .where(wanted)
            .order_by(
                case(_QUEUE_RANKS, value=Action.queue, else_=_QUEUE_RANKS[DEFAULT_QUEUE]), Action.due_at
            )
            .limit(limit)
            .with_for_update(skip_locked=True)
        ).scalars()
    )
    if waiting is not None:
        # Lost messages rank with the rest, queue by queue: a fire step whose message Redis lost must
        # not wait until a backlog of due troubles has gone out.
        lost = _lost_messages(session, sent_long_ago, waiting, limit)
        rows = sorted(rows + lost, key=lambda action: (_queue_rank(action.queue), action.due_at))[:limit]
    for action in rows:
        action.enqueued_at = now
        if action.state == ActionState.PENDING:
            action.state = ActionState.QUEUED
    return [due_action(action) for action in rows]


def _lost_messages(
    session: Session, sent_long_ago: ColumnElement[bool], waiting: Mapping[str, int], limit: int
) -> list[Action]:
    """The queued actions whose message cannot be in their queue any more: life-safety first, then
    oldest first within each queue.

    A queue is first in, first out (kombu pushes at one end of a Redis list and workers pop at the
    other), so a queue holding ``n`` messages holds at most those of its ``n`` most recently queued
    actions; every older queued action has no message left. During a backlog the queue holds one
    message per queued action and nothing is re-sent; after the messages were lost it holds fewer (or
    none) and the oldest actions, those without one, are re-sent. Duplicates in the queue (re-sends,
    messages of actions a claim already took) can only delay a re-send until they are consumed.
    """
    counts = session.execute(
        select(Action.queue, func.count(), func.sum(case((sent_long_ago, 1), else_=0)))
        .where(Action.state == ActionState.QUEUED, Action.enqueued_at.is_not(None))
        .group_by(Action.queue)
    ).all()
    found: list[Action] = []
    for queue, queued, candidates in sorted(counts, key=lambda row: _queue_rank(row[0])):
        without_message = min(queued - waiting.get(queue, 0), candidates or 0, limit - len(found))
        if without_message <= 0:
            continue
        found += session.execute(
            select(Action)
            .where(sent_long_ago, Action.queue == queue)
            .order_by(Action.enqueued_at, Action.id)
            .limit(without_message)
            .with_for_update(skip_locked=True)
        ).scalars()
    return found


def defer(
    session: Session,
    claimed: ClaimedAction,
    *,
    now: datetime,
    reason: str,
    delay_s: float,
    waiting_on: str | None = None,
) -> ActionState:
    """Give the action back without spending an attempt: it could not run yet (not an upstream error).

    ``waiting_on``: what ends the wait (``WAITING_FOR_REFS``: ``wake`` starts it as soon as another
    step records it); ``delay_s`` is then only the longest it waits. The timeline says why once per
    reason, so an operator sees what the alarm is waiting for.
    """
    action = _held(session, claimed)
    if action is None:
        return ActionState.RUNNING
    action.attempts = max(0, action.attempts - 1)
    action.state = ActionState.PENDING
    action.waiting_on = waiting_on
    action.due_at = now + timedelta(seconds=max(delay_s, 0.1))
    action.enqueued_at = None
    action.lease_token = None
    action.lease_until = None
    action.updated_at = now
    if action.last_error != reason:
        _timeline(session, action, now, "action.waiting", f"{action.kind} waits: {reason}")
    action.last_error = reason
    return ActionState.PENDING
