"""Tasks that drive TrackTik: raise the alarm that sends a guard (seed 000; CONTRACTS Part A 6-9).

``tracktik.create_alarm`` builds seed 000's payload from the alarm and its site, and records the
Dispatch Task id TrackTik returns. TrackTik has no idempotency key, so every alarm we create carries
``alarm-bridge ref <idempotency key>`` as its first note; any attempt after the first (or after an
unknown outcome) looks for that note before creating, and adopts what it finds.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Iterable
from typing import Any

import structlog
from celery import shared_task

from app.domain import sia
from app.domain.alarms import AlarmContext
from app.domain.site_tables import Location
from app.domain.sites import Site
from vendors.alta import refs as alta_refs
from vendors.alta import steps as alta_steps
from vendors.alta.settings import AltaSettings
from vendors.tracktik import refs, steps
from vendors.tracktik.client import (
    CreatedAlarm,
    TrackTikAlarm,
    TrackTikAttachment,
    TrackTikClient,
    TrackTikLocation,
    ref_note,
)
from vendors.tracktik.site import TrackTikSite
from workers.clients.errors import NotYetError, PreconditionError
from workers.perform import Job, Outcome, perform
from workers.step_task import ActionTask, StepTask

log = structlog.get_logger(__name__)

UPSTREAM = "tracktik"
# Alta's `$jpg` is a bare base64 JPEG; Alta writes "N/A" for a code without a value.
JPEG_SIGNATURE = b"\xff\xd8\xff"
MISSING_VALUES = frozenset({"", "N/A"})


@shared_task(name=steps.CREATE_ALARM, base=StepTask, bind=True, ignore_result=True)
def create_alarm(self: ActionTask, action_id: int) -> str:
    """Raise the alarm in TrackTik (a guard's Dispatch Task) and record the ids it returns."""
    return perform(self.runtime, action_id, _create_alarm)


def _create_alarm(job: Job) -> Outcome:
    alarm = job.alarm
    if alarm is None:
        raise PreconditionError(UPSTREAM, "the action has no alarm")
    site = alarm.site
    tracktik = site.table(TrackTikSite) if site is not None else None
    if site is None or tracktik is None:
        raise PreconditionError(UPSTREAM, "site has no tracktik table")
    # Wait for the links only when the plan looks for the Alta alert (and so for its video).
    is_alta = alarm.source_kind == "alta" and alta_steps.FIND_ONGOING_ALERT in alarm.action_kinds
    links = _video_links(alarm.refs.get(alta_refs.VIDEO_LINKS))
    waited_s = (job.now - alarm.opened_at).total_seconds()
    video_wait_s = job.settings.vendor(AltaSettings).video_wait_s
    if is_alta and alta_refs.VIDEO_LINKS not in alarm.refs and waited_s < video_wait_s:
        # The guard should get the recording with the alarm; alta.collect_video adds it to the refs.
        # Bounded: after ALTA_VIDEO_WAIT_S the alarm goes without it (a note says so).
        raise NotYetError("waiting for the Alta video links", retry_after_s=2, wake_on_refs=True)

    tracktik_alarm = _payload(job, alarm, site, tracktik, links, is_alta=is_alta)
    client = job.clients.get(TrackTikClient)
    found: CreatedAlarm | None = None
    if job.action.outcome_unknown or job.action.attempts > 1:
        # An earlier attempt may have created it (TrackTik has no idempotency key): adopt, never twice.
        found = client.find_alarm_by_ref(
            tracktik_alarm.alarm_organization, tracktik_alarm.triggered_on, job.action.idempotency_key
        )
    created = found or client.create_alarm(tracktik_alarm)
    adopted = found is not None
    log.info(
        "tracktik.alarm_adopted" if adopted else "tracktik.alarm_created",
        alarm_id=alarm.id,
        tracktik_alarm_id=created.id,
        dispatch_task_id=created.dispatch_task_id,
    )
    verb = "found the TrackTik alarm an earlier attempt created" if adopted else "created TrackTik alarm"
    return Outcome(
        external_id=str(created.dispatch_task_id if created.dispatch_task_id is not None else created.id),
        result={
            refs.ALARM_ID: created.id,
            refs.CUSTOM_ID: created.custom_id,
            refs.DISPATCH_TASK_ID: created.dispatch_task_id,
            "adopted": adopted,
            "video_links": len(links),
            "attachments": len(tracktik_alarm.attachments),
        },
        message=f"{verb} {created.id} (dispatch task {created.dispatch_task_id})",
        refs={
            refs.ALARM_ID: created.id,
            refs.CUSTOM_ID: created.custom_id,
            refs.DISPATCH_TASK_ID: created.dispatch_task_id,
        },
    )


def _payload(
    job: Job,
    alarm: AlarmContext,
    site: Site,
    tracktik: TrackTikSite,
    links: tuple[str, ...],
    *,
    is_alta: bool,
) -> TrackTikAlarm:
    """Seed 000's payload (Part A items 7-8); the same alarm and action always give the same one."""
    kind = "alarm" if is_alta or alarm.code is None else str(sia.lookup(alarm.code).kind)
    type_code = tracktik.alarm_type_code(alarm.family, kind)
    if type_code is None:
        raise PreconditionError(
            UPSTREAM, f"site has no TrackTik alarm type code for {alarm.family} ({kind}) nor a default"
        )
    notes = [ref_note(job.action.idempotency_key), _summary(alarm)]
    if links:
        notes.append("Video: " + " ".join(links))
    elif is_alta:
        wait_s = job.settings.vendor(AltaSettings).video_wait_s
        notes.append(
            f"No video links from Alta within {wait_s:g} s of the alarm; "
            "see the alert in Alta for the recording."
        )
    thumbnail = _thumbnail(alarm.payload.get("jpg")) if is_alta else None
    return TrackTikAlarm(
        alarm_type_code=type_code,
        alarm_organization=tracktik.alarm_organization,
        alarm_connection_custom_id=tracktik.alarm_connection_custom_id,
        location=_location(site.location),
        triggered_on=alarm.occurred_at or alarm.opened_at,
        registered_on=alarm.opened_at,
        instructions=site.instructions or None,
        notes=tuple(notes),
        attachments=(thumbnail,) if thumbnail is not None else (),
    )


def _summary(alarm: AlarmContext) -> str:
    """What happened, in one note a guard can read: description, SIA code, zone, message, and when,
    on the site's clock."""
    parts = [alarm.description or f"{alarm.family} alarm"]
    if alarm.code:
        parts.append(f"SIA {alarm.code}")
    if alarm.zone:
        parts.append(f"zone {alarm.zone}")
    if alarm.account:
        parts.append(f"account {alarm.account}")
    if alarm.message and alarm.message != alarm.description:
        parts.append(alarm.message)
    if alarm.site is not None:
        # The guard reads the site's own clock (the sites file's timezone), not UTC.
        local = (alarm.occurred_at or alarm.opened_at).astimezone(alarm.site.timezone)
        parts.append(f"at {local:%Y-%m-%d %H:%M:%S %Z} site time")
    return " — ".join(parts)


def _location(location: Location) -> TrackTikLocation:
    return TrackTikLocation(
        name=location.name,
        address_line1=location.address_line1,
        address_line2=location.address_line2,
        city=location.city,
        state=location.state,
        country=location.country,
        postal_code=location.postal_code,
        latitude=location.latitude,
        longitude=location.longitude,
    )


def _video_links(value: Any) -> tuple[str, ...]:
    """The links under refs["video_links"]: a list of URLs, or of objects with a ``url``."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, Iterable) or isinstance(value, dict):
        return ()
    links: list[str] = []
    for item in value:
        url = item.get("url") if isinstance(item, dict) else item
        if isinstance(url, str) and url.strip() and url.strip() not in links:
            links.append(url.strip())
    return tuple(links)


def _thumbnail(value: Any) -> TrackTikAttachment | None:
    """Alta's ``$jpg`` as a JPEG data URL, or None when absent or not a JPEG (TrackTik would 422)."""
    if not isinstance(value, str) or value.strip() in MISSING_VALUES:
        return None
    data = value.strip()
    if data.startswith("data:"):
        data = data.split(",", 1)[-1]
    try:
        decoded = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        log.warning("tracktik.thumbnail_unreadable")
        return None
    if not decoded.startswith(JPEG_SIGNATURE):
        log.warning("tracktik.thumbnail_not_jpeg")
        return None
    return TrackTikAttachment(data_url="data:image/jpeg;base64," + data, mime_type="image/jpeg")
