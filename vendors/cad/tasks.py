"""Tasks that drive the GovWorx CAD (seed 003): upload an alarm as one incident, keyed by its alarm.

The CAD keeps the first upload of a ``sysId`` and ignores every later one (CONTRACTS Part A 16), so
the incident is built complete from what the alarm knows at upload time, and its ``sysId`` is derived
from the alarm alone (``alarm-bridge-<alarm id>``): whatever the retries, re-deliveries or repeated
plan steps, one alarm is one incident. A lost answer is retried as is; the retry's 200 carries the
incident the first attempt stored, so no separate reconciliation is needed.

What is not known yet at upload time (video links still being collected, a TrackTik dispatch task
still being created) is left out: the step runs beside the others, and fire plans put it first, so
it is never held back waiting for them.

Refs read: ``video_links``, ``tracktik_dispatch_task_id``, ``alta_alert_guid``.
Refs written: ``cad_incident_id`` (GovWorx's numeric id, or None when its answer had no body) and
``cad_sys_id``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from celery import shared_task

from app.domain import sia
from app.domain.alarms import AlarmContext
from app.domain.site_tables import Location
from app.domain.sites import Site
from vendors.alta import refs as alta_refs
from vendors.cad import refs, steps
from vendors.cad.client import CadClient, CadIncident, IncidentNote
from vendors.rapidsos.site import RapidSOSSite
from vendors.tracktik import refs as tracktik_refs
from workers.clients.errors import PreconditionError
from workers.perform import Job, Outcome, perform
from workers.step_task import ActionTask, StepTask

SYS_ID_PREFIX = "alarm-bridge-"
NUMBER_PREFIX = "AB-"
NOTE_BY = "alarm-bridge"
CALL_SOURCE = "Alarm Monitoring"  # CONTRACTS Part B §5: how the incident reached the CAD

# GovWorx shows the CAD's own priority text (seed 003's example: "Priority 1"); ours has four levels.
PRIORITY_TEXT: dict[str, str] = {
    sia.Priority.LIFE_SAFETY.value: "Priority 1",
    sia.Priority.PROPERTY.value: "Priority 2",
    sia.Priority.TECHNICAL.value: "Priority 3",
    sia.Priority.INFORMATIONAL.value: "Priority 4",
}
VERIFICATION_TEXT: dict[str, str] = {
    "valid": "verified by an operator as a real alarm",
    "false": "verified by an operator as a false alarm",
    "none": "reviewed by an operator: not verifiable",
}


@shared_task(name=steps.UPLOAD_INCIDENT, base=StepTask, bind=True, ignore_result=True)
def upload_incident(self: ActionTask, action_id: int) -> str:
    """Upload the action's alarm to the CAD as one incident (created once per alarm)."""
    return perform(self.runtime, action_id, _upload_incident)


def _upload_incident(job: Job) -> Outcome:
    alarm = job.alarm
    if alarm is None:
        raise PreconditionError("cad", f"action {job.action.id} has no alarm to upload")
    uploaded = job.clients.get(CadClient).upload_incident(incident_for(alarm, job))
    external_id = str(uploaded.id) if uploaded.id is not None else uploaded.sys_id
    where = alarm.site.name if alarm.site else "no site (unrouted)"
    return Outcome(
        external_id=external_id,
        result={
            refs.INCIDENT_ID: uploaded.id,
            refs.SYS_ID: uploaded.sys_id,
            "created_at": uploaded.created_at.isoformat() if uploaded.created_at else None,
        },
        message=f"CAD incident {external_id} ({uploaded.sys_id}) for {where}",
        refs={refs.INCIDENT_ID: uploaded.id, refs.SYS_ID: uploaded.sys_id},
    )


def sys_id_for(alarm_id: int) -> str:
    """The incident's dedupe key: one per alarm, the same on every attempt and every step."""
    return f"{SYS_ID_PREFIX}{alarm_id}"


