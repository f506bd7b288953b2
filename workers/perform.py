"""perform(): the one way a task runs an action — claim the lease, run the handler, record the outcome.

Task bodies stay thin and never catch upstream errors; the classification lives here:
unavailable → retry later (honouring Retry-After), outcome unknown → retry after reconciling,
rejected → failed, the alarm needs a person and the fallback runs; not yet → wait without spending
an attempt. Anything else is a bug: it is recorded on the action as a retry (so the alarm is never
silently dropped) and re-raised for Celery to log.

Whatever the handler learned (refs, follow-up steps, a reason for a person, a fallback) is applied
in the same transaction that records its success; follow-ups due now are published after commit.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import structlog
from celery.exceptions import Reject, SoftTimeLimitExceeded
from sqlalchemy import select

from app import telemetry
from app.domain import actions
from app.domain.actions import ClaimedAction, DueAction
from app.domain.alarms import (
    FALLBACK_FROM,
    AlarmContext,
    load_context,
    locked_alarm,
    merge_refs,
    note,
    plan_fallback,
    plan_step,
)
from app.domain.operations import STAND_DOWN, VALID, flag_if_nobody_is_sent, reached_nobody
from app.domain.stand_down import stand_down
from app.ledger.models import (
    WAITING_FOR_911,
    WAITING_FOR_REFS,
    Action,
    ActionState,
    Alarm,
    AlarmState,
    utcnow,
)
from app.ledger.session import is_unreachable
from config.settings import Settings
from vendors import EMERGENCY_REQUESTS, PHONE_FALLBACK, RESPONDER_STEPS, WAKING_REFS, vendor_of
from workers.clients import Clients
from workers.clients.base import FirstRequestProbe, first_request_probe, step_deadline
from workers.clients.cache import cache_key
from workers.clients.errors import (
    BudgetExhaustedError,
    NotYetError,
    OutcomeUnknownError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from workers.runtime import Runtime

log = structlog.get_logger(__name__)
FIRST_REQUEST_MEMORY_S = 7 * 24 * 3600  # longer than any alarm stays open
# The refs a step may wait for (NotYetError(wake_on_refs=True)) are vendors.WAKING_REFS: recording
# another ref wakes nobody, so it costs no statement.


@dataclass(frozen=True, slots=True)
class FollowUp:
    """A step a handler asks for next (e.g. the alert is found: collect its video)."""

    kind: str
    after_s: float = 0.0
    params: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handler reports on success."""

    external_id: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    refs: dict[str, Any] = field(default_factory=dict)  # merged into the alarm's refs
    follow_ups: tuple[FollowUp, ...] = ()
    needs_person: str | None = None  # a reason: the alarm is raised to a person
    fallback: str | None = None  # a reason: run the phone fallback (e.g. no PSAP can take it)


def _nothing() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Job:
    """Everything a handler gets: its action, its alarm, the clients, the settings and the time.

    ``release_911``: the 911 request's step (``vendors.EMERGENCY_REQUESTS``) calls it once its request
    has been written to the socket, to start the alarm's steps held until the 911 request leaves
    (perform() calls it anyway when the step ends).
    """

    action: ClaimedAction
    alarm: AlarmContext | None
    clients: Clients
    settings: Settings
    now: datetime
    release_911: Callable[[], None] = _nothing


Handler = Callable[[Job], Outcome]


# How long a step whose claim found the ledger unreachable waits before its message goes back.
CLAIM_UNAVAILABLE_PAUSE_S = 1.0


