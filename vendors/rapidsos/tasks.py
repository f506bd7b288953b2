"""Tasks that drive RapidSOS (seed 004; CONTRACTS Part A 13-15, Part B §4 and §6.4).

``rapidsos.create_alert`` asks for emergency dispatch: it sends the alarm's event core (source id,
incident time, location, emergency type, site type) and the security fields seed 004 recommends, and
keeps the alert id. A 216 (no PSAP takes RapidSOS alerts there) or 217 (supplemental data only) still
creates the alert, but nobody will dispatch from it alone, so the handler asks perform() for the phone
fallback and the alarm goes to a person. ``rapidsos.cancel_alert`` stands the alert down when the alarm
ends as false, cancelled or a test.

Idempotency of the create (decided here, because seed 004 is silent and RapidSOS offers no dedupe on
``source_id`` and no way to find an alert except by its id): when an earlier attempt's answer was lost
(``outcome_unknown``), we **send again**, with the same ``source_id``. The first attempt either reached
the PSAP or did not, and we cannot tell which. A duplicate alert carrying the same source id, address
and incident time is a nuisance a telecommunicator recognises (duplicate 911 calls for one incident
are routine); a missing one is a fire or a hold-up nobody is sent to. The alarm is flagged for a
person, with the source id, so the extra alert can be closed with the PSAP if one exists; only the
alert whose id we hold can be cancelled from here. Retries are bounded by the action's max attempts.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from celery import shared_task

from app.domain import sia
from app.domain.alarms import AlarmContext
from app.domain.plans import TROUBLE_KINDS
from app.domain.site_tables import Location
from app.domain.sites import Site
from vendors.alta import refs as alta_refs
from vendors.rapidsos import refs, steps
from vendors.rapidsos.client import SUPPLEMENTAL_ONLY, UNSUPPORTED_LOCATION, CreatedAlert, RapidSOSClient
from vendors.rapidsos.site import CIVIC, GEODETIC_SITE_TYPES, RapidSOSSite
from vendors.rapidsos.site import CIVIC_REQUIRED as CIVIC_REQUIRED_FIELDS
from workers.clients.errors import PreconditionError
from workers.perform import Job, Outcome, perform
from workers.step_task import ActionTask, StepTask

UPSTREAM = "rapidsos"

# SIA family -> RapidSOS emergency_type (CONTRACTS §6.4; seed 004's enum). The type picks the discipline
# the PSAP routes to. Panic is HOLDUP: §6.4 allows HOLDUP or SILENT_ALARM "per site setting", and until
# sites can say so (a `panic_emergency_type` key in the site's [rapidsos] table would be the place),
# HOLDUP sends law enforcement to a person pressing a panic button, which is what it is for.
# Gas is CO: seed 001's GA is the gas/CO detector and CO is the enum's only gas type.
EMERGENCY_TYPES: dict[str, str] = {
    sia.Family.BURGLARY: "BURGLARY",
    sia.Family.HOLDUP: "HOLDUP",
    sia.Family.PANIC: "HOLDUP",
    sia.Family.FIRE: "FIRE",
    sia.Family.SPRINKLER: "FIRE",
    sia.Family.HEAT: "FIRE",
    sia.Family.GAS: "CO",
    sia.Family.MEDICAL: "MEDICAL",
    sia.Family.EMERGENCY: "MEDICAL",
}
OTHER = "OTHER"

# Seed 004's civic limits (vendors.rapidsos.site), in RapidSOS's names for the fields a civic part needs.
CIVIC_REQUIRED = tuple(CIVIC[field][0] for field in CIVIC_REQUIRED_FIELDS)
COMMERCIAL = "COMMERCIAL"  # the one site type whose civic name (a business name) is sent

# A sender's clock is trusted for incident_time only near our own receipt time; a panel whose clock
# says 1970 or next week would otherwise misinform the PSAP (and 1970 is refused as "seconds, not ms").
OCCURRED_AT_EARLIEST = timedelta(hours=24)
OCCURRED_AT_LATEST = timedelta(minutes=5)
_MISSING = frozenset({"", "n/a"})


@shared_task(name=steps.CREATE_ALERT, base=StepTask, bind=True, ignore_result=True)
def create_alert(self: ActionTask, action_id: int) -> str:
    """Ask RapidSOS for emergency dispatch for one alarm; 216/217 fall back to a phone call."""
    return perform(self.runtime, action_id, _create_alert)


@shared_task(name=steps.CANCEL_ALERT, base=StepTask, bind=True, ignore_result=True)
def cancel_alert(self: ActionTask, action_id: int) -> str:
    """Cancel the alarm's RapidSOS alert (the alarm ended as false, cancelled or a test)."""
    return perform(self.runtime, action_id, _cancel_alert)


