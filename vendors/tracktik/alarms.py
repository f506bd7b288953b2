"""TrackTik's alarm as the bridge sends and reads it: the request body of ``POST /alarms`` and the
typed answers (seed 000 "Creating an Alarm"; CONTRACTS Part A items 7-8).

Kept apart from the HTTP client so the shapes and their parsing (bare object or ``{"data": ...}``)
can be read on their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

REF_PREFIX = "alarm-bridge ref "


def ref_note(ref: str) -> str:
    """The comment of the first note that marks an alarm as ours (Part A item 8)."""
    return REF_PREFIX + ref


def format_time(moment: datetime) -> str:
    """TrackTik's alarm time: UTC ISO 8601 with ``+00:00`` and whole seconds (seed 000).

    The list filter is an exact match, so the create and the search must format a time identically.
    """
    if moment.tzinfo is None:
        raise ValueError("TrackTik times must be timezone-aware")
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True, slots=True)
class TrackTikLocation:
    """Seed 000's ``location``: an address line 1, or a latitude and longitude, at least."""

    name: str | None = None
    address_line1: str | None = None
    address_line2: str | None = None
    city: str | None = None
    state: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2
    postal_code: str | None = None
    latitude: float | None = None
    longitude: float | None = None

    def to_json(self) -> dict[str, Any]:
        """The object under TrackTik's key names."""
        return {
            "name": self.name,
            "addressLine1": self.address_line1,
            "addressLine2": self.address_line2,
            "city": self.city,
            "state": self.state,
            "country": self.country,
            "postalCode": self.postal_code,
            "latitude": self.latitude,
            "longitude": self.longitude,
        }


@dataclass(frozen=True, slots=True)
class TrackTikAttachment:
    """An image as a data URL (``data:image/jpeg;base64,...``); TrackTik takes images only."""

    data_url: str
    mime_type: str = "image/jpeg"


@dataclass(frozen=True, slots=True)
class TrackTikAlarm:
    """Everything ``POST /alarms`` takes (seed 000 "Creating an Alarm"). ``notes`` are comments in
    order; callers put ``ref_note(...)`` first so the alarm can be found after an unknown outcome."""

    alarm_type_code: str
    alarm_organization: int
    location: TrackTikLocation
    triggered_on: datetime
    registered_on: datetime
    alarm_connection_custom_id: str | None = None
    instructions: str | None = None
    notes: tuple[str, ...] = ()
    attachments: tuple[TrackTikAttachment, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """The request body; every optional field is sent (Part A item 7)."""
        return {
            "alarmConnectionCustomId": self.alarm_connection_custom_id,
            "alarmTypeCode": self.alarm_type_code,
            "alarmOrganization": self.alarm_organization,
            "location": self.location.to_json(),
            "triggeredOn": format_time(self.triggered_on),
            "registeredOn": format_time(self.registered_on),
            "onSiteInformation": {
                "instructions": self.instructions,
                "sensitiveInformation": None,
                "extraInformation": None,
                "sla": None,
            },
            "notes": [{"comment": comment} for comment in self.notes],
            "attachments": [
                {"base64EncodedData": a.data_url, "mimeType": a.mime_type} for a in self.attachments
            ],
        }


@dataclass(frozen=True, slots=True)
class CreatedAlarm:
    """The ids TrackTik gave an alarm: its own id, its generated ``customId`` and its Dispatch Task."""

    id: int
    custom_id: str | None
    dispatch_task_id: int | None


@dataclass(frozen=True, slots=True)
class AlarmNote:
    """One note of an alarm (``include=notes``)."""

    id: int | None
    comment: str


@dataclass(frozen=True, slots=True)
class AlarmAttachment:
    """One attachment of an alarm (``include=attachments``); ``url`` serves the image."""

    id: int | None
    url: str | None
    format: str | None


@dataclass(frozen=True, slots=True)
class AlarmDetail:
    """``GET /alarms/{id}``: the ids, the status, the times as stored, and the included relations."""

    alarm: CreatedAlarm
    status: str | None
    alarm_type_code: str | None
    alarm_organization: int | None
    triggered_on: str | None
    registered_on: str | None
    notes: tuple[AlarmNote, ...]
    attachments: tuple[AlarmAttachment, ...]


def unwrap(body: object) -> Mapping[str, object]:
    """Seed 000 prints bare objects; TrackTik's general convention wraps them in ``data``: accept both."""
    if not isinstance(body, Mapping):
        raise TypeError("not a JSON object")
    data = body.get("data")
    return data if isinstance(data, Mapping) else body


def created_alarm(item: Mapping[str, object]) -> CreatedAlarm:
    """The ids of one alarm object. Raises KeyError/TypeError when it has no integer ``id``."""
    alarm_id = item["id"]
    if isinstance(alarm_id, bool) or not isinstance(alarm_id, int):
        raise TypeError("alarm id is not an integer")
    dispatch = item.get("dispatchTask")
    if isinstance(dispatch, Mapping):  # an `include=dispatchTask` style expansion
        dispatch = dispatch.get("id")
    return CreatedAlarm(
        id=alarm_id,
        custom_id=text_or_none(item.get("customId")),
        dispatch_task_id=dispatch if isinstance(dispatch, int) and not isinstance(dispatch, bool) else None,
    )


def alarm_notes(item: Mapping[str, object]) -> tuple[AlarmNote, ...]:
    """The notes of an alarm read with ``include=notes`` (none when not included)."""
    return tuple(
        AlarmNote(id=_int_or_none(n.get("id")), comment=str(n.get("comment") or ""))
        for n in _objects(item.get("notes"))
    )


def alarm_detail(item: Mapping[str, object]) -> AlarmDetail:
    """An alarm object with whatever relations it carries. Raises like ``created_alarm``."""
    organization = item.get("alarmOrganization")
    return AlarmDetail(
        alarm=created_alarm(item),
        status=text_or_none(item.get("status")),
        alarm_type_code=text_or_none(item.get("alarmTypeCode")),
        alarm_organization=organization if isinstance(organization, int) else None,
        triggered_on=text_or_none(item.get("triggeredOn")),
        registered_on=text_or_none(item.get("registeredOn")),
        notes=alarm_notes(item),
        attachments=tuple(
            AlarmAttachment(
                id=_int_or_none(a.get("id")),
                url=text_or_none(a.get("url")),
                format=text_or_none(a.get("format")),
            )
            for a in _objects(item.get("attachments"))
        ),
    )


def text_or_none(value: object) -> str | None:
    """A JSON value when it is a string (TrackTik sends null for fields not set)."""
    return value if isinstance(value, str) else None


def _int_or_none(value: object) -> int | None:
    return value if isinstance(value, int) else None


def _objects(value: object) -> list[Mapping[str, object]]:
    """The JSON objects of a relation's array (none when it was not included)."""
    return [entry for entry in value if isinstance(entry, Mapping)] if isinstance(value, list) else []