def perform(rt: Runtime, action_id: int, handler: Handler) -> str:
    """Run ``handler`` for one action at most once at a time, and record what happened.

    ``rt`` is the process's runtime (a task's ``self.runtime``). Returns the action's resulting state
    name (for logs and tests); outcomes live in the ledger.
    """
    lease = timedelta(seconds=rt.settings.action_lease_s)
    fallback: list[DueAction] = []

    def exhausted(session: Any, action: Action) -> None:
        telemetry.DEAD_LETTERS.labels(action.kind).inc()
        telemetry.ACTIONS_FINISHED.labels(action.kind, ActionState.FAILED.value).inc()
        if action.kind in FALLBACK_FROM and action.alarm_id is not None:
            fallback.extend(_plan_fallback(session, rt, action.alarm_id, f"{action.kind} failed", utcnow()))

    try:
        with _ledger_write("claim"), rt.sessions.begin() as session:
            claimed, alarm = actions.claim_with_alarm(
                session, action_id, now=utcnow(), lease=lease, on_exhausted=exhausted
            )
            context = (
                load_context(session, claimed.alarm_id, rt.sites, alarm=alarm)
                if claimed is not None and claimed.alarm_id is not None
                else None
            )
    except Exception as exc:
        if not is_unreachable(exc):
            raise
        # The ledger cannot be reached (a restart, a failover): the message goes back to its queue
        # instead of being acknowledged with nothing recorded, which left the step to the lost-message
        # re-send a lease later. A short pause first, so a thread does not spin on a ledger that is down.
        log.warning("action.claim_unavailable", action_id=action_id, error=type(exc).__name__)
        time.sleep(CLAIM_UNAVAILABLE_PAUSE_S)
        raise Reject(f"the ledger cannot be reached: {type(exc).__name__}", requeue=True) from exc
    rt.outbox.publish(fallback)
    if claimed is None:
        log.info("action.skipped", action_id=action_id)
        return "skipped"
    structlog.contextvars.bind_contextvars(action_id=claimed.id, alarm_id=claimed.alarm_id)
    log.info("action.claimed", kind=claimed.kind, attempt=claimed.attempts)
    released = False

    def release_911() -> None:
        nonlocal released
        if not released and context is not None:
            released = True
            _wake(rt, context.id, WAITING_FOR_911)

    job = Job(claimed, context, rt.clients, rt.settings, utcnow(), release_911)
    probe_token = first_request_probe.set(_first_request_probe(rt, context))
    # The step's own deadline (the soft time limit, below the lease): every upstream call is cut to it
    # (base.py), on every pool; Celery enforces its time limits only under prefork.
    deadline_token = step_deadline.set(time.monotonic() + rt.settings.task_soft_time_limit_s)
    try:
        outcome = handler(job)
    except NotYetError as exc:
        return _defer(rt, claimed, exc, context)
    except UpstreamUnavailableError as exc:
        return _retry(rt, claimed, str(exc), "unavailable", delay_s=exc.retry_after_s)
    except OutcomeUnknownError as exc:
        return _retry(rt, claimed, str(exc), "outcome_unknown", outcome_unknown=True)
    except UpstreamRejectedError as exc:
        return _fail(rt, claimed, str(exc))
    except SoftTimeLimitExceeded:
        # Cut off mid-call: the upstream may have applied the request.
        _retry(rt, claimed, "task time limit reached", "time_limit", outcome_unknown=True)
        raise
    except Exception as exc:
        _retry(rt, claimed, f"internal error: {type(exc).__name__}: {exc}", "internal")
        raise
    finally:
        step_deadline.reset(deadline_token)
        first_request_probe.reset(probe_token)
        if claimed.kind in EMERGENCY_REQUESTS:
            release_911()  # whatever happened to the 911 request, the guard is not held any longer
    return _succeed(rt, claimed, outcome)


@contextmanager
def _ledger_write(operation: str) -> Iterator[None]:
    started = time.perf_counter()
    yield
    telemetry.LEDGER_WRITES.labels(operation).observe(time.perf_counter() - started)


def _first_request_probe(rt: Runtime, context: AlarmContext | None) -> FirstRequestProbe | None:
    """Times the alarm's first request to each upstream, whichever step and process sends it."""
    if context is None:
        return None
    cache = rt.cache

    def first(upstream: str) -> bool:
        key = cache_key(rt.settings, "first-request", str(context.id), upstream)
        return bool(cache.set(key, 1, nx=True, ex=FIRST_REQUEST_MEMORY_S))

    return FirstRequestProbe(context.opened_at, first)


