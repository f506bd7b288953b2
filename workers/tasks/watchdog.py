"""The watchdog task (sent by beat on the `dispatch` queue, beside the dispatcher tick).

It runs on the ``urgent`` worker, so a stalled ``worker`` pool is noticed; if the ``urgent`` worker,
beat or the broker are down, the check stops and so do the heartbeat pings, which the monitor at
WATCHDOG_HEARTBEAT_URL reports.

The same tick checks the supervision deadlines of every supervised account (app.domain.supervision),
in a transaction of its own after the watchdog's: a silent account opens one trouble alarm, whose
steps are published once it commits. A supervision check that fails skips the heartbeat, so the
monitor hears of it.
"""

from __future__ import annotations

import time
from datetime import timedelta

import structlog
from celery import shared_task

from app import telemetry
from app.domain import supervision, task_names, watchdog
from app.domain.intake import IntakeRules
from app.ledger.models import utcnow
from workers.clients.errors import UpstreamError
from workers.clients.heartbeat import HeartbeatClient
from workers.runtime import Runtime
from workers.step_task import StepTask

log = structlog.get_logger(__name__)


@shared_task(name=task_names.SYSTEM_WATCHDOG, base=StepTask, bind=True, ignore_result=True)
def check(self: StepTask[[], int]) -> int:
    """Raise alarms with overdue steps to a person, open a trouble for each supervision deadline
    passed, then ping the heartbeat; returns how many alarms it raised or opened."""
    rt = self.runtime
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
    troubles = supervise(rt)
    telemetry.WATCHDOG_LAST_RUN.set(time.time())
    heartbeat = HeartbeatClient.from_settings(rt.settings)
    if heartbeat is not None:
        try:
            heartbeat.ping()
        except UpstreamError as exc:
            log.warning("watchdog.heartbeat_failed", error=str(exc))
    return len(raised) + len(troubles)


def supervise(rt: Runtime) -> list[supervision.Trouble]:
    """Arm the supervised accounts (once per runtime, so once per process and sites file), then trip
    the deadlines passed."""
    if not rt.supervision_armed:
        with rt.sessions.begin() as session:  # its own transaction: it touches every account's row
            supervision.arm(session, sites=rt.sites, now=utcnow())
        rt.supervision_armed = True
    rules = IntakeRules.from_settings(rt.settings)  # the trouble is recorded as intake would
    with rt.sessions.begin() as session:
        checked = supervision.check(session, sites=rt.sites, now=utcnow(), rules=rules)
    if checked.due_actions:
        rt.outbox.publish(checked.due_actions)
    for trouble in checked.troubles:
        log.warning(
            "supervision.trouble",
            alarm_id=trouble.alarm_id,
            kind=trouble.kind,
            site=trouble.site_key,
            source=trouble.source_key,
            account=trouble.account,
            message=trouble.reason,
        )
    return checked.troubles
