"""Tasks that drive Alta Video (seed 002): find the zone's ongoing alert, collect its video links,
carry an operator's verification to Alta, end the alert.

Alta posts the zone webhook before it lists the alert, and bookmarks the video later still (CONTRACTS
Part A items 2-3), so the first two steps wait with ``NotYetError`` — without spending an attempt —
for a bounded time measured from the alarm's opening (``ALTA_LOOKUP_TIMEOUT_S``,
``ALTA_VIDEO_WAIT_S``), then carry on with what exists.

Refs written on the alarm: ``alta_alert_guid``, ``alta_merged``, ``alta_origin_name`` (find),
``video_links`` (collect), ``alta_verification`` (verify), ``alta_ended`` (verify 202, end).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from celery import shared_task

from app.domain.alarms import AlarmContext
from vendors.alta import refs, steps
from vendors.alta.client import AltaClient
from vendors.alta.models import ACK_FALSE, ACK_NONE, ACK_VALID, OngoingAlert
from vendors.alta.settings import AltaSettings
from workers.clients.errors import NotYetError, PreconditionError
from workers.perform import FollowUp, Job, Outcome, perform
from workers.step_task import ActionTask, StepTask

RETRY_S = 2.0
# An alert that started this long before the alarm's event is an older one still open in the same
# zone, not the one this webhook announced (a detection joins an alert within Alta's merge window,
# 60 s by default and adjustable per zone, so this leaves it room). Waiting for the right one is
# better than verifying or ending the wrong one.
MAX_ALERT_LEAD_S = 300.0
# An alert that started this close to the alarm's event is the event's own (Alta's default merge window).
OWN_ALERT_S = 60.0
# An alert that started this long after the alarm's event is a later detection's, another alarm's: a
# lookup that runs late (a backlog, a vendor's 429) must not adopt it, then verify or end it.
MAX_ALERT_LAG_S = 60.0
# An older alert of the zone (a detection merged into it under a longer merge window) is taken only
# once the alarm's own has had this long to be listed (Alta may list an alert late).
OLDER_ALERT_AFTER_S = 10.0
VERDICT_CODES = {"none": ACK_NONE, "valid": ACK_VALID, "false": ACK_FALSE}


@shared_task(name=steps.FIND_ONGOING_ALERT, base=StepTask, bind=True, ignore_result=True)
def find_ongoing_alert(self: ActionTask, action_id: int) -> str:
    """Find the Alta alert of the alarm's zone and remember its guid."""
    return perform(self.runtime, action_id, _find_ongoing_alert)


@shared_task(name=steps.COLLECT_VIDEO, base=StepTask, bind=True, ignore_result=True)
def collect_video(self: ActionTask, action_id: int) -> str:
    """Turn the Alta alert's bookmarks into shareable video links."""
    return perform(self.runtime, action_id, _collect_video)


@shared_task(name=steps.VERIFY, base=StepTask, bind=True, ignore_result=True)
def verify(self: ActionTask, action_id: int) -> str:
    """Send an operator's verdict (valid / false / none) to the Alta alert."""
    return perform(self.runtime, action_id, _verify)


@shared_task(name=steps.END, base=StepTask, bind=True, ignore_result=True)
def end(self: ActionTask, action_id: int) -> str:
    """End the Alta alert of the alarm."""
    return perform(self.runtime, action_id, _end)


def _the_alarms_alert(
    alerts: list[OngoingAlert], reference: datetime, *, waited_s: float
) -> OngoingAlert | None:
    """The alert of the zone this alarm's event announced, or None while it is not listed.

    The one that started nearest the event within Alta's merge window; an older one still open
    (within ``MAX_ALERT_LEAD_S``) only after ``OLDER_ALERT_AFTER_S`` of waiting; never one that started
    after the event's own (a later alarm's). An alert without a start time counts only when no alert
    of the zone has one (the newest listed).
    """
    timed = [
        (datetime.fromtimestamp(alert.start_time_ms / 1000, tz=UTC), alert)
        for alert in alerts
        if alert.start_time_ms is not None
    ]
    if not timed:
        return alerts[-1] if alerts else None
    earliest = reference - timedelta(seconds=MAX_ALERT_LEAD_S)
    latest = reference + timedelta(seconds=MAX_ALERT_LAG_S)
    candidates = [(started, alert) for started, alert in timed if earliest <= started <= latest]
    own = [
        (abs((started - reference).total_seconds()), alert)
        for started, alert in candidates
        if started >= reference - timedelta(seconds=OWN_ALERT_S)
    ]
    if own:
        return min(own, key=lambda found: found[0])[1]
    if candidates and waited_s >= OLDER_ALERT_AFTER_S:
        return max(candidates, key=lambda found: found[0])[1]
    return None