def _succeed(rt: Runtime, claimed: ClaimedAction, outcome: Outcome) -> str:
    now = utcnow()
    due: list[DueAction] = []
    with _ledger_write("record"), rt.sessions.begin() as session:
        locked = locked_alarm(session, claimed.alarm_id)
        recorded = actions.succeed(
            session,
            claimed,
            now=now,
            external_id=outcome.external_id,
            result=outcome.result,
            message=outcome.message,
            alarm_locked=locked is not None,
        )
        if recorded and locked is not None:
            merge_refs(session, locked.id, outcome.refs, current=locked.refs)
            if WAKING_REFS & outcome.refs.keys():  # steps waiting for it start now, not at their next poll
                due += actions.wake(session, locked.id, WAITING_FOR_REFS, now=now)
            stood_down = locked.state == AlarmState.ENDED and locked.outcome in STAND_DOWN
            stood_down = stood_down or locked.panel_cancelled_at is not None
            if outcome.follow_ups or outcome.needs_person or outcome.fallback or stood_down:
                due += _after_success(session, rt, claimed, outcome, now)
            why = reached_nobody(claimed.kind, outcome.result)
            if why and not (outcome.needs_person or outcome.fallback):
                alarm = session.execute(select(Alarm).where(Alarm.id == locked.id)).scalar_one()
                flag_if_nobody_is_sent(session, alarm, claimed.id, f"{claimed.kind}: {why}", now=now)
        elif not recorded and locked is not None and outcome.external_id:
            _second_success(session, claimed, outcome, now)
    rt.outbox.publish(due)
    if recorded:
        telemetry.ACTIONS_FINISHED.labels(claimed.kind, ActionState.SUCCEEDED.value).inc()
    log.info("action.succeeded", external_id=outcome.external_id)
    return ActionState.SUCCEEDED.value


def _second_success(session: Any, claimed: ClaimedAction, outcome: Outcome, now: datetime) -> None:
    """Another delivery of this step had already recorded its success: this one's lease ran out
    while it still ran. What this one created, if not the same object, may be a duplicate (a second
    911 alert, a second call) that nothing will stand down, so a person is told, with its ids."""
    first = session.execute(select(Action.external_id, Action.target).where(Action.id == claimed.id)).one()
    if first.external_id == outcome.external_id:
        return  # the same object: found again by its reference, or an upstream that dedupes
    alarm = session.get(Alarm, claimed.alarm_id)
    if alarm is None:
        return
    reason = (
        f"{claimed.kind} succeeded twice ({first.external_id} and {outcome.external_id}): the second "
        f"may be a duplicate at {first.target}: check it there and stand it down"
    )
    alarm.flag_for_person(reason, now=now)
    note(session, alarm.id, now, "upstream.check_by_hand", reason, action_id=claimed.id, refs=outcome.refs)


def _after_success(
    session: Any, rt: Runtime, claimed: ClaimedAction, outcome: Outcome, now: datetime
) -> list[DueAction]:
    """What a success changes on the alarm besides its refs; the alarm's lock is already held."""
    due: list[DueAction] = []
    alarm = session.execute(select(Alarm).where(Alarm.id == claimed.alarm_id)).scalar_one()
    for follow_up in outcome.follow_ups:
        step = plan_step(
            session,
            alarm,
            follow_up.kind,
            now=now,
            max_attempts=rt.settings.action_max_attempts,
            after_s=follow_up.after_s,
            params=follow_up.params,
        )
        due += [step] if step else []
    if outcome.needs_person:
        alarm.flag_for_person(outcome.needs_person, now=now)
        note(session, alarm.id, now, "alarm.needs_person", outcome.needs_person, action_id=claimed.id)
    if outcome.fallback:
        due += _fallback(session, rt, claimed, outcome.fallback, now)
    if alarm.state == AlarmState.ENDED and alarm.outcome in STAND_DOWN:
        why = f"created after the alarm ended ({alarm.outcome})"
        due += _stand_down_late(session, rt, alarm, outcome, now, why)
    elif (
        alarm.state != AlarmState.ENDED
        and alarm.panel_cancelled_at is not None
        and alarm.verification != VALID
    ):
        due += _stand_down_late(session, rt, alarm, outcome, now, "created after the panel's cancel")
    elif alarm.panel_cancelled_at is not None:
        # The operator judged it real after the panel's cancel (verified valid, or ended as verified
        # or dispatched): that verdict wins over the cancel, so what lands is not recalled by the
        # bridge (a 911 request cancelled against the operator's word is the worse mistake); a person
        # decides, with the ids in front.
        vendor = vendor_of(claimed.kind)
        upstream = vendor.name if vendor is not None else claimed.kind
        judged = f"ended as {alarm.outcome}" if alarm.state == AlarmState.ENDED else "verified valid"
        reason = (
            f"{claimed.kind} landed after the panel's cancel and after the alarm was {judged} "
            f"({_ids(outcome.refs)}): keep it, or stand it down in {upstream}"
        )
        alarm.flag_for_person(reason, now=now)
        note(
            session, alarm.id, now, "upstream.check_by_hand", reason, action_id=claimed.id, refs=outcome.refs
        )
    return due


