"""perform(), the error classifier, run directly: one handler per classification against a real
``Runtime`` on a temporary SQLite ledger (fakeredis for the cache, a recording outbox), asserting
what the ledger holds afterwards and what was published.

| handler | state | attempt spent | due | also |
| --- | --- | --- | --- | --- |
| returns an Outcome | succeeded | yes | - | refs merged, follow-ups planned, due ones published |
| UpstreamUnavailableError | pending | yes | Retry-After, else the backoff | "will retry in ..." |
| OutcomeUnknownError | pending | yes | the backoff | outcome_unknown set |
| UpstreamRejectedError | failed | yes | - | a person; a failed TrackTik create calls now |
| PreconditionError | failed | yes | - | "not sent: ...", never "HTTP 0" |
| NotYetError | pending | no | retry_after_s | "waits: ...", woken by refs when asked |
| BudgetExhaustedError | pending | no | retry_after_s | the alarm goes to a person |
| SoftTimeLimitExceeded | pending, re-raised | yes | the backoff | outcome_unknown set |
| any other exception (a bug) | pending, re-raised | yes | the backoff | "internal error: ..." |
| a second delivery, lease live | untouched | - | - | its handler never runs |
| all attempts spent, lease expired | failed | - | - | not run; a dead letter; a person; the fallback |
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

import fakeredis
import pytest
from celery.exceptions import SoftTimeLimitExceeded
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from app.domain import operations
from app.domain.actions import BACKOFF_BASE_S, DueAction
from app.domain.alarms import plan_step
from app.domain.events import Event
from app.domain.intake import IntakeRules, Receipt, record_event
from app.domain.outbox import RecordingOutbox
from app.domain.sites import Sites
from app.ledger.models import (
    WAITING_FOR_REFS,
    Action,
    ActionState,
    Alarm,
    AlarmState,
    TimelineEntry,
    utcnow,
)
from app.ledger.session import make_engine, make_sessionmaker
from config.settings import Settings
from tests.sites_fixture import EXAMPLE_SITES, MONTREAL_ACCOUNT, SOURCE_ENV, example_sites
from vendors.alta import refs as alta_refs
from vendors.alta import steps as alta_steps
from vendors.callonalarm import refs as callonalarm_refs
from vendors.callonalarm import steps as callonalarm_steps
from vendors.callonalarm import tasks as callonalarm_tasks
from vendors.callonalarm.settings import CallOnAlarmSettings
from vendors.callonalarm.site import CallOnAlarmSite
from vendors.tracktik import steps as tracktik_steps
from workers.clients import Clients
from workers.clients.errors import (
    BudgetExhaustedError,
    NotYetError,
    OutcomeUnknownError,
    PreconditionError,
    UpstreamRejectedError,
    UpstreamUnavailableError,
)
from workers.perform import FollowUp, Job, Outcome, perform
from workers.runtime import Runtime

pytestmark = pytest.mark.unit
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)
TRACKTIK = tracktik_steps.CREATE_ALARM
CALL = callonalarm_steps.TRIGGER
VIDEO = alta_steps.COLLECT_VIDEO


@pytest.fixture
def rt(make_settings: Callable[..., Settings], sqlite_url: str) -> Iterator[Runtime]:
    """A runtime as a task gets it, on a temporary ledger: nothing leaves the process."""
    settings = make_settings(database_url=sqlite_url, sites_file=str(EXAMPLE_SITES), environ=SOURCE_ENV)
    engine = make_engine(sqlite_url)
    runtime = Runtime(
        settings,
        engine,
        make_sessionmaker(engine),
        RecordingOutbox(),
        example_sites(),
        given_cache=fakeredis.FakeRedis(),
        given_clients=Clients.of(),  # the handlers here call no upstream
    )
    yield runtime
    engine.dispose()


@dataclass(frozen=True)
class Alarmed:
    """A commercial burglary's alarm (example sites file) and its steps' ids by kind."""

    alarm_id: int
    steps: dict[str, int]


def _signal(rt: Runtime, code: str, zone: str) -> Receipt:
    """Record a panel signal of Montreal HQ now."""
    now = utcnow()
    event = Event(
        source_key="acme-panels", source_kind="panel", received_at=now, account=MONTREAL_ACCOUNT,
        code=code, zone=zone, occurred_at=now, payload={"code": code},
    )  # fmt: skip
    with rt.sessions.begin() as session:
        return record_event(session, event, sites=rt.sites, rules=RULES)


def _burglary(rt: Runtime, zone: str = "1") -> Alarmed:
    """Record a burglary at Montreal HQ: Alta video, the TrackTik create (due now), a call in 60 s."""
    receipt = _signal(rt, "BA", zone)
    with rt.sessions.begin() as session:
        rows = session.execute(select(Action).where(Action.alarm_id == receipt.alarm_id)).scalars()
        steps = {row.kind: row.id for row in rows}
    assert receipt.alarm_id is not None
    return Alarmed(receipt.alarm_id, steps)


def _due_now(rt: Runtime, action_id: int) -> None:
    with rt.sessions.begin() as session:
        session.execute(update(Action).where(Action.id == action_id).values(due_at=utcnow()))


def _row(rt: Runtime, action_id: int) -> Action:
    with rt.sessions() as session:
        action = session.get_one(Action, action_id)
        session.expunge(action)
        return action


def _alarm(rt: Runtime, alarm_id: int) -> Alarm:
    with rt.sessions() as session:
        alarm = session.get_one(Alarm, alarm_id)
        session.expunge(alarm)
        return alarm


def _timeline(
    rt: Runtime, action_id: int | None = None, *, alarm_id: int | None = None
) -> list[tuple[str, str]]:
    """(kind, message) of the entries about one action, or about one alarm, oldest first, besides
    intake's "action.planned"."""
    query = (
        select(TimelineEntry.kind, TimelineEntry.message)
        .where(TimelineEntry.kind != "action.planned")
        .order_by(TimelineEntry.id)
    )
    if action_id is not None:
        query = query.where(TimelineEntry.action_id == action_id)
    if alarm_id is not None:
        query = query.where(TimelineEntry.alarm_id == alarm_id)
    with rt.sessions() as session:
        return [(kind, message) for kind, message in session.execute(query)]


