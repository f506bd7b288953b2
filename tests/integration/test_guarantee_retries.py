"""DESIGN.md "Act" and "No silent drop", through perform() on both ledgers (the real Redis broker under a
private key prefix, the example sites file):

- retries back off with jitter: exponentially per attempt, spread between steps;
- an idempotency key per upstream call: every attempt of a step (a retry after a lost answer
  included) carries the same key, the one on the action's row, so the upstream (or our
  find-before-create) can tell a retry from a second dispatch;
- a permanent failure is visible in metrics (the dead-letter counter) and in the dead-letter view.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from prometheus_client import REGISTRY
from sqlalchemy import select, update

from app.domain.actions import BACKOFF_BASE_S
from app.ledger import queries
from app.ledger.models import Action, ActionState, TimelineEntry, utcnow
from tests.integration.test_perform_outcomes import RULES, TRACKTIK
from tests.integration.test_perform_outcomes import _tracktik_step as tracktik_step
from workers.clients.errors import OutcomeUnknownError, UpstreamRejectedError, UpstreamUnavailableError
from workers.perform import Job, Outcome, perform
from workers.runtime import Runtime

pytestmark = pytest.mark.integration


def due_now(rt: Runtime, action_id: int) -> None:
    """The dispatcher's tick at the retry's due time, without waiting for it."""
    with rt.sessions.begin() as session:
        session.execute(update(Action).where(Action.id == action_id).values(due_at=utcnow()))


def raising(exc: BaseException, seen: list[Job] | None = None) -> Callable[[Job], Outcome]:
    def handler(job: Job) -> Outcome:
        if seen is not None:
            seen.append(job)
        raise exc

    return handler


def retry_wait_s(rt: Runtime, action_id: int) -> float:
    """The wait the last retry scheduled: the row's due time minus the retry's timeline time."""
    with rt.sessions() as session:
        row = session.get_one(Action, action_id)
        at = session.execute(
            select(TimelineEntry.at)
            .where(TimelineEntry.action_id == action_id, TimelineEntry.kind == "action.retry_scheduled")
            .order_by(TimelineEntry.id.desc())
            .limit(1)
        ).scalar_one()
        assert row.state == ActionState.PENDING
        return (row.due_at - at).total_seconds()


def test_retries_back_off_exponentially_per_attempt(rt: Any) -> None:
    step = tracktik_step(rt, "1")
    unavailable = UpstreamUnavailableError("tracktik", "connection refused")  # no Retry-After
    waits = []
    for _ in range(5):
        assert perform(rt, step, raising(unavailable)) == ActionState.PENDING
        waits.append(retry_wait_s(rt, step))
        due_now(rt, step)

    for attempt, wait in enumerate(waits, start=1):
        ceiling = BACKOFF_BASE_S * 2 ** (attempt - 1)  # 2, 4, 8, 16, 32 s
        assert ceiling / 2 <= wait <= ceiling, (attempt, waits)
    assert waits[-1] >= 8 * waits[0]


def test_retries_of_different_steps_are_spread_by_jitter(rt: Any) -> None:
    """Many alarms failing at once (a vendor outage) must not come back at the same instant."""
    unavailable = UpstreamUnavailableError("tracktik", "HTTP 503")
    waits = []
    for zone in range(10):
        step = tracktik_step(rt, f"z{zone}")
        perform(rt, step, raising(unavailable))
        waits.append(retry_wait_s(rt, step))

    assert all(BACKOFF_BASE_S / 2 <= wait <= BACKOFF_BASE_S for wait in waits), waits
    assert len({round(wait, 3) for wait in waits}) >= 5, waits


def test_every_attempt_of_a_step_carries_the_key_on_its_row(rt: Any) -> None:
    step = tracktik_step(rt, "2")
    seen: list[Job] = []

    perform(rt, step, raising(OutcomeUnknownError("tracktik", "read timeout after send"), seen))
    due_now(rt, step)
    perform(rt, step, raising(UpstreamUnavailableError("tracktik", "HTTP 503"), seen))
    due_now(rt, step)

    def succeeds(job: Job) -> Outcome:
        seen.append(job)
        return Outcome(external_id="dt-1")

    assert perform(rt, step, succeeds) == ActionState.SUCCEEDED

    with rt.sessions() as session:
        key = session.get_one(Action, step).idempotency_key
    assert [job.action.attempts for job in seen] == [1, 2, 3]
    assert seen[1].action.outcome_unknown  # the retry after a lost answer knows to look first
    assert [job.action.idempotency_key for job in seen] == [key, key, key]


def dead_letters(kind: str) -> float:
    return REGISTRY.get_sample_value("alarm_bridge_dead_letters_total", {"kind": kind}) or 0.0


def test_a_rejected_step_is_a_dead_letter_in_metrics_and_in_the_dead_letter_view(rt: Any) -> None:
    step = tracktik_step(rt, "3")
    before = dead_letters(TRACKTIK)

    state = perform(rt, step, raising(UpstreamRejectedError("tracktik", 422, "alarm type code unknown")))

    assert state == ActionState.FAILED
    assert dead_letters(TRACKTIK) == before + 1
    with rt.sessions() as session:
        view = queries.list_actions(session, states=(ActionState.FAILED.value,))
    assert [(row["id"], row["kind"]) for row in view] == [(step, TRACKTIK)]


def test_a_step_whose_attempts_run_out_is_a_dead_letter_in_metrics(rt: Any) -> None:
    step = tracktik_step(rt, "5")
    before = dead_letters(TRACKTIK)
    for _ in range(RULES.max_attempts):
        perform(rt, step, raising(UpstreamUnavailableError("tracktik", "HTTP 503", retry_after_s=1)))
        due_now(rt, step)

    with rt.sessions() as session:
        assert session.get_one(Action, step).state == ActionState.FAILED
    assert dead_letters(TRACKTIK) == before + 1
