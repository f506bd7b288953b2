"""The periodic dispatcher (sent by Celery beat): announce due actions and re-drive lost ones.

Delayed steps wait in the ledger, not in the broker (Redis redelivers long ETAs past its visibility
timeout), so this tick is what turns "call in 60 s unless restored" into a message at the right time.
It also re-sends actions whose lease expired: the message was lost or the worker was killed.
"""

from __future__ import annotations

from datetime import timedelta

import structlog
from celery import shared_task

from app.domain import actions, task_names
from app.ledger.models import utcnow
from workers.runtime import runtime

log = structlog.get_logger(__name__)


@shared_task(name=task_names.DISPATCHER_SEND_DUE_ACTIONS, ignore_result=True)
def send_due_actions() -> int:
    """Send every action that has come due or whose lease expired; returns how many were sent."""
    rt = runtime()
    with rt.sessions.begin() as session:
        due = actions.collect_for_dispatch(
            session,
            now=utcnow(),
            resend_after=timedelta(seconds=rt.settings.action_lease_s),
            limit=rt.settings.dispatch_batch_size,
        )
    if due:
        failed = rt.outbox.publish(due)
        log.info("dispatcher.sent", sent=len(due) - len(failed), unsent=len(failed))
    return len(due)