def _sent(rt: Runtime) -> list[DueAction]:
    assert isinstance(rt.outbox, RecordingOutbox)
    return rt.outbox.sent


def _raise(exc: BaseException) -> Callable[[Job], Outcome]:
    def handler(job: Job) -> Outcome:
        raise exc

    return handler


def _between(due_at: datetime, before: datetime, after: datetime, low_s: float, high_s: float) -> bool:
    return before + timedelta(seconds=low_s) <= due_at <= after + timedelta(seconds=high_s)


def _first_backoff(rt: Runtime, action_id: int, before: datetime, after: datetime) -> bool:
    """Due after the first attempt's backoff (full jitter: half to all of BACKOFF_BASE_S)."""
    return _between(_row(rt, action_id).due_at, before, after, BACKOFF_BASE_S / 2, BACKOFF_BASE_S)


# -- success ------------------------------------------------------------------------------------------


def test_a_success_records_its_outcome_merges_its_refs_and_plans_its_follow_ups(rt: Runtime) -> None:
    alarm = _burglary(rt)
    step = alarm.steps[TRACKTIK]
    outcome = Outcome(
        external_id="77",
        result={"id": 77},
        message="TrackTik alarm 77 created",
        refs={"tracktik_alarm_id": 77},
        follow_ups=(FollowUp(VIDEO), FollowUp(CALL, after_s=600)),
    )

    assert perform(rt, step, lambda job: outcome) == ActionState.SUCCEEDED

    row = _row(rt, step)
    assert (row.state, row.external_id, row.result, row.attempts) == (
        ActionState.SUCCEEDED,
        "77",
        {"id": 77},
        1,
    )
    assert row.lease_token is None and row.completed_at is not None
    assert _alarm(rt, alarm.alarm_id).refs["tracktik_alarm_id"] == 77
    assert _timeline(rt, step) == [("action.succeeded", "TrackTik alarm 77 created")]
    with rt.sessions() as session:
        planned = session.execute(
            select(Action).where(Action.alarm_id == alarm.alarm_id, Action.id.not_in(alarm.steps.values()))
        ).scalars()
        follow_ups = {a.kind: (a.state, a.id) for a in planned}
    assert follow_ups.keys() == {VIDEO, CALL}
    assert follow_ups[CALL][0] == ActionState.PENDING  # in 10 minutes: the dispatcher sends it then
    assert [(d.id, d.task_name) for d in _sent(rt)] == [(follow_ups[VIDEO][1], VIDEO)]  # due now: sent


def test_a_waking_ref_starts_the_steps_waiting_for_it_at_once(rt: Runtime) -> None:
    alarm = _burglary(rt)
    waiting = NotYetError("waiting for the Alta video links", retry_after_s=60, wake_on_refs=True)
    perform(rt, alarm.steps[TRACKTIK], _raise(waiting))
    _due_now(rt, alarm.steps[CALL])

    # Any step of the alarm that records a waking ref (here the call's handler, for brevity).
    perform(rt, alarm.steps[CALL], lambda job: Outcome(refs={alta_refs.VIDEO_LINKS: ["https://v/1"]}))

    assert _row(rt, alarm.steps[TRACKTIK]).state == ActionState.QUEUED
    assert [d.id for d in _sent(rt)] == [alarm.steps[TRACKTIK]]


# -- retried: an attempt spent --------------------------------------------------------------------------


def test_an_unavailable_upstream_is_retried_after_its_retry_after(rt: Runtime) -> None:
    step = _burglary(rt).steps[TRACKTIK]
    before = utcnow()

    state = perform(rt, step, _raise(UpstreamUnavailableError("tracktik", "HTTP 503", retry_after_s=120)))

    after = utcnow()
    row = _row(rt, step)
    assert state == ActionState.PENDING == row.state
    assert (row.attempts, row.last_error, row.outcome_unknown) == (1, "tracktik: HTTP 503", False)
    assert _between(row.due_at, before, after, 120, 120)  # Retry-After honoured, not the backoff
    assert row.lease_token is None and row.waiting_on is None
    assert _timeline(rt, step) == [
        ("action.retry_scheduled", f"{TRACKTIK} will retry in 120.0s: tracktik: HTTP 503"),
        # Longer than the watchdog lets a step be late (WATCHDOG_GRACE_S, 60 s): a person is told now.
        ("alarm.needs_person", f"{TRACKTIK} waits 120s: tracktik: HTTP 503"),
    ]
    assert _sent(rt) == []  # the dispatcher sends it when it is due


def test_a_short_retry_after_waits_without_raising_the_alarm(rt: Runtime) -> None:
    alarm = _burglary(rt)
    assert rt.settings.watchdog_grace_s == 60

    state = perform(
        rt, alarm.steps[TRACKTIK], _raise(UpstreamUnavailableError("tracktik", "429", retry_after_s=60))
    )

    assert state == ActionState.PENDING
    assert not _alarm(rt, alarm.alarm_id).needs_person
    assert [kind for kind, _ in _timeline(rt, alarm.steps[TRACKTIK])] == ["action.retry_scheduled"]


