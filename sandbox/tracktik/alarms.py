"""TrackTik alarms: validating seed 000's `POST /alarms` payload and storing alarms, notes and images.

The HTTP side lives in `sandbox.tracktik.app`; this module holds the rules (which fields, which types,
which configuration an alarm must match) and the store (alarms with their dispatch task ids, notes in
order, attachments with the decoded image bytes served back at their `url`). Its choices are listed in
`sandbox.tracktik.app`'s docstring.
"""

import base64
import binascii
import copy
import hashlib
import re
import secrets
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sandbox.clock import Clock

ACTIVE = "ACTIVE"
NOTE_TYPE = "COMMENT"
INCLUDABLE = ("attachments", "notes")  # the relations the simulator can expand, in seed 000's order

LOCATION_TEXT_FIELDS = ("name", "addressLine1", "addressLine2", "city", "state", "country", "postalCode")
LOCATION_FIELDS = (*LOCATION_TEXT_FIELDS, "latitude", "longitude")
ON_SITE_TEXT_FIELDS = ("instructions", "sensitiveInformation", "extraInformation")
ON_SITE_FIELDS = (*ON_SITE_TEXT_FIELDS, "sla")
_COORDINATE_LIMITS = {"latitude": 90.0, "longitude": 180.0}
_COUNTRY = re.compile(r"^[A-Za-z]{2}$")

# Image formats TrackTik stores ("currently only images are supported"): the media types accepted in
# a data URL / `mimeType`, and the magic bytes the decoded data must start with.
IMAGE_MEDIA_TYPES: dict[str, str] = {
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/pjpeg": "jpeg",
    "image/png": "png",
    "image/gif": "gif",
    "image/webp": "webp",
}
FORMAT_MEDIA_TYPES = {"jpeg": "image/jpeg", "png": "image/png", "gif": "image/gif", "webp": "image/webp"}
_DATA_URL = re.compile(r"^data:(?P<media>[^;,]*)(?P<params>(?:;[^;,]*)*),(?P<data>.*)$", re.DOTALL)
_NOT_BASE64 = re.compile(r"[^A-Za-z0-9+/]")

# Records one error message against a field name ("location.latitude", "notes.0.comment").
Fail = Callable[[str, str], None]


class AlarmValidationError(Exception):
    """422: the payload is readable but wrong; `errors` maps each field to its messages."""

    def __init__(self, errors: dict[str, list[str]]) -> None:
        super().__init__("The given data was invalid.")
        self.errors = errors


@dataclass(frozen=True, slots=True)
class Image:
    """A decoded attachment: its bytes and the format their signature shows."""

    data: bytes
    format: str


@dataclass(frozen=True, slots=True)
class NewAlarm:
    """A validated `POST /alarms` payload, ready to store."""

    fields: dict[str, Any]  # the alarm's stored fields, seed 000's response order, without ids
    notes: list[str]
    images: list[Image]


def image_format(data: bytes) -> str | None:
    """The format named by an image's magic bytes (PNG, JPEG, GIF, WebP), None when it is none of them."""
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if len(data) >= 12 and data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    return None


def decode_base64_leniently(text: str) -> bytes:
    """Decode base64 the way PHP's non-strict `base64_decode` does: characters outside the alphabet
    (spaces, line breaks, seed 000's trailing " etc.") are skipped and missing padding is tolerated."""
    alphabet_only = _NOT_BASE64.sub("", text)
    if len(alphabet_only) % 4 == 1:  # a lone trailing character carries no whole byte
        alphabet_only = alphabet_only[:-1]
    return base64.b64decode(alphabet_only + "=" * (-len(alphabet_only) % 4))