def _find_ongoing_alert(job: Job) -> Outcome:
    alarm = _alarm(job)
    zone = (alarm.account or "").strip()
    if not zone:
        raise PreconditionError("alta", f"alarm {alarm.id} carries no Alta alarm zone id")
    alerts = job.clients.get(AltaClient).alerts_of_zone(zone)
    elapsed = _elapsed_s(job, alarm)
    alert = _the_alarms_alert(alerts, _aware(alarm.occurred_at or alarm.opened_at), waited_s=elapsed)
    if alert is None:
        if elapsed < job.settings.vendor(AltaSettings).lookup_timeout_s:
            raise NotYetError(f"the Alta alert for zone {zone} is not listed yet", retry_after_s=RETRY_S)
        reason = f"no ongoing Alta alert for zone {zone} after {elapsed:.0f} s"
        return Outcome(message=reason, needs_person=reason)
    follow_ups: tuple[FollowUp, ...] = ()
    if job.action.params.get("then") == steps.COLLECT_VIDEO:
        follow_ups = (FollowUp(steps.COLLECT_VIDEO),)
    merged = " (merged)" if alert.merged else ""
    origin = alert.origin_name or "an unnamed device"
    return Outcome(
        external_id=alert.guid,
        result={
            "guid": alert.guid,
            "alarm_zone_id": alert.alarm_zone_id,
            "merged": alert.merged,
            "origin_name": alert.origin_name,
            "start_time_ms": alert.start_time_ms,
        },
        message=f"Alta alert {alert.guid}{merged} for zone {zone} from {origin}",
        refs={
            refs.ALERT_GUID: alert.guid,
            refs.MERGED: alert.merged,
            refs.ORIGIN_NAME: alert.origin_name,
        },
        follow_ups=follow_ups,
    )


def _collect_video(job: Job) -> Outcome:
    alarm = _alarm(job)
    elapsed = _elapsed_s(job, alarm)
    guid = alarm.refs.get(refs.ALERT_GUID)
    if not guid:
        if elapsed < job.settings.vendor(AltaSettings).lookup_timeout_s:
            raise NotYetError(
                "the Alta alert guid is not known yet", retry_after_s=RETRY_S, wake_on_refs=True
            )
        return Outcome(
            message=f"no Alta alert found after {elapsed:.0f} s: no video links",
            refs={refs.VIDEO_LINKS: []},
        )
    client = job.clients.get(AltaClient)
    links: list[str] = []
    for bookmark in client.bookmarks(guid):
        link = client.guest_link(bookmark.guest_token)
        if link not in links:
            links.append(link)
    if not links:
        if elapsed < job.settings.vendor(AltaSettings).video_wait_s:
            raise NotYetError(f"Alta alert {guid} has no bookmark yet", retry_after_s=RETRY_S)
        return Outcome(
            external_id=guid,
            result={"links": 0},
            message=f"no Alta bookmark for alert {guid} after {elapsed:.0f} s: no video links",
            refs={refs.VIDEO_LINKS: []},
        )
    return Outcome(
        external_id=guid,
        result={"links": len(links)},
        message=f"{len(links)} video link(s) from Alta alert {guid}",
        refs={refs.VIDEO_LINKS: links},
    )


def _verify(job: Job) -> Outcome:
    alarm = _alarm(job)
    verdict = job.action.params.get("verdict")
    code = VERDICT_CODES.get(verdict) if isinstance(verdict, str) else None
    if code is None:
        raise PreconditionError("alta", f"verdict must be one of valid, false, none (got {verdict!r})")
    guid = alarm.refs.get(refs.ALERT_GUID)
    if not guid:
        elapsed = _elapsed_s(job, alarm)
        if elapsed < job.settings.vendor(AltaSettings).lookup_timeout_s:
            raise NotYetError(
                "the Alta alert guid is not known yet", retry_after_s=RETRY_S, wake_on_refs=True
            )
        reason = f"verdict {verdict!r} not sent to Alta: no Alta alert known after {elapsed:.0f} s"
        return Outcome(message=reason, needs_person=reason)
    merged = alarm.refs.get(refs.MERGED) is True
    origin_name = str(alarm.refs.get(refs.ORIGIN_NAME) or "")
    job.clients.get(AltaClient).verify(guid, code, merged, origin_name)
    ended = code == ACK_FALSE  # Alta ends an alert verified false (Part A item 4)
    learned: dict[str, Any] = {
        refs.VERIFICATION: {"verdict": verdict, "acknowledgment_code": code, "ended": ended}
    }
    if ended:
        learned[refs.ENDED] = True
    ending = " and ended" if ended else ""
    return Outcome(
        external_id=guid,
        result={"acknowledgment_code": code},
        message=f"Alta alert {guid} verified {verdict} ({code}){ending}",
        refs=learned,
    )


def _end(job: Job) -> Outcome:
    alarm = _alarm(job)
    guid = alarm.refs.get(refs.ALERT_GUID)
    if not guid:
        # The lookup may still be running (it is not cancelled when an alarm ends): wait for it, bounded.
        elapsed = _elapsed_s(job, alarm)
        lookup_timeout_s = job.settings.vendor(AltaSettings).lookup_timeout_s
        if alarm.source_kind == "alta" and elapsed < lookup_timeout_s:
            raise NotYetError(
                "the Alta alert guid is not known yet", retry_after_s=RETRY_S, wake_on_refs=True
            )
        reason = f"no Alta alert known after {elapsed:.0f} s: end it in Alta by hand if it is still open"
        return Outcome(message=reason, needs_person=reason if alarm.source_kind == "alta" else None)
    ended = job.clients.get(AltaClient).end(guid)
    if not ended.known:
        return Outcome(
            external_id=guid,
            result={"known": False},
            message=f"Alta alert {guid} already gone (Alta does not know it)",
            refs={refs.ENDED: True},
        )
    return Outcome(
        external_id=guid,
        result={"known": True},
        message=f"Alta alert {guid} ended",
        refs={refs.ENDED: True},
    )


def _alarm(job: Job) -> AlarmContext:
    if job.alarm is None:
        raise PreconditionError("alta", f"{job.action.kind} needs its alarm and has none")
    return job.alarm


def _elapsed_s(job: Job, alarm: AlarmContext) -> float:
    """Seconds since the alarm opened: the bound on how long a step waits for Alta."""
    return (_aware(job.now) - _aware(alarm.opened_at)).total_seconds()


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