def _create_alert(job: Job) -> Outcome:
    alarm = job.alarm
    if alarm is None:
        raise PreconditionError(UPSTREAM, "the step has no alarm to report")
    site = alarm.site
    if site is None or site.table(RapidSOSSite) is None:
        raise PreconditionError(UPSTREAM, "the alarm's site has no [rapidsos] settings")
    existing = alarm.refs.get(refs.ALERT_ID)
    if existing:
        # One RapidSOS alert per alarm: a second create step for it would only duplicate the dispatch.
        return Outcome(external_id=str(existing), message=f"RapidSOS alert {existing} already exists")
    body = alert_body(alarm, site)
    # The guard, the CAD and the calls go once the 911 request has left (written to the socket).
    created = job.clients.get(RapidSOSClient).create_alert(body, on_sent=job.release_911)
    source_id = body["variables"]["event"]["source_id"]
    learned: dict[str, Any] = {refs.SOURCE_ID: source_id, refs.STATUS_CODE: created.status_code}
    if created.alert_id is not None:
        learned[refs.ALERT_ID] = created.alert_id
    needs_person = None
    if job.action.outcome_unknown:
        learned[refs.POSSIBLE_DUPLICATE] = True
        needs_person = (
            f"RapidSOS create retried after a lost answer: the PSAP may hold a second alert with "
            f"source_id {source_id}; only {created.alert_id or 'the new one'} can be cancelled from here"
        )
    return Outcome(
        external_id=created.alert_id,
        result=_result(created),
        message=_message(created),
        refs=learned,
        needs_person=needs_person,
        fallback=_fallback_reason(created),
    )


def _cancel_alert(job: Job) -> Outcome:
    alarm = job.alarm
    if alarm is None:
        raise PreconditionError(UPSTREAM, "the step has no alarm whose alert to cancel")
    alert_id = alarm.refs.get(refs.ALERT_ID)
    if not alert_id:
        return Outcome(message="no RapidSOS alert: nothing to cancel", result={"cancelled": False})
    state = job.clients.get(RapidSOSClient).cancel_alert(str(alert_id))
    if state is None:
        return Outcome(
            external_id=str(alert_id),
            message=f"RapidSOS no longer holds alert {alert_id} (alerts are kept 12 h): nothing to cancel",
            result={"cancelled": False},
            refs={refs.CANCELLED: False},
        )
    return Outcome(
        external_id=str(alert_id),
        message=f"RapidSOS alert {alert_id} cancelled",
        result={"cancelled": True, "status": state.status, "disposition": state.disposition},
        refs={refs.CANCELLED: True},
    )


# --- the alert body (seed 004 "Body Params and Field Information", "Security and Fire") ------------


def alert_body(alarm: AlarmContext, site: Site) -> dict[str, Any]:
    """The ``POST /v1/alerts/`` body for an alarm at a site with a [rapidsos] table.

    ``blocking: true`` because only a blocking create tells us the alert id and whether a PSAP takes
    it. Empty values are left out rather than sent empty or null (RapidSOS refuses both).

    Raises:
        PreconditionError: the site has neither coordinates nor a civic address RapidSOS accepts
            (the sites file should have caught this; a person must fix the site).
    """
    rapidsos = site.table(RapidSOSSite)
    assert rapidsos is not None  # the caller checked
    location = rapidsos_location(site.location, site.site_type)
    if not location:
        raise PreconditionError(
            UPSTREAM, f"site {site.key!r} has no coordinates and no complete civic address"
        )
    event: dict[str, Any] = {
        "source_id": f"alarm-bridge-{alarm.id}",
        "incident_time": incident_time_ms(alarm),
        "location": location,
        "emergency_type": emergency_type(alarm),
        "site_type": site.site_type,
    }
    variables: dict[str, Any] = {"event": event}
    optional = {
        "alarm_description": _description(alarm),
        "zone_description": _zone_description(alarm),
        "alarm_permit_number": rapidsos.alarm_permit_number,
        "instructions": site.instructions,
        "site_phone": rapidsos.site_phone,
    }
    variables.update({key: value for key, value in optional.items() if _present(value)})
    variables["visually_verified"] = visually_verified(alarm)
    contacts = [
        {
            key: value
            for key, value in (
                ("name", contact.name),
                ("phone", contact.phone),
                ("relationship", contact.relationship),
                ("language", contact.language),
            )
            if _present(value)
        }
        for contact in rapidsos.emergency_contacts
    ]
    if contacts:
        # The sites file allows the keyholder plus three (seed 004's recommended maximum).
        variables["emergency_contacts"] = contacts
    return {"blocking": True, "callflow": rapidsos.callflow, "variables": variables}


def emergency_type(alarm: AlarmContext) -> str:
    """The RapidSOS emergency type of an alarm's family; a trouble is never its family's emergency.

    A fire *trouble* (FT) sent as FIRE would roll an engine to a dirty detector, so troubles and
    supervisory signals are OTHER whatever their family.
    """
    if alarm.code is not None and sia.lookup(alarm.code).kind in TROUBLE_KINDS:
        return OTHER
    return EMERGENCY_TYPES.get(alarm.family, OTHER)