def test_a_retry_after_longer_than_the_watchdog_grace_raises_the_alarm_at_once(rt: Runtime) -> None:
    """A 429 telling the guard's dispatch to come back in an hour: the alarm is a person's now, not
    after the watchdog's failing rule (WATCHDOG_FAILING_S) notices the step."""
    alarm = _burglary(rt)

    perform(
        rt, alarm.steps[TRACKTIK], _raise(UpstreamUnavailableError("tracktik", "429", retry_after_s=3600))
    )

    row = _alarm(rt, alarm.alarm_id)
    assert row.needs_person and row.needs_person_reason == f"{TRACKTIK} waits 3600s: tracktik: 429"
    assert _row(rt, alarm.steps[TRACKTIK]).state == ActionState.PENDING  # and it still retries then


def test_an_unavailable_upstream_without_retry_after_backs_off(rt: Runtime) -> None:
    step = _burglary(rt).steps[TRACKTIK]
    before = utcnow()

    state = perform(rt, step, _raise(UpstreamUnavailableError("tracktik", "connection refused")))

    assert state == ActionState.PENDING
    assert _first_backoff(rt, step, before, utcnow())
    assert _row(rt, step).attempts == 1 and not _row(rt, step).outcome_unknown
    [(kind, message)] = _timeline(rt, step)
    assert kind == "action.retry_scheduled"
    assert re.fullmatch(rf"{TRACKTIK} will retry in [12]\.\ds: tracktik: connection refused", message)


def test_a_lost_answer_is_retried_as_outcome_unknown(rt: Runtime) -> None:
    step = _burglary(rt).steps[TRACKTIK]
    before = utcnow()

    state = perform(
        rt, step, _raise(OutcomeUnknownError("tracktik", "read timeout after the request was sent"))
    )

    row = _row(rt, step)
    assert state == ActionState.PENDING == row.state
    assert row.outcome_unknown  # the retry looks for what the lost attempt may have created
    assert row.attempts == 1
    assert row.last_error == "tracktik: read timeout after the request was sent"
    assert _first_backoff(rt, step, before, utcnow())
    assert _timeline(rt, step)[0][0] == "action.retry_scheduled"


def test_a_step_cut_off_by_its_time_limit_is_retried_as_outcome_unknown_and_re_raised(rt: Runtime) -> None:
    step = _burglary(rt).steps[TRACKTIK]

    with pytest.raises(SoftTimeLimitExceeded):
        perform(rt, step, _raise(SoftTimeLimitExceeded()))

    row = _row(rt, step)
    assert (row.state, row.attempts, row.outcome_unknown) == (ActionState.PENDING, 1, True)
    assert row.last_error == "task time limit reached"


def test_an_error_of_ours_is_recorded_retried_and_re_raised(rt: Runtime) -> None:
    step = _burglary(rt).steps[TRACKTIK]
    before = utcnow()

    with pytest.raises(KeyError):
        perform(rt, step, _raise(KeyError("missing")))

    row = _row(rt, step)
    assert (row.state, row.attempts, row.outcome_unknown) == (ActionState.PENDING, 1, False)
    assert row.last_error == "internal error: KeyError: 'missing'"  # the alarm is never silently dropped
    assert _first_backoff(rt, step, before, utcnow())
    [(kind, message)] = _timeline(rt, step)
    assert kind == "action.retry_scheduled" and message.endswith(": internal error: KeyError: 'missing'")


def test_the_last_attempt_unavailable_fails_the_step_and_calls_a_person(rt: Runtime) -> None:
    alarm = _burglary(rt)
    step = alarm.steps[TRACKTIK]
    with rt.sessions.begin() as session:
        action = session.get_one(Action, step)
        action.attempts = action.max_attempts - 1

    state = perform(rt, step, _raise(UpstreamUnavailableError("tracktik", "HTTP 503")))

    row = _row(rt, step)
    assert state == ActionState.FAILED == row.state
    assert row.last_error == "attempts exhausted: tracktik: HTTP 503"
    assert [d.id for d in _sent(rt)] == [alarm.steps[CALL]]  # the fallback call, now


# -- failed: a person must look -------------------------------------------------------------------------


def test_a_rejection_fails_the_step_and_a_failed_tracktik_create_calls_now(rt: Runtime) -> None:
    alarm = _burglary(rt)
    step = alarm.steps[TRACKTIK]
    before = utcnow()

    state = perform(rt, step, _raise(UpstreamRejectedError("tracktik", 422, "alarm type code unknown")))

    row = _row(rt, step)
    error = "tracktik: HTTP 422: alarm type code unknown"
    assert state == ActionState.FAILED == row.state
    assert (row.attempts, row.last_error) == (1, error)
    assert _timeline(rt, step) == [("action.failed", f"{TRACKTIK} failed: {error}")]
    flagged = _alarm(rt, alarm.alarm_id)
    assert flagged.state == AlarmState.NEEDS_PERSON
    assert f"{TRACKTIK} failed" in (flagged.needs_person_reason or "")
    call = _row(rt, alarm.steps[CALL])
    # The plan's call (60 s later, cancellable) is the fallback: now, and no cancel stops it.
    assert (call.state, call.cancellable) == (ActionState.QUEUED, False)
    assert before - timedelta(seconds=1) <= call.due_at <= utcnow()
    assert [(d.id, d.task_name) for d in _sent(rt)] == [(call.id, CALL)]


