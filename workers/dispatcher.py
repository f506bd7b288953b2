"""The periodic dispatcher (sent by Celery beat): announce due actions and re-drive lost ones.

Delayed steps wait in the ledger, not in the broker (Redis redelivers long ETAs past its visibility
timeout), so this tick is what turns "call in 60 s unless restored" into a message at the right time.
It also re-sends actions whose lease expired (the worker was killed), and queued actions whose
message the broker no longer holds (lost): it reads how many messages each queue holds first, so that
a backlog of messages still waiting in Redis is not sent a second time every lease period.
"""

from __future__ import annotations

from datetime import timedelta

import redis
import structlog
from celery import shared_task

from app.adapters import kombu_redis
from app.domain import actions, task_names
from app.ledger.models import utcnow
from config.celery import QUEUES
from config.settings import Settings
from workers.runtime import Runtime
from workers.step_task import StepTask

log = structlog.get_logger(__name__)


@shared_task(name=task_names.DISPATCHER_SEND_DUE_ACTIONS, base=StepTask, bind=True, ignore_result=True)
def send_due_actions(self: StepTask[[], int]) -> int:
    """Send every action that has come due, whose lease expired or whose message was lost; returns how
    many were sent."""
    rt = self.runtime
    waiting = waiting_messages(rt.settings, _broker(rt))
    with rt.sessions.begin() as session:
        due = actions.collect_for_dispatch(
            session,
            now=utcnow(),
            resend_after=timedelta(seconds=rt.settings.action_lease_s),
            limit=rt.settings.dispatch_batch_size,
            waiting=waiting,
        )
    if due:
        failed = rt.outbox.publish(due)
        log.info("dispatcher.sent", sent=len(due) - len(failed), unsent=len(failed))
    return len(due)


def waiting_messages(settings: Settings, client: redis.Redis | None) -> dict[str, int] | None:
    """Messages waiting in each queue (kombu keeps one Redis list per queue and priority, under the
    deployment's key prefix), or None when the broker cannot be read: the ledger then re-sends every
    queued action older than the lease, as it would for lost messages."""
    if client is None:
        return None
    try:
        return kombu_redis.waiting_messages(client, QUEUES, settings.broker_key_prefix)
    except redis.RedisError as exc:
        log.warning("dispatcher.broker_unreadable", error=type(exc).__name__)
        return None


def _broker(rt: Runtime) -> redis.Redis | None:
    try:
        return rt.cache  # the broker's Redis (REDIS_URL), as shared by this process's clients
    except RuntimeError:
        return None  # no REDIS_URL: nothing to read