def incident_time_ms(alarm: AlarmContext) -> int:
    """When it happened, in epoch ms: the sender's time when plausible, else when we opened the alarm."""
    when = alarm.opened_at
    occurred = alarm.occurred_at
    if occurred is not None and (
        alarm.opened_at - OCCURRED_AT_EARLIEST <= occurred <= alarm.opened_at + OCCURRED_AT_LATEST
    ):
        when = occurred
    return _epoch_ms(when)


def rapidsos_location(location: Location, site_type: str) -> dict[str, Any]:
    """The alert's location: one part, the one RapidSOS reads for the site's type (seed 004).

    Seed 004: when both are sent, "the geodetic address information will take precedence, and
    replaces civic address data", and "Residential and Commercial are expected as fixed (civic)
    locations". Sending a home's coordinates beside its address would throw away the street and the
    apartment (``street_2``) the dispatcher needs, so a residential or commercial site with a civic
    address RapidSOS accepts sends that address alone; its coordinates go only when its address does
    not fit. A vehicle or a person is located by coordinates. The civic ``name`` is a business name
    (seed 004: never the homeowner's, which breaks geocoding): it is sent for a commercial site only.
    An address field beyond a limit drops an optional field, or the whole civic part if the field is
    required (a bad civic part would make RapidSOS refuse the whole alert).
    """
    geodetic: dict[str, Any] | None = None
    if location.latitude is not None and location.longitude is not None:
        geodetic = {"latitude": location.latitude, "longitude": location.longitude}
    civic: dict[str, str] = {}
    for ours, (theirs, low, high) in CIVIC.items():
        value = getattr(location, ours)
        if isinstance(value, str) and low <= len(value.strip()) <= high:
            civic[theirs] = value.strip()
    if "zip_code" in civic and not civic["zip_code"].isdigit():
        del civic["zip_code"]  # RapidSOS takes 5-digit US zip codes only
    if site_type != COMMERCIAL:
        civic.pop("name", None)
    has_civic = all(name in civic for name in CIVIC_REQUIRED)
    if has_civic and (site_type not in GEODETIC_SITE_TYPES or geodetic is None):
        return {"civic": civic}
    return {"geodetic": geodetic} if geodetic is not None else {}


def visually_verified(alarm: AlarmContext) -> bool:
    """Someone has confirmed the alarm as real: an operator's "valid" verdict (or Alta's, in refs)."""
    alta = alarm.refs.get(alta_refs.VERIFICATION)
    return alarm.verification == "valid" or (isinstance(alta, dict) and alta.get("verdict") == "valid")


def _description(alarm: AlarmContext) -> str | None:
    """A short overview, e.g. "Burglary Alarm: Back door glass break" (description, then message)."""
    parts: list[str] = []
    for part in (alarm.description, alarm.message):
        if part is not None and _present(part) and part.strip() not in parts:
            parts.append(part.strip())
    return ": ".join(parts) or None


def _zone_description(alarm: AlarmContext) -> str | None:
    """The zone's name when it tells a responder something (seed 004: not "Zone 3").

    Alta sends the zone's name in the webhook; a panel sends a zone number, which is left out.
    """
    if alarm.source_kind == "alta":
        name = alarm.payload.get("alarmZoneName")
        return name.strip() if isinstance(name, str) and _present(name) else None
    zone = alarm.zone
    if zone is None or not _present(zone) or zone.strip().isdigit():
        return None
    return zone.strip()


def _present(value: object) -> bool:
    return value is not None and not (isinstance(value, str) and value.strip().casefold() in _MISSING)


def _epoch_ms(when: datetime) -> int:
    return int(when.timestamp() * 1000)


# --- outcome ------------------------------------------------------------------------------------------


def _psap(created: CreatedAlert) -> dict[str, Any]:
    psap = created.body.get("covering_psap")
    return psap if isinstance(psap, dict) else {}


def _result(created: CreatedAlert) -> dict[str, Any]:
    psap = _psap(created)
    return {
        "status_code": created.status_code,
        "alert_id": created.alert_id,
        "covering_psap": psap.get("id"),
    }


def _message(created: CreatedAlert) -> str:
    psap = _psap(created)
    where = f"; covering PSAP {psap.get('name') or psap.get('id')}" if psap else ""
    return f"RapidSOS {created.status_code}: alert {created.alert_id or '(no id)'}{where}"


def _fallback_reason(created: CreatedAlert) -> str | None:
    """Why a person must call the PSAP, or None when RapidSOS took the alert for dispatch."""
    if created.status_code == UNSUPPORTED_LOCATION:
        return "RapidSOS 216: no PSAP can take it — call the PSAP by phone"
    if created.status_code == SUPPLEMENTAL_ONLY:
        psap = _psap(created)
        who = f" ({psap.get('name')}, {psap.get('phone')})" if psap.get("phone") else ""
        return f"RapidSOS 217: the PSAP{who} takes it as supplemental data only — call the PSAP by phone"
    if created.alert_id is None:
        return f"RapidSOS {created.status_code} without an alert id — call the PSAP by phone"
    return None