def test_a_step_that_cannot_be_built_fails_as_not_sent_not_as_an_http_status(rt: Runtime) -> None:
    alarm = _burglary(rt)
    step = alarm.steps[TRACKTIK]

    state = perform(rt, step, _raise(PreconditionError("tracktik", "site has no tracktik table")))

    row = _row(rt, step)
    assert state == ActionState.FAILED == row.state
    assert row.last_error == "tracktik: not sent: site has no tracktik table"  # never "HTTP 0"
    assert _timeline(rt, step) == [("action.failed", f"{TRACKTIK} failed: {row.last_error}")]
    assert [d.id for d in _sent(rt)] == [alarm.steps[CALL]]  # the fallback runs as for a rejection


def _dead_letters(kind: str) -> float:
    return REGISTRY.get_sample_value("alarm_bridge_dead_letters_total", {"kind": kind}) or 0.0


def test_a_create_whose_last_lease_ran_out_fails_unrun_is_a_dead_letter_and_calls_now(rt: Runtime) -> None:
    """The worker of a TrackTik create's last attempt died mid-call: the step is RUNNING with every
    attempt spent and its lease in the past. The next delivery's claim fails it without running the
    handler, counts a dead letter, raises the alarm to a person and places the phone fallback now."""
    alarm = _burglary(rt)
    step = alarm.steps[TRACKTIK]
    with rt.sessions.begin() as session:
        # The plan's own call is out of the picture: the fallback must plan a call of its own.
        session.execute(
            update(Action).where(Action.id == alarm.steps[CALL]).values(state=ActionState.CANCELLED)
        )
        action = session.get_one(Action, step)
        action.attempts = action.max_attempts
        action.state = ActionState.RUNNING
        action.lease_token = "the-dead-workers-lease"
        action.lease_until = utcnow() - timedelta(seconds=1)
    dead_before = _dead_letters(TRACKTIK)
    ran: list[Job] = []
    before = utcnow()

    def create(job: Job) -> Outcome:
        ran.append(job)
        return Outcome(external_id="must-not-run")

    state = perform(rt, step, create)

    assert state == "skipped" and ran == []
    row = _row(rt, step)
    assert (row.state, row.attempts, row.lease_until) == (ActionState.FAILED, row.max_attempts, None)
    assert row.last_error == "attempts exhausted (lease expired)"
    assert _dead_letters(TRACKTIK) == dead_before + 1
    flagged = _alarm(rt, alarm.alarm_id)
    assert flagged.state == AlarmState.NEEDS_PERSON
    assert f"{TRACKTIK} failed" in (flagged.needs_person_reason or "")
    with rt.sessions() as session:
        calls = session.execute(
            select(Action).where(
                Action.alarm_id == alarm.alarm_id, Action.kind == CALL, Action.id != alarm.steps[CALL]
            )
        ).scalars()
        fallback = [(c.id, c.state, c.params, c.due_at) for c in calls]
    assert len(fallback) == 1
    call_id, call_state, params, due_at = fallback[0]
    assert params == {"fallback": True, "account": "1001", "reason": f"{TRACKTIK} failed"}
    assert call_state == ActionState.QUEUED and before - timedelta(seconds=1) <= due_at <= utcnow()
    assert [(d.id, d.task_name) for d in _sent(rt)] == [(call_id, CALL)]  # published: it goes now
    assert ("fallback.call", f"{TRACKTIK} failed: calling 1001 by phone") in _timeline(
        rt, alarm_id=alarm.alarm_id
    )


# -- not yet: no attempt spent ----------------------------------------------------------------------------


def test_not_yet_waits_without_spending_an_attempt(rt: Runtime) -> None:
    step = _burglary(rt).steps[TRACKTIK]
    before = utcnow()

    state = perform(rt, step, _raise(NotYetError("waiting for the Alta video links", retry_after_s=30)))

    row = _row(rt, step)
    assert state == ActionState.PENDING == row.state
    assert row.attempts == 0
    assert row.waiting_on is None  # only its due time starts it again
    assert _between(row.due_at, before, utcnow(), 30, 30)
    assert row.last_error == "waiting for the Alta video links"
    assert _timeline(rt, step) == [("action.waiting", f"{TRACKTIK} waits: waiting for the Alta video links")]
    assert _sent(rt) == []


def test_not_yet_on_refs_waits_for_them_and_a_ref_recorded_meanwhile_is_not_missed(rt: Runtime) -> None:
    first, second = _burglary(rt, "1"), _burglary(rt, "2")
    waiting = NotYetError("waiting for the Alta video links", retry_after_s=60, wake_on_refs=True)

    perform(rt, first.steps[TRACKTIK], _raise(waiting))

    row = _row(rt, first.steps[TRACKTIK])
    assert (row.state, row.attempts, row.waiting_on) == (ActionState.PENDING, 0, WAITING_FOR_REFS)
    assert _sent(rt) == []

    def looks_then_waits(job: Job) -> Outcome:  # the links are recorded while this step looks
        with rt.sessions.begin() as session:
            session.get_one(Alarm, second.alarm_id).refs = {alta_refs.VIDEO_LINKS: ["https://v/2"]}
        raise waiting

    perform(rt, second.steps[TRACKTIK], looks_then_waits)

    assert _row(rt, second.steps[TRACKTIK]).state == ActionState.QUEUED
    assert [d.id for d in _sent(rt)] == [second.steps[TRACKTIK]]