def parse_utc_time(value: Any, *, any_offset: bool = False) -> datetime:
    """An ISO 8601 date-time in UTC (``Z``, ``+00:00`` or ``-00:00``), as an aware UTC datetime to the
    second. Seed 000 asks for the trigger time "in UTC" and Part A 7 refuses a time without a UTC
    offset, so a local time (``+02:00``) is refused too: a client sending one fails here, not in
    production. ``any_offset``: accept and convert any offset (the list filter, which matches an
    instant however it is written).

    Raises:
        ValueError: not a string, not ISO 8601, no offset, or (unless ``any_offset``) not UTC.
    """
    if not isinstance(value, str):
        raise ValueError(
            "must be an ISO 8601 date-time string with a UTC offset, e.g. 2026-05-26T14:36:37+00:00"
        )
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise ValueError(f"{value!r} is not an ISO 8601 date-time") from None
    if parsed.tzinfo is None or parsed.utcoffset() is None:
        raise ValueError(f"{value!r} has no UTC offset; send the time in UTC, e.g. 2026-05-26T14:36:37+00:00")
    if not any_offset and parsed.utcoffset() != timedelta(0):
        raise ValueError(
            f"{value!r} is not in UTC; send the time in UTC (Z or +00:00), e.g. 2026-05-26T14:36:37+00:00"
        )
    try:
        return parsed.astimezone(UTC).replace(microsecond=0)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00
        raise ValueError(f"{value!r} is out of range") from None


def format_utc_time(moment: datetime) -> str:
    """TrackTik's time format: seconds and a `+00:00` offset."""
    return moment.astimezone(UTC).replace(microsecond=0).isoformat()


def uuid7(epoch_s: float) -> str:
    """A version 7 UUID for a moment (RFC 9562): 48-bit milliseconds, then random bits."""
    millis = int(epoch_s * 1000) & ((1 << 48) - 1)
    value = (millis << 80) | (0x7 << 76) | (secrets.randbits(12) << 64) | (0b10 << 62) | secrets.randbits(62)
    return str(uuid.UUID(int=value))