def incident_for(alarm: AlarmContext, job: Job) -> CadIncident:
    """The complete incident for an alarm, from what is known now (a re-upload cannot add to it).

    An alarm no site claims is still uploaded, without a location: intake has already raised it to a
    person, and the dispatch centre is better served by an unrouted incident than by none.
    """
    sys_id = sys_id_for(alarm.id)
    site = alarm.site
    location = site.location if site else None
    has_coordinates = (
        location is not None and location.latitude is not None and location.longitude is not None
    )
    return CadIncident(
        sys_id=sys_id,
        number=f"{NUMBER_PREFIX}{alarm.id}",
        incident_type=alarm.description or f"{alarm.family.replace('_', ' ').capitalize()} alarm",
        initial_incident_type=f"SIA {alarm.code}" if alarm.code else None,
        incident_date=alarm.opened_at,
        # The signal's own time when it carried one (the "call" is the panel's or camera's report).
        call_received_time=alarm.occurred_at or alarm.opened_at,
        priority=PRIORITY_TEXT.get(alarm.priority),
        caller_name=site.name if site else None,
        caller_number=rapidsos.site_phone if (rapidsos := _rapidsos(site)) else None,
        call_source=CALL_SOURCE,
        location=_address(location) if location else None,
        latitude=location.latitude if location and has_coordinates else None,
        longitude=location.longitude if location and has_coordinates else None,
        additional_context=_summary(alarm, site),
        notes=tuple(_notes(alarm, site, job, sys_id)),
    )


def _address(location: Location) -> str | None:
    """One line a dispatcher can read: the place's name, then its civic address."""
    city_line = " ".join(part for part in (location.state, location.postal_code) if part)
    parts = (
        location.name,
        location.address_line1,
        location.address_line2,
        location.city,
        city_line,
        location.country,
    )
    text = ", ".join(part for part in parts if part)
    return text or None


def _summary(alarm: AlarmContext, site: Site | None) -> str:
    where = f"at {site.name}" if site else "at no configured site (unrouted: a person must route it)"
    what = alarm.description or alarm.family
    signals = f" ({alarm.event_count} signals)" if alarm.event_count > 1 else ""
    return f"alarm-bridge alarm {alarm.id}: {what} {where}{signals}"


def _notes(alarm: AlarmContext, site: Site | None, job: Job, sys_id: str) -> Iterable[IncidentNote]:
    """The incident's notes; ids are stable per alarm so the CAD can tell them apart."""
    signal_at = alarm.occurred_at or alarm.opened_at
    yield IncidentNote(f"{sys_id}-signal", _signal_text(alarm), NOTE_BY, signal_at)
    if site is None:
        yield IncidentNote(
            f"{sys_id}-site",
            "No site claims this signal; the alarm is unrouted and waits for a person.",
            NOTE_BY,
            alarm.opened_at,
        )
    else:
        text = f"Site: {site.name} ({site.key}), {site.site_type.lower()}."
        if site.instructions.strip():
            text += f" Instructions: {site.instructions.strip()}"
        yield IncidentNote(f"{sys_id}-site", text, NOTE_BY, alarm.opened_at)
    links = _video_links(alarm.refs.get(alta_refs.VIDEO_LINKS))
    if links:
        yield IncidentNote(f"{sys_id}-video", "Video: " + " ".join(links), NOTE_BY, job.now)
    guid = alarm.refs.get(alta_refs.ALERT_GUID)
    if guid:
        yield IncidentNote(f"{sys_id}-alta", f"Alta Protect alert {guid}", NOTE_BY, job.now)
    dispatch_task = alarm.refs.get(tracktik_refs.DISPATCH_TASK_ID)
    if dispatch_task is not None:
        yield IncidentNote(
            f"{sys_id}-tracktik",
            f"Guard dispatched: TrackTik dispatch task {dispatch_task}",
            NOTE_BY,
            job.now,
        )
    if alarm.verification in VERIFICATION_TEXT:
        yield IncidentNote(
            f"{sys_id}-verification", f"Alarm {VERIFICATION_TEXT[alarm.verification]}.", NOTE_BY, job.now
        )


def _signal_text(alarm: AlarmContext) -> str:
    if alarm.source_kind == "alta":
        head = "Signal: Alta Protect video alarm"
    else:
        head = f"Signal: SIA {alarm.code}" if alarm.code else "Signal: panel event"
    details = [
        f"account {alarm.account}" if alarm.account else None,
        f"zone {alarm.zone}" if alarm.zone else None,
        alarm.description,
    ]
    text = head + "".join(f", {detail}" for detail in details if detail)
    if alarm.message and alarm.message != alarm.description:
        text += f": {alarm.message}"
    return text


def _video_links(raw: Any) -> list[str]:
    """Links from the ``video_links`` ref: a list of URLs, or of objects with a ``url``/``link``."""
    items = raw if isinstance(raw, list) else [raw] if raw else []
    links: list[str] = []
    for item in items:
        link = (item.get("url") or item.get("link")) if isinstance(item, dict) else item
        if isinstance(link, str) and link.strip():
            links.append(link.strip())
    return links


def _rapidsos(site: Site | None) -> RapidSOSSite | None:
    """The site's RapidSOS table: its site phone is the CAD's caller number."""
    return site.table(RapidSOSSite) if site is not None else None