def test_a_spent_budget_waits_without_an_attempt_and_puts_the_alarm_in_front_of_a_person(rt: Runtime) -> None:
    alarm = _burglary(rt)
    step = alarm.steps[CALL]
    _due_now(rt, step)
    before = utcnow()

    state = perform(rt, step, _raise(BudgetExhaustedError("100 calls an hour spent", retry_after_s=600)))

    row = _row(rt, step)
    assert state == ActionState.PENDING == row.state
    assert row.attempts == 0
    assert _between(row.due_at, before, utcnow(), 600, 600)
    flagged = _alarm(rt, alarm.alarm_id)
    reason = f"{CALL} waits 600s: 100 calls an hour spent"
    assert flagged.state == AlarmState.NEEDS_PERSON and flagged.needs_person_reason == reason
    assert ("alarm.needs_person", reason) in _timeline(rt, alarm_id=alarm.alarm_id)
    assert _timeline(rt, step) == [
        ("action.waiting", f"{CALL} waits: 100 calls an hour spent"),
        ("alarm.needs_person", reason),
    ]


# -- the lease ------------------------------------------------------------------------------------------


def test_a_second_delivery_while_the_lease_is_live_does_nothing(rt: Runtime) -> None:
    step = _burglary(rt).steps[TRACKTIK]
    ran: list[str] = []

    def second(job: Job) -> Outcome:
        ran.append("second")
        return Outcome(external_id="second")

    def first(job: Job) -> Outcome:
        ran.append("first")
        assert perform(rt, step, second) == "skipped"  # the same message delivered again meanwhile
        assert _row(rt, step).state == ActionState.RUNNING
        return Outcome(external_id="first")

    assert perform(rt, step, first) == ActionState.SUCCEEDED

    row = _row(rt, step)
    assert ran == ["first"]
    assert (row.external_id, row.attempts) == ("first", 1)
    assert [kind for kind, _ in _timeline(rt, step)] == ["action.succeeded"]


def test_a_finished_step_delivered_again_is_not_run_again(rt: Runtime) -> None:
    step = _burglary(rt).steps[TRACKTIK]
    perform(rt, step, lambda job: Outcome(external_id="77"))

    def again(job: Job) -> Any:
        raise AssertionError("a finished step ran again")

    assert perform(rt, step, again) == "skipped"
    assert _row(rt, step).attempts == 1


@pytest.mark.parametrize("centre", ["CENTRE-1", None])
def test_a_site_without_its_own_phone_connection_falls_back_to_the_centres(
    rt: Runtime, centre: str | None
) -> None:
    """The phone fallback's default account comes from the settings through its vendor's declaration."""
    site = rt.sites.site_for_account("acme-panels", MONTREAL_ACCOUNT)
    assert site is not None and site.table(CallOnAlarmSite) is not None
    others = [other for other in rt.sites.sites if other.key != site.key]
    sites = Sites(rt.sites.sources, [site.without(CallOnAlarmSite), *others])
    rt = replace(
        rt, sites=sites, settings=rt.settings.with_vendor(CallOnAlarmSettings(fallback_account=centre))
    )
    alarm = _burglary(rt)
    with rt.sessions.begin() as session:  # the plan's own call is out of the picture
        session.execute(
            update(Action).where(Action.id == alarm.steps[CALL]).values(state=ActionState.CANCELLED)
        )

    perform(rt, alarm.steps[TRACKTIK], _raise(UpstreamRejectedError("tracktik", 422, "refused")))

    with rt.sessions() as session:
        calls = session.execute(select(Action).where(Action.alarm_id == alarm.alarm_id, Action.kind == CALL))
        params = [row.params for row in calls.scalars() if row.id != alarm.steps[CALL]]
    if centre is None:
        assert params == []
        assert any(kind == "fallback.none" for kind, _ in _timeline(rt, alarm_id=alarm.alarm_id))
    else:
        assert [(p["account"], p["fallback"]) for p in params] == [(centre, True)]


@pytest.mark.parametrize("centre", [None, "centre-0001"])
def test_a_holdups_phone_fallback_never_rings_the_premises(rt: Runtime, centre: str | None) -> None:
    """Montreal HQ's hold-up plan is a guard and the CAD, never a call to the premises (someone there
    may be under duress). When the guard's dispatch fails, the fallback calls only the monitoring
    centre's connection, if there is one, never the site's own; the alarm is a person's either way."""
    rt = replace(rt, settings=rt.settings.with_vendor(CallOnAlarmSettings(fallback_account=centre)))
    site = rt.sites.site_for_account("acme-panels", MONTREAL_ACCOUNT)
    assert site is not None and site.table(CallOnAlarmSite) is not None  # the premises could be called
    receipt = _signal(rt, "HA", "1")
    assert receipt.alarm_id is not None
    with rt.sessions() as session:
        steps = {row.kind: row.id for row in session.execute(
            select(Action).where(Action.alarm_id == receipt.alarm_id)
        ).scalars()}  # fmt: skip
    assert CALL not in steps

    perform(rt, steps[TRACKTIK], _raise(UpstreamRejectedError("tracktik", 422, "refused")))

    with rt.sessions() as session:
        calls = session.execute(
            select(Action).where(Action.alarm_id == receipt.alarm_id, Action.kind == CALL)
        )
        accounts = [row.params.get("account") for row in calls.scalars()]
    assert accounts == ([] if centre is None else [centre])
    assert _alarm(rt, receipt.alarm_id).state == AlarmState.NEEDS_PERSON
    assert any(kind == "fallback.not_the_premises" for kind, _ in _timeline(rt, alarm_id=receipt.alarm_id))


def _call_answered(status: str) -> Callable[[Job], Outcome]:
    return lambda job: Outcome(external_id="coa-1", result={"status": status})


