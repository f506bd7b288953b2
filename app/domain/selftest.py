"""Plan a pipeline self-test: an action with no alarm and no upstream, run by a real worker.

It travels exactly the road an alarm's actions travel (ledger row, after-commit message, claim,
outcome), so a completed self-test proves the web, the broker, a worker and the ledger all work.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.orm import Session

from app.domain import task_names
from app.domain.actions import DueAction, due_action, new_action
from app.ledger.models import TimelineEntry
from config.celery import DEFAULT_QUEUE, LIFE_SAFETY_QUEUE, QUEUES

SELFTEST_MAX_ATTEMPTS = 3


def plan_selftest(session: Session, *, now: datetime, queue: str = DEFAULT_QUEUE) -> DueAction:
    """Add a due self-test action on ``queue`` and return what the outbox must send after commit."""
    if queue not in QUEUES:
        raise ValueError(f"unknown queue {queue!r}; expected one of {', '.join(QUEUES)}")
    action = new_action(
        kind=task_names.SYSTEM_SELFTEST,
        target="system",
        queue=queue,
        due_at=now,
        max_attempts=SELFTEST_MAX_ATTEMPTS,
        params={"queue": queue},
        enqueued=True,
    )
    session.add(action)
    session.flush()
    session.add(
        TimelineEntry(
            action_id=action.id,
            at=now,
            kind="selftest.requested",
            message=f"self-test sent on {queue}",
            data={},
        )
    )
    return due_action(action)


__all__ = ["LIFE_SAFETY_QUEUE", "plan_selftest"]