class AlarmValidator:
    """Checks a payload against seed 000 and the portal's configuration (organizations, type codes)."""

    def __init__(
        self, type_codes: Mapping[int, frozenset[str]], connections: Mapping[tuple[int, str], int]
    ) -> None:
        self.type_codes = type_codes
        self.connections = connections

    def validate(self, body: Mapping[str, Any], received_at: datetime) -> NewAlarm:
        """The alarm to store; AlarmValidationError naming every bad field at once."""
        errors: dict[str, list[str]] = {}

        def fail(name: str, message: str) -> None:
            errors.setdefault(name, []).append(message)

        organization = body.get("alarmOrganization")
        known_organization: int | None = None
        if organization is None:
            fail("alarmOrganization", "The alarmOrganization field is required.")
        elif isinstance(organization, bool) or not isinstance(organization, int):
            fail("alarmOrganization", "The alarmOrganization must be an integer (a client id).")
        elif organization not in self.type_codes:
            fail(
                "alarmOrganization",
                f"The selected alarmOrganization {organization} is not an Alarm Organization.",
            )
        else:
            known_organization = organization

        type_code = body.get("alarmTypeCode")
        if type_code is None or type_code == "":
            fail("alarmTypeCode", "The alarmTypeCode field is required.")
        elif not isinstance(type_code, str):
            fail("alarmTypeCode", "The alarmTypeCode must be a string.")
        elif known_organization is not None and type_code not in self.type_codes[known_organization]:
            fail(
                "alarmTypeCode",
                f"The alarmTypeCode {type_code!r} is not an alarm type of alarmOrganization {organization}.",
            )

        connection_custom_id = body.get("alarmConnectionCustomId")
        if connection_custom_id is not None and not isinstance(connection_custom_id, str):
            fail("alarmConnectionCustomId", "The alarmConnectionCustomId must be a string.")

        location = self._location(body.get("location"), fail)
        triggered_on = self._time(body, "triggeredOn", fail, required=True)
        registered_on = self._time(body, "registeredOn", fail, required=False) or received_at
        on_site = self._on_site(body.get("onSiteInformation"), fail)
        notes = self._notes(body.get("notes"), fail)
        images = self._attachments(body.get("attachments"), fail)
        if errors:
            raise AlarmValidationError(errors)

        assert known_organization is not None  # checked above
        assert triggered_on is not None
        connection_id = (
            self.connections.get((known_organization, connection_custom_id)) if connection_custom_id else None
        )
        fields = {
            "alarmConnectionCustomId": connection_custom_id,
            "alarmTypeCode": type_code,
            "alarmOrganization": known_organization,
            "location": location,
            "triggeredOn": format_utc_time(triggered_on),
            "registeredOn": format_utc_time(registered_on),
            "onSiteInformation": on_site,
            "alarmConnection": (
                {"id": connection_id, "customId": connection_custom_id} if connection_id is not None else None
            ),
        }
        return NewAlarm(fields=fields, notes=notes, images=images)

    def _location(self, value: Any, fail: Fail) -> dict[str, Any]:
        location: dict[str, Any] = dict.fromkeys(LOCATION_FIELDS)
        if value is None:
            fail("location", "The location field is required.")
            return location
        if not isinstance(value, Mapping):
            fail("location", "The location must be an object.")
            return location
        for name in LOCATION_TEXT_FIELDS:
            text = value.get(name)
            if text is not None and not isinstance(text, str):
                fail(f"location.{name}", f"The location.{name} must be a string.")
            else:
                location[name] = text
        country = location["country"]
        if isinstance(country, str) and not _COUNTRY.match(country):
            fail("location.country", "The location.country must be an ISO 3166-1 alpha-2 code, e.g. CA.")
        for name, limit in _COORDINATE_LIMITS.items():
            number = value.get(name)
            if number is None:
                continue
            if isinstance(number, bool) or not isinstance(number, int | float):
                fail(f"location.{name}", f"The location.{name} must be a number (decimal degrees).")
            elif not -limit <= number <= limit:
                fail(f"location.{name}", f"The location.{name} must be between -{limit:g} and {limit:g}.")
            else:
                location[name] = number
        has_address = bool((location["addressLine1"] or "").strip())
        has_coordinates = value.get("latitude") is not None and value.get("longitude") is not None
        if not has_address and not has_coordinates:
            fail("location", "The location needs an addressLine1 or both a latitude and a longitude.")
        return location

    @staticmethod
    def _time(body: Mapping[str, Any], name: str, fail: Fail, *, required: bool) -> datetime | None:
        value = body.get(name)
        if value is None:
            if required:
                fail(name, f"The {name} field is required.")
            return None
        try:
            return parse_utc_time(value)
        except ValueError as exc:
            fail(name, f"The {name} {exc}.")
            return None

    @staticmethod
    def _on_site(value: Any, fail: Fail) -> dict[str, Any]:
        on_site: dict[str, Any] = dict.fromkeys(ON_SITE_FIELDS)
        if value is None:
            return on_site
        if not isinstance(value, Mapping):
            fail("onSiteInformation", "The onSiteInformation must be an object.")
            return on_site
        for name in ON_SITE_TEXT_FIELDS:
            text = value.get(name)
            if text is not None and not isinstance(text, str):
                fail(f"onSiteInformation.{name}", f"The onSiteInformation.{name} must be a string.")
            else:
                on_site[name] = text
        sla = value.get("sla")
        if sla is not None and (isinstance(sla, bool) or not isinstance(sla, int) or sla < 0):
            fail("onSiteInformation.sla", "The onSiteInformation.sla must be a whole number of minutes >= 0.")
        else:
            on_site["sla"] = sla
        return on_site

    @staticmethod
    def _notes(value: Any, fail: Fail) -> list[str]:
        if value is None:
            return []
        if not isinstance(value, list):
            fail("notes", "The notes must be an array of {comment} objects.")
            return []
        comments: list[str] = []
        for index, note in enumerate(value):
            comment = note.get("comment") if isinstance(note, Mapping) else None
            if not isinstance(note, Mapping):
                fail(f"notes.{index}", f"The notes.{index} must be an object with a comment.")
            elif not isinstance(comment, str) or not comment.strip():
                fail(f"notes.{index}.comment", f"The notes.{index}.comment field is required (a string).")
            else:
                comments.append(comment)
        return comments

    @staticmethod
    def _attachments(value: Any, fail: Fail) -> list[Image]:
        if value is None:
            return []
        if not isinstance(value, list):
            fail("attachments", "The attachments must be an array of {base64EncodedData, mimeType} objects.")
            return []
        images: list[Image] = []
        for index, attachment in enumerate(value):
            prefix = f"attachments.{index}"
            if not isinstance(attachment, Mapping):
                fail(prefix, f"The {prefix} must be an object.")
                continue
            mime_type = attachment.get("mimeType")
            if mime_type is not None and (
                not isinstance(mime_type, str) or mime_type.strip().lower() not in IMAGE_MEDIA_TYPES
            ):
                fail(f"{prefix}.mimeType", f"The {prefix}.mimeType must be an image type ({_image_types()}).")
            try:
                images.append(_decode_image(attachment.get("base64EncodedData")))
            except ValueError as exc:
                fail(f"{prefix}.base64EncodedData", f"The {prefix}.base64EncodedData {exc}.")
        return images