def _only_the_call_left(rt: Runtime, alarm: Alarmed) -> None:
    """The guard's dispatch is out of the picture (stopped), so the call is the plan's last responder."""
    with rt.sessions.begin() as session:
        session.execute(
            update(Action).where(Action.id == alarm.steps[TRACKTIK]).values(state=ActionState.CANCELLED)
        )
    _due_now(rt, alarm.steps[CALL])


@pytest.mark.parametrize("status", ["ignored", "technical_only"])
def test_a_call_that_reaches_nobody_as_the_last_responder_puts_the_alarm_before_a_person(
    rt: Runtime, status: str
) -> None:
    """CallOnAlarm answered the site's own call with no call placed (its rules for the code): the
    step succeeds, and with no other step sending anyone the alarm used to stay open, silent."""
    alarm = _burglary(rt)
    _only_the_call_left(rt, alarm)

    assert perform(rt, alarm.steps[CALL], _call_answered(status)) == ActionState.SUCCEEDED

    raised = _alarm(rt, alarm.alarm_id)
    assert raised.state == AlarmState.NEEDS_PERSON
    assert f"status {status}" in (raised.needs_person_reason or "")
    assert ("alarm.needs_person", raised.needs_person_reason) in _timeline(rt, alarm_id=alarm.alarm_id)


def test_a_troubles_call_answered_technical_only_is_its_plans_intent(rt: Runtime) -> None:
    """An AC power loss's call (plan "trouble") answered technical_only: a technician is emailed,
    which is what the account's rules mean for a trouble; no person is raised for each of a storm."""
    receipt = _signal(rt, "AT", "1")
    assert receipt.alarm_id is not None
    with rt.sessions() as session:
        [call] = session.execute(select(Action.id).where(Action.alarm_id == receipt.alarm_id)).scalars()
    _due_now(rt, call)

    assert perform(rt, call, _call_answered("technical_only")) == ActionState.SUCCEEDED
    assert _alarm(rt, receipt.alarm_id).state == AlarmState.OPEN


def test_a_call_that_reaches_nobody_beside_a_dispatched_guard_needs_nobody(rt: Runtime) -> None:
    alarm = _burglary(rt)
    assert perform(rt, alarm.steps[TRACKTIK], lambda job: Outcome(external_id="tt-1")) == "succeeded"
    _due_now(rt, alarm.steps[CALL])

    assert perform(rt, alarm.steps[CALL], _call_answered("ignored")) == ActionState.SUCCEEDED
    assert _alarm(rt, alarm.alarm_id).state == AlarmState.OPEN


def test_a_call_that_reaches_nobody_while_the_guard_is_still_on_its_way_needs_nobody_yet(rt: Runtime) -> None:
    """The guard's dispatch is still to run: it sends someone, or its failure raises the alarm."""
    alarm = _burglary(rt)
    _due_now(rt, alarm.steps[CALL])

    assert perform(rt, alarm.steps[CALL], _call_answered("ignored")) == ActionState.SUCCEEDED
    assert _alarm(rt, alarm.alarm_id).state == AlarmState.OPEN


# --- a step in flight when the alarm ends -----------------------------------------------------------


def _said_to_check_by_hand(rt: Runtime, alarm_id: int) -> None:
    alarm = _alarm(rt, alarm_id)
    assert "tracktik.create_alarm may have reached tracktik" in (alarm.needs_person_reason or "")
    assert any(
        kind == "upstream.check_by_hand" and "stand it down there" in message
        for kind, message in _timeline(rt, alarm_id=alarm_id)
    )


def test_a_create_whose_answer_is_lost_while_the_alarm_ends_is_put_before_a_person(rt: Runtime) -> None:
    """The POST reached TrackTik (a guard may be on the way) while an operator ended the alarm; its
    answer was lost. The retry is not run (the alarm ended), and a person is told to check TrackTik."""
    alarmed = _burglary(rt)
    step = alarmed.steps[TRACKTIK]

    def create_lost_answer(job: Job) -> Outcome:
        with rt.sessions.begin() as session:
            operations.end(session, alarmed.alarm_id, "false_alarm", now=utcnow(), max_attempts=5)
        raise OutcomeUnknownError("tracktik", "POST /rest/v1/alarms: no answer within the timeout")

    assert perform(rt, step, create_lost_answer) == ActionState.PENDING
    _due_now(rt, step)
    ran: list[Job] = []
    assert perform(rt, step, lambda job: ran.append(job) or Outcome()) == "skipped"

    assert ran == [] and _row(rt, step).state == ActionState.CANCELLED
    _said_to_check_by_hand(rt, alarmed.alarm_id)


def test_a_create_whose_worker_died_while_the_alarm_ended_is_put_before_a_person(rt: Runtime) -> None:
    alarmed = _burglary(rt)
    step = alarmed.steps[TRACKTIK]

    def create_then_die(job: Job) -> Outcome:
        with rt.sessions.begin() as session:
            operations.end(session, alarmed.alarm_id, "false_alarm", now=utcnow(), max_attempts=5)
        raise SystemExit  # the worker process killed after the POST left

    with pytest.raises(SystemExit):
        perform(rt, step, create_then_die)
    assert _row(rt, step).state == ActionState.RUNNING
    with rt.sessions.begin() as session:  # its lease runs out
        session.execute(
            update(Action).where(Action.id == step).values(lease_until=utcnow() - timedelta(seconds=1))
        )
    assert perform(rt, step, lambda job: Outcome()) == "skipped"

    assert _row(rt, step).state == ActionState.CANCELLED
    _said_to_check_by_hand(rt, alarmed.alarm_id)


