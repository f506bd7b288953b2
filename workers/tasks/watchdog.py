"""The watchdog task (sent by beat on the life-safety queue, beside the dispatcher tick).

It runs on the ``urgent`` worker, so a stalled ``worker`` pool is noticed; if the ``urgent`` worker,
beat or the broker are down, the check stops and so do the heartbeat pings, which the monitor at
WATCHDOG_HEARTBEAT_URL reports.
"""

from __future__ import annotations

import time
from datetime import timedelta

import structlog
from celery import shared_task

from app import telemetry
from app.domain import task_names, watchdog
from app.ledger.models import utcnow
from workers.clients.errors import UpstreamError
from workers.clients.heartbeat import HeartbeatClient
from workers.runtime import runtime

log = structlog.get_logger(__name__)


@shared_task(name=task_names.SYSTEM_WATCHDOG, ignore_result=True)
def check() -> int:
    """Raise alarms with overdue steps to a person, then ping the heartbeat; returns how many."""
    rt = runtime()
    limits = watchdog.Limits(
        grace=timedelta(seconds=rt.settings.watchdog_grace_s),
        failing=timedelta(seconds=rt.settings.watchdog_failing_s),
    )
    with rt.sessions.begin() as session:
        raised = watchdog.check(session, now=utcnow(), limits=limits)
    for finding in raised:
        telemetry.WATCHDOG_RAISED.labels(finding.reason).inc()
        log.warning(
            "watchdog.raised",
            alarm_id=finding.alarm_id,
            action_id=finding.action_id,
            reason=finding.reason,
            message=finding.message,
        )
    telemetry.WATCHDOG_LAST_RUN.set(time.time())
    heartbeat = HeartbeatClient.from_settings(rt.settings)
    if heartbeat is not None:
        try:
            heartbeat.ping()
        except UpstreamError as exc:
            log.warning("watchdog.heartbeat_failed", error=str(exc))
    return len(raised)