def _ids(refs: dict[str, Any] | None) -> str:
    return ", ".join(f"{key} {value}" for key, value in sorted((refs or {}).items())) or "no id"


def _fail(rt: Runtime, claimed: ClaimedAction, error: str) -> str:
    now = utcnow()
    due: list[DueAction] = []
    with _ledger_write("record"), rt.sessions.begin() as session:
        failed = actions.fail(session, claimed, now=now, error=error)
        if failed and claimed.kind in FALLBACK_FROM:
            due = _fallback(session, rt, claimed, f"{claimed.kind} failed", now)
    rt.outbox.publish(due)
    if failed:
        telemetry.DEAD_LETTERS.labels(claimed.kind).inc()
        telemetry.ACTIONS_FINISHED.labels(claimed.kind, ActionState.FAILED.value).inc()
    log.warning("action.failed", error=error)
    return ActionState.FAILED.value


def _stand_down_late(
    session: Any, rt: Runtime, alarm: Alarm, outcome: Outcome, now: datetime, why: str
) -> list[DueAction]:
    """A step that finished after the response was stood down (the alarm ended as false, cancelled or
    a test, or a panel's cancel stood it down) created something upstream: stand that down too, by the
    same table, and put what only a person can stand down in front of one."""
    return stand_down(
        session,
        alarm,
        outcome.refs,
        why=why,
        now=now,
        max_attempts=rt.settings.action_max_attempts,
        raise_to_person=True,
        just_created=True,
    )


def _fallback(
    session: Any, rt: Runtime, claimed: ClaimedAction, reason: str, now: datetime
) -> list[DueAction]:
    if claimed.alarm_id is None:
        return []
    return _plan_fallback(session, rt, claimed.alarm_id, reason, now)


def _plan_fallback(session: Any, rt: Runtime, alarm_id: int, reason: str, now: datetime) -> list[DueAction]:
    step = plan_fallback(
        session,
        alarm_id,
        reason,
        now=now,
        max_attempts=rt.settings.action_max_attempts,
        sites=rt.sites,
        fallback_account=PHONE_FALLBACK.default_account(rt.settings),
    )
    return [step] if step else []