def test_a_step_that_never_reached_its_upstream_is_stopped_quietly_when_the_alarm_ends(rt: Runtime) -> None:
    alarmed = _burglary(rt)
    step = alarmed.steps[TRACKTIK]
    assert perform(rt, step, _raise(UpstreamUnavailableError("tracktik", "503"))) == ActionState.PENDING
    with rt.sessions.begin() as session:
        operations.end(session, alarmed.alarm_id, "false_alarm", now=utcnow(), max_attempts=5)
    _due_now(rt, step)
    assert perform(rt, step, lambda job: Outcome()) == "skipped"

    assert _row(rt, step).state == ActionState.CANCELLED
    assert "may have reached" not in (_alarm(rt, alarmed.alarm_id).needs_person_reason or "")


@pytest.mark.parametrize("outcome", ["verified", "dispatched"])
def test_a_guard_dispatch_failing_after_an_end_as_real_is_put_before_a_person(
    rt: Runtime, outcome: str
) -> None:
    """The TrackTik create was in flight when the operator ended the alarm as real, then TrackTik
    answered 503. Its retry is not run (the alarm ended), but no guard was sent: the operator who said
    "real" may count on one, so a person is told, as a 4xx of the same create would."""
    alarmed = _burglary(rt)
    step = alarmed.steps[TRACKTIK]

    def ended_then_refused(job: Job) -> Outcome:
        with rt.sessions.begin() as session:
            operations.end(session, alarmed.alarm_id, outcome, now=utcnow(), max_attempts=5)
        raise UpstreamUnavailableError("tracktik", "HTTP 503")

    assert perform(rt, step, ended_then_refused) == ActionState.PENDING
    told = _alarm(rt, alarmed.alarm_id)  # at once, not when the retry falls due (a backoff away)
    assert told.person_needed_at is not None and "sent nobody" in (told.needs_person_reason or "")
    _due_now(rt, step)
    assert perform(rt, step, lambda job: pytest.fail("the retry of an ended alarm's step ran")) == "skipped"

    assert _row(rt, step).state == ActionState.CANCELLED
    alarm = _alarm(rt, alarmed.alarm_id)
    assert alarm.needs_person_reason == told.needs_person_reason  # said once
    assert alarm.state == AlarmState.ENDED and alarm.outcome == outcome
    assert alarm.person_needed_at is not None
    assert "tracktik.create_alarm was under way when the alarm was ended as" in (
        alarm.needs_person_reason or ""
    )
    assert "HTTP 503" in (alarm.needs_person_reason or "")


def test_a_guard_dispatch_failing_after_an_end_as_false_needs_nobody(rt: Runtime) -> None:
    alarmed = _burglary(rt)
    step = alarmed.steps[TRACKTIK]

    def ended_then_refused(job: Job) -> Outcome:
        with rt.sessions.begin() as session:
            operations.end(session, alarmed.alarm_id, "false_alarm", now=utcnow(), max_attempts=5)
        raise UpstreamUnavailableError("tracktik", "HTTP 503")

    assert perform(rt, step, ended_then_refused) == ActionState.PENDING
    _due_now(rt, step)
    assert perform(rt, step, lambda job: Outcome()) == "skipped"

    assert _row(rt, step).state == ActionState.CANCELLED
    assert _alarm(rt, alarmed.alarm_id).person_needed_at is None


# --- a step whose lease ran out while it still ran ----------------------------------------------------


def _overtaken(rt: Runtime, step: int, second_id: str) -> Callable[[Job], Outcome]:
    """A first delivery whose lease runs out mid-call; a second delivery takes the step over and
    succeeds (creating ``second_id`` upstream) before the first one's answer arrives."""

    def first(job: Job) -> Outcome:
        with rt.sessions.begin() as session:
            session.execute(
                update(Action).where(Action.id == step).values(lease_until=utcnow() - timedelta(seconds=1))
            )
        assert perform(rt, step, lambda job: Outcome(external_id=second_id)) == ActionState.SUCCEEDED
        return Outcome(external_id="first-id", refs={"tracktik_alarm_id": "first-id"})

    return first


def test_a_second_success_with_another_upstream_id_is_put_before_a_person(rt: Runtime) -> None:
    """Both deliveries created something upstream: the later one may be a duplicate nothing stands down."""
    alarmed = _burglary(rt)
    step = alarmed.steps[TRACKTIK]

    assert perform(rt, step, _overtaken(rt, step, "second-id")) == ActionState.SUCCEEDED

    assert _row(rt, step).external_id == "second-id"  # the first recorded success stands
    reason = _alarm(rt, alarmed.alarm_id).needs_person_reason or ""
    assert "tracktik.create_alarm succeeded twice (second-id and first-id)" in reason
    assert any(kind == "upstream.check_by_hand" for kind, _ in _timeline(rt, alarm_id=alarmed.alarm_id))


def test_a_second_success_with_the_same_upstream_id_needs_nobody(rt: Runtime) -> None:
    """TrackTik's retry finds the first create by its reference note: one object, nothing to check."""
    alarmed = _burglary(rt)
    step = alarmed.steps[TRACKTIK]

    assert perform(rt, step, _overtaken(rt, step, "first-id")) == ActionState.SUCCEEDED

    assert "succeeded twice" not in (_alarm(rt, alarmed.alarm_id).needs_person_reason or "")