def _decode_image(value: Any) -> Image:
    if value is None or value == "":
        raise ValueError("field is required")
    if not isinstance(value, str):
        raise ValueError("must be a string (a data URL)")
    match = _DATA_URL.match(value.strip())
    if match is None or ";base64" not in match.group("params").lower():
        raise ValueError("must be a base64 data URL, e.g. data:image/jpeg;base64,/9j/4AAQ...")
    media_type = match.group("media").strip().lower()
    if media_type not in IMAGE_MEDIA_TYPES:
        raise ValueError(f"must be an image ({_image_types()}), not {media_type or 'untyped data'}")
    try:
        data = decode_base64_leniently(match.group("data"))
    except (binascii.Error, ValueError):
        raise ValueError("is not valid base64") from None
    found = image_format(data)
    if found is None:
        raise ValueError("does not decode to an image (no PNG, JPEG, GIF or WebP signature)")
    return Image(data=data, format=found)


def _image_types() -> str:
    return ", ".join(sorted(FORMAT_MEDIA_TYPES.values()))


@dataclass(frozen=True, slots=True)
class Media:
    """A stored attachment's bytes, served at `/rest/v1/media/{id}/{digest}`."""

    id: int
    digest: str
    format: str
    data: bytes

    @property
    def content_type(self) -> str:
        """The media type the bytes are served with."""
        return FORMAT_MEDIA_TYPES[self.format]