def _retry(
    rt: Runtime,
    claimed: ClaimedAction,
    error: str,
    reason: str,
    *,
    delay_s: float | None = None,
    outcome_unknown: bool = False,
) -> str:
    now = utcnow()
    due: list[DueAction] = []
    # An upstream that asks for a longer wait (Retry-After) than the watchdog lets a step be late
    # makes the step a person's at once: a 911 request told to come back in ten minutes must not
    # wait silently for the watchdog's failing rule.
    long_wait = (
        delay_s is not None and delay_s > rt.settings.watchdog_grace_s and claimed.alarm_id is not None
    )
    # A responder's step whose alarm an operator ended (as real) while it ran: its retry will not run,
    # and a person must hear now that it sent nobody, not when the retry falls due.
    responder = claimed.kind in RESPONDER_STEPS and claimed.alarm_id is not None
    with _ledger_write("record"), rt.sessions.begin() as session:
        locked = None
        if long_wait or responder:
            # The alarm's row before the action's, as elsewhere.
            locked = locked_alarm(session, claimed.alarm_id)
        state = actions.retry_later(
            session, claimed, now=now, error=error, delay_s=delay_s, outcome_unknown=outcome_unknown
        )
        if state == ActionState.FAILED and claimed.kind in FALLBACK_FROM:
            due = _fallback(session, rt, claimed, f"{claimed.kind} failed", now)
        elif state == ActionState.PENDING and long_wait:
            _tell_a_person(session, claimed, f"{claimed.kind} waits {delay_s:.0f}s: {error}"[:500], now)
        ended = locked is not None and locked.state == AlarmState.ENDED
        if state == ActionState.PENDING and responder and ended and not outcome_unknown:
            actions.unsent_after_a_real_end(session, session.get_one(Action, claimed.id), now)
    rt.outbox.publish(due)
    if state == ActionState.FAILED:
        telemetry.DEAD_LETTERS.labels(claimed.kind).inc()
        telemetry.ACTIONS_FINISHED.labels(claimed.kind, ActionState.FAILED.value).inc()
    elif state != ActionState.CANCELLED:
        telemetry.RETRIES.labels(claimed.kind, reason).inc()
    log.warning("action.retry", state=state.value, reason=reason, error=error)
    return state.value


def _wake(rt: Runtime, alarm_id: int, waiting_on: str) -> None:
    """Start the alarm's steps waiting on ``waiting_on``, in a transaction of its own."""
    with rt.sessions.begin() as session:
        due = (
            actions.wake(session, alarm_id, waiting_on, now=utcnow())
            if locked_alarm(session, alarm_id)
            else []
        )
    rt.outbox.publish(due)


def _defer(rt: Runtime, claimed: ClaimedAction, exc: NotYetError, context: AlarmContext | None) -> str:
    now = utcnow()
    due: list[DueAction] = []
    if isinstance(exc, BudgetExhaustedError):
        upstream = claimed.kind.split(".", 1)[0]
        telemetry.RATE_LIMIT_WAITS.labels(upstream, "budget").inc()
        telemetry.RATE_LIMIT_WAIT_SECONDS.labels(upstream, "budget").inc(exc.retry_after_s)
    wake_on_refs = exc.wake_on_refs and context is not None
    with _ledger_write("record"), rt.sessions.begin() as session:
        locked = locked_alarm(session, claimed.alarm_id) if wake_on_refs else None  # alarm before action
        state = actions.defer(
            session,
            claimed,
            now=now,
            reason=exc.reason,
            delay_s=exc.retry_after_s,
            waiting_on=WAITING_FOR_REFS if wake_on_refs else None,
        )
        if locked is not None and context is not None and locked.refs != context.refs:
            # Recorded while this step was looking: waiting would miss the wake-up that already passed.
            due = actions.wake(session, locked.id, WAITING_FOR_REFS, now=now)
        if isinstance(exc, BudgetExhaustedError):
            # A call that cannot be placed for a while is a person's to make.
            _tell_a_person(
                session, claimed, f"{claimed.kind} waits {exc.retry_after_s:.0f}s: {exc.reason}", now
            )
    rt.outbox.publish(due)
    log.info("action.deferred", reason=exc.reason, delay_s=exc.retry_after_s)
    return state.value


def _tell_a_person(session: Any, claimed: ClaimedAction, reason: str, now: datetime) -> None:
    """Raise the step's alarm to a person (once: an alarm already waiting for one keeps its reason)."""
    if claimed.alarm_id is None:
        return
    alarm = session.execute(select(Alarm).where(Alarm.id == claimed.alarm_id).with_for_update()).scalar_one()
    if alarm.is_active and not alarm.needs_person:
        alarm.flag_for_person(reason, now=now)
        note(session, alarm.id, now, "alarm.needs_person", reason, action_id=claimed.id)


__all__ = ["Action", "FollowUp", "Handler", "Job", "Outcome", "perform"]