def test_a_dispatch_failing_after_a_cancel_at_the_panel_calls_nobody(rt: Runtime) -> None:
    """The user cancels at the panel while the TrackTik create is in flight (the alarm waits for a
    person and its held call is stopped), then the create fails for good. A failed dispatch normally
    falls back to a phone call; here that call would ring the people the cancel spared."""
    alarm = _burglary(rt)

    def cancelled_meanwhile_then_refused(job: Job) -> Outcome:
        _signal(rt, "BC", "3")
        raise UpstreamRejectedError("tracktik", 422, "alarm type code unknown")

    assert perform(rt, alarm.steps[TRACKTIK], cancelled_meanwhile_then_refused) == "failed"

    with rt.sessions() as session:
        calls = session.execute(select(Action).where(Action.alarm_id == alarm.alarm_id, Action.kind == CALL))
        found = [(row.id, row.state) for row in calls.scalars()]
    assert found == [(alarm.steps[CALL], ActionState.CANCELLED)]  # the plan's call, stopped; no new one
    assert [d for d in _sent(rt) if d.task_name == CALL] == []
    row = _alarm(rt, alarm.alarm_id)
    assert row.panel_cancelled_at is not None and row.needs_person_reason
    assert any(
        kind == "fallback.none" and "cancelled at the panel" in message
        for kind, message in _timeline(rt, alarm_id=alarm.alarm_id)
    )


def test_a_call_placed_again_while_the_alarm_is_ended_gets_its_restore(rt: Runtime) -> None:
    """The alarm's first alert (A1) was cancelled by another alarm's restore, so its calls are placed
    again (A2). While A2's trigger is in flight the operator ends the alarm as false: End's restore
    finds A1 already final and sends nothing. When A2's trigger answers, A2 must be restored: a
    restore that ran before A2 existed does not cover it, and CallOnAlarm would ring the contacts."""
    alarm = _burglary(rt)
    _due_now(rt, alarm.steps[CALL])
    first_alert = {callonalarm_refs.ALERT_ID: "A1", callonalarm_refs.ACCOUNT: "1001"}
    perform(rt, alarm.steps[CALL], lambda job: Outcome(external_id="A1", refs=first_alert))
    with rt.sessions.begin() as session:
        row = session.get_one(Alarm, alarm.alarm_id)
        row.refs = {**row.refs, callonalarm_refs.STATUS: "cancelled_during_calls"}
        again = plan_step(
            session, row, CALL, now=utcnow(), max_attempts=5, params={"account": "1001", "repeat_of": "A1"}
        )
    assert again is not None
    skipped: list[str] = []

    def ended_while_in_flight(job: Job) -> Outcome:
        with rt.sessions.begin() as session:
            due = operations.end(session, alarm.alarm_id, "false_alarm", now=utcnow(), max_attempts=5)
        for step in due:
            if step.task_name == callonalarm_steps.SEND_RESTORE:
                skipped.append(perform(rt, step.id, callonalarm_tasks._send_restore))
        refs = {callonalarm_refs.ALERT_ID: "A2", callonalarm_refs.STATUS: "call_delayed"}
        return Outcome(external_id="A2", refs=refs)

    assert perform(rt, again.id, ended_while_in_flight) == ActionState.SUCCEEDED
    assert skipped == [ActionState.SUCCEEDED]  # End's restore: A1 already final, nothing sent

    with rt.sessions() as session:
        restores = session.execute(
            select(Action).where(
                Action.alarm_id == alarm.alarm_id, Action.kind == callonalarm_steps.SEND_RESTORE
            )
        ).scalars()
        waiting = [r.id for r in restores if r.state in (ActionState.PENDING, ActionState.QUEUED)]
    assert len(waiting) == 1, "no restore planned for the alert created after the End"
    assert waiting[0] in {d.id for d in _sent(rt)}


def test_a_claim_that_cannot_reach_the_ledger_hands_the_message_back(
    rt: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A PostgreSQL restart or failover under the claim: acknowledging the message with nothing
    recorded left the step to the lost-message re-send a lease (90 s) later; it goes back instead."""
    from celery.exceptions import Reject
    from sqlalchemy.exc import OperationalError

    import workers.perform as performing

    step = _burglary(rt).steps[TRACKTIK]

    def ledger_down(*args: Any, **kwargs: Any) -> Any:
        raise OperationalError(
            "UPDATE actions ...", {}, Exception("server closed the connection unexpectedly")
        )

    monkeypatch.setattr(performing, "CLAIM_UNAVAILABLE_PAUSE_S", 0.0)
    monkeypatch.setattr(performing.actions, "claim_with_alarm", ledger_down)
    with pytest.raises(Reject) as rejected:
        perform(rt, step, lambda job: pytest.fail("a step ran without its claim"))

    assert rejected.value.requeue is True
    monkeypatch.undo()
    assert (_row(rt, step).state, _row(rt, step).attempts) == (ActionState.QUEUED, 0)  # untouched
    assert perform(rt, step, lambda job: Outcome(external_id="77")) == ActionState.SUCCEEDED  # redelivered


def test_a_claim_error_that_is_a_bug_is_not_handed_back(rt: Runtime, monkeypatch: pytest.MonkeyPatch) -> None:
    """Retrying a statement that is wrong would only loop: it fails the task as before."""
    from sqlalchemy.exc import ProgrammingError

    import workers.perform as performing

    def wrong(*args: Any, **kwargs: Any) -> Any:
        raise ProgrammingError("SELECT nonsense", {}, Exception("syntax error"))

    monkeypatch.setattr(performing.actions, "claim_with_alarm", wrong)
    with pytest.raises(ProgrammingError):
        perform(rt, _burglary(rt).steps[TRACKTIK], lambda job: pytest.fail("ran"))