class AlarmStore:
    """The portal's alarms, their notes and attachments; thread-safe; emptied by `reset()`."""

    def __init__(self, settings: Mapping[str, Any], clock: Clock) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.first_alarm_id = _first_id(settings, "first_alarm_id", 1)
        self.first_dispatch_task_id = _first_id(settings, "first_dispatch_task_id", 1)
        self.first_note_id = _first_id(settings, "first_note_id", 1)
        self.first_attachment_id = _first_id(settings, "first_attachment_id", 1)
        type_codes: dict[int, frozenset[str]] = {}
        for organization in settings.get("organizations", []):
            codes = organization.get("alarm_type_codes", [])
            type_codes[int(organization["id"])] = frozenset(str(code) for code in codes)
        connections: dict[tuple[int, str], int] = {}
        for connection in settings.get("connections", []):
            organization_id = int(connection["alarmOrganization"])
            if organization_id not in type_codes:
                raise ValueError(f"[[tracktik.connections]] {connection!r}: unknown alarmOrganization")
            connections[(organization_id, str(connection["customId"]))] = int(connection["id"])
        self.validator = AlarmValidator(type_codes, connections)
        self._alarms: dict[int, dict[str, Any]] = {}
        self._media: dict[int, Media] = {}
        self._next: dict[str, int] = {}
        self.reset()

    def reset(self) -> None:
        """Forget every alarm, note and attachment; ids start again from the configured first ids."""
        with self._lock:
            self._alarms = {}
            # Alarm ids by triggeredOn: the search clients make to find an alarm again (reconcile
            # after a lost answer) stays cheap with tens of thousands stored (make soak).
            self._by_time: dict[str, list[int]] = {}
            self._media = {}
            self._next = {
                "alarm": self.first_alarm_id,
                "dispatchTask": self.first_dispatch_task_id,
                "note": self.first_note_id,
                "attachment": self.first_attachment_id,
            }

    def create(self, body: Mapping[str, Any], employee_id: int) -> dict[str, Any]:
        """Validate and store an alarm with a new dispatch task; the alarm without its relations.

        Raises:
            AlarmValidationError: 422, every bad field named.
        """
        now = self._clock.now()
        new = self.validator.validate(body, received_at=now)
        with self._lock:
            alarm: dict[str, Any] = {"customId": uuid7(now.timestamp()), **copy.deepcopy(new.fields)}
            alarm["dispatchTask"] = self._take("dispatchTask")
            alarm["status"] = ACTIVE
            alarm["id"] = self._take("alarm")
            attachments = []
            for index, image in enumerate(new.images):
                media = Media(
                    id=self._take("attachment"),
                    digest=hashlib.sha1(image.data).hexdigest(),  # noqa: S324  # a content tag, as in seed 000
                    format=image.format,
                    data=image.data,
                )
                self._media[media.id] = media
                attachments.append(
                    {
                        "url": media_path(media),
                        "tag": f"ATTACHMENT_{index}",
                        "format": image.format,
                        "name": f"frombase64.{image.format}",
                        "id": media.id,
                        "uuid": uuid7(now.timestamp()),
                    }
                )
            notes = [
                {
                    "comment": comment,
                    "createdBy": employee_id,
                    "createdOn": format_utc_time(now),
                    "type": NOTE_TYPE,
                    "sentFrom": "",
                    "id": self._take("note"),
                }
                for comment in new.notes
            ]
            self._alarms[alarm["id"]] = {"alarm": alarm, "attachments": attachments, "notes": notes}
            self._by_time.setdefault(str(alarm.get("triggeredOn")), []).append(alarm["id"])
            return copy.deepcopy(alarm)

    def get(self, alarm_id: int, include: frozenset[str], base_url: str) -> dict[str, Any] | None:
        """One alarm with the relations asked for, None when there is no such alarm.

        `base_url` (the portal root as the caller reached it) makes attachment urls absolute.
        """
        with self._lock:
            record = self._alarms.get(alarm_id)
            return None if record is None else _render(record, include, base_url)

    def search(
        self,
        *,
        organization: int | None,
        triggered_on: datetime | None,
        include: frozenset[str],
        base_url: str,
    ) -> list[dict[str, Any]]:
        """Every alarm matching the exact-match filters, oldest (lowest id) first."""
        wanted_time = format_utc_time(triggered_on) if triggered_on is not None else None
        with self._lock:
            ids = sorted(self._alarms) if wanted_time is None else self._by_time.get(wanted_time, [])
            return [
                _render(record, include, base_url)
                for record in (self._alarms[alarm_id] for alarm_id in ids)
                if (organization is None or record["alarm"]["alarmOrganization"] == organization)
                and (wanted_time is None or record["alarm"]["triggeredOn"] == wanted_time)
            ]

    def media(self, media_id: int, digest: str) -> Media | None:
        """A stored attachment by the id and digest of its url."""
        with self._lock:
            media = self._media.get(media_id)
        return media if media is not None and media.digest == digest else None

    def _take(self, counter: str) -> int:
        value = self._next[counter]
        self._next[counter] = value + 1
        return value


def media_path(media: Media) -> str:
    """The attachment's url path; the blueprint makes it absolute for the request's host."""
    return f"/rest/v1/media/{media.id}/{media.digest}"


def _render(record: Mapping[str, Any], include: frozenset[str], base_url: str) -> dict[str, Any]:
    rendered: dict[str, Any] = copy.deepcopy(record["alarm"])
    for relation in INCLUDABLE:
        if relation in include:
            rendered[relation] = copy.deepcopy(record[relation])
    for attachment in rendered.get("attachments", []):
        attachment["url"] = base_url.rstrip("/") + attachment["url"]
    return rendered


def _first_id(settings: Mapping[str, Any], key: str, default: int) -> int:
    value = settings.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"[tracktik] {key} must be an integer >= 1 (got {value!r})")
    return value
