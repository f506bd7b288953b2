"""perform(): the one way a task runs an action — claim the lease, run the handler, record the outcome.

Task bodies stay thin and never catch upstream errors; the classification lives here:
unavailable → retry later (honouring Retry-After), outcome unknown → retry after reconciling,
rejected → failed and the alarm needs a person. Anything else is a bug: it is recorded on the action
as a retry (so the alarm is never silently dropped) and re-raised for Celery to log.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog

from app.domain import actions
from app.domain.actions import ClaimedAction
from app.ledger.models import utcnow
from workers.clients.errors import OutcomeUnknownError, UpstreamRejectedError, UpstreamUnavailableError
from workers.runtime import Runtime, runtime

log = structlog.get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Outcome:
    """What a handler reports on success: the upstream's id and anything worth keeping."""

    external_id: str | None = None
    result: dict[str, Any] = field(default_factory=dict)
    message: str | None = None


Handler = Callable[[ClaimedAction, Runtime], Outcome]


def perform(action_id: int, handler: Handler) -> str:
    """Run ``handler`` for one action at most once at a time, and record what happened.

    Returns the action's resulting state name (for logs and tests); outcomes live in the ledger.
    """
    rt = runtime()
    lease = timedelta(seconds=rt.settings.action_lease_s)
    with rt.sessions.begin() as session:
        claimed = actions.claim(session, action_id, now=utcnow(), lease=lease)
    if claimed is None:
        log.info("action.skipped", action_id=action_id)
        return "skipped"
    log.info("action.claimed", action_id=action_id, kind=claimed.kind, attempt=claimed.attempts)
    try:
        outcome = handler(claimed, rt)
    except UpstreamUnavailableError as exc:
        return _retry(rt, claimed, str(exc), delay_s=exc.retry_after_s)
    except OutcomeUnknownError as exc:
        return _retry(rt, claimed, str(exc), outcome_unknown=True)
    except UpstreamRejectedError as exc:
        with rt.sessions.begin() as session:
            actions.fail(session, claimed, now=utcnow(), error=str(exc))
        log.warning("action.failed", action_id=action_id, error=str(exc))
        return "failed"
    except Exception as exc:
        _retry(rt, claimed, f"internal error: {type(exc).__name__}: {exc}")
        raise
    with rt.sessions.begin() as session:
        actions.succeed(
            session,
            claimed,
            now=utcnow(),
            external_id=outcome.external_id,
            result=outcome.result,
            message=outcome.message,
        )
    log.info("action.succeeded", action_id=action_id, external_id=outcome.external_id)
    return "succeeded"


def _retry(
    rt: Runtime,
    claimed: ClaimedAction,
    error: str,
    *,
    delay_s: float | None = None,
    outcome_unknown: bool = False,
) -> str:
    with rt.sessions.begin() as session:
        state = actions.retry_later(
            session, claimed, now=utcnow(), error=error, delay_s=delay_s, outcome_unknown=outcome_unknown
        )
    log.warning("action.retry", action_id=claimed.id, state=state.value, error=error)
    return state.value
