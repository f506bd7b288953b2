"""Request schemas for the intake surface: Alta zone webhooks and SIA panel events.

Senders add fields, so unknown keys are tolerated (and kept in the raw payload). What we need is
checked strictly, and every bad field is named in the 422.
"""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Any

import marshmallow as ma

from app.web.errors import field_messages

MAX_BATCH = 500
NOT_SET = frozenset({"", "N/A", "n/a", "NA"})  # Alta renders unset template codes as "N/A"
_IDENTIFIER = re.compile(r"^[^\s,]{1,64}$")
_CODE = re.compile(r"^[A-Za-z0-9_]{2,10}$")  # SIA DC-05 codes, and CallOnAlarm custom codes (2-10)
EPOCH_MS_THRESHOLD = 10**12  # CONTRACTS Part A item 5: a `$time` above 10^12 is milliseconds
MAX_TIME_TEXT = 64  # longer is no time Alta renders: dropped unread


class Text(ma.fields.String):
    """A string that also accepts a number (zones are often sent as 3, account numbers as 1001)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> str:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        if isinstance(value, int | float):
            value = str(value)
        return str(super()._deserialize(value, attr, data, **kwargs)).strip()


class _Base(ma.Schema):
    class Meta:
        unknown = ma.EXCLUDE


class PanelEventSchema(_Base):
    """An SIA DC-05 event from a panel, gateway or script (`POST /v1/events`).

    ``occurred_at`` is required and must be an ISO 8601 time with a zone: a value that is not one
    (``"yesterday"``, no zone) is a 422 naming it, which a sender sees the day it is integrated. A
    well-formed time that UTC cannot hold (``0001-01-01T00:00:00+14:00``, ``9999-12-31T23:59:59-14:00``)
    is different: it is what a panel whose clock was reset sends, in the field, with a real alarm. That
    one is dropped, not refused (``unusable_time`` keeps it for the alarm's timeline): the receive
    time stands, and the event is recognised on a retry by its id or its content like any event
    without a time of its own.
    """

    account = Text(
        required=True, validate=ma.validate.Regexp(_IDENTIFIER, error="1-64 characters, no spaces")
    )
    code = Text(required=True, validate=ma.validate.Regexp(_CODE, error="an SIA event code such as BA or FA"))
    zone = Text(load_default=None, allow_none=True, validate=ma.validate.Length(max=64))
    message = Text(load_default=None, allow_none=True, validate=ma.validate.Length(max=500))
    occurred_at = ma.fields.AwareDateTime(required=True, format="iso")
    event_id = Text(load_default=None, allow_none=True, validate=ma.validate.Length(min=1, max=128))

    @ma.post_load
    def _normalise(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        data["code"] = data["code"].upper()
        sender_time = data["occurred_at"]
        data["occurred_at"] = in_utc(sender_time)
        data["unusable_time"] = None if data["occurred_at"] else sender_time.isoformat()
        return data


class CallOnAlarmTriggerSchema(_Base):
    """The body senders already post to CallOnAlarm's `POST /v1/alert/trigger` (seed 001), unchanged."""

    accountNumber = Text(  # noqa: N815 - the vendor's field name
        required=True, validate=ma.validate.Regexp(_IDENTIFIER, error="1-64 characters, no spaces")
    )
    eventCode = Text(  # noqa: N815
        required=True, validate=ma.validate.Regexp(_CODE, error="an SIA event code such as BA or FA")
    )
    zone = Text(load_default=None, allow_none=True, validate=ma.validate.Length(max=64))
    message = Text(load_default=None, allow_none=True, validate=ma.validate.Length(max=500))

    @ma.post_load
    def _as_panel_event(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        return {
            "account": data["accountNumber"],
            "code": data["eventCode"].upper(),
            "zone": data["zone"],
            "message": data["message"],
            "occurred_at": None,  # CallOnAlarm's body carries no time: the receive time stands
            "unusable_time": None,
            "event_id": None,
        }


def is_callonalarm_body(body: dict[str, Any]) -> bool:
    """True when the body is shaped like CallOnAlarm's trigger rather than ours."""
    return "accountNumber" in body or "eventCode" in body


class AltaWebhookSchema(_Base):
    """The body an Alta Protect alarm-zone webhook action sends, written from our template
    (README "Alta webhook template"; CONTRACTS Part B §1.8). ``N/A`` and empty values mean missing."""

    alarmZoneId = Text(  # noqa: N815 - Alta's template variable names
        required=True, validate=ma.validate.Regexp(_IDENTIFIER, error="the $alarmZoneId value")
    )
    alarmZoneName = Text(load_default=None, validate=ma.validate.Length(max=200))  # noqa: N815
    deviceId = Text(load_default=None, validate=ma.validate.Length(max=128))  # noqa: N815
    deviceName = Text(load_default=None, validate=ma.validate.Length(max=200))  # noqa: N815
    siteId = Text(load_default=None, validate=ma.validate.Length(max=128))  # noqa: N815
    siteName = Text(load_default=None, validate=ma.validate.Length(max=200))  # noqa: N815
    triggerPhase = Text(load_default=None, validate=ma.validate.Length(max=64))  # noqa: N815
    detection = Text(load_default=None, validate=ma.validate.Length(max=500))
    verification = Text(load_default=None, validate=ma.validate.Length(max=64))
    description = Text(load_default=None, validate=ma.validate.Length(max=2000))
    address = Text(load_default=None, validate=ma.validate.Length(max=500))
    url = Text(load_default=None, validate=ma.validate.Length(max=2000))
    # Alta's clock is never a reason to refuse its alarm: whatever these hold, alta_time keeps a
    # usable time or drops it.
    timeIso = ma.fields.Raw(load_default=None, metadata={"type": "string"})  # noqa: N815
    time = ma.fields.Raw(load_default=None, metadata={"type": "string"})
    eventId = Text(load_default=None, validate=ma.validate.Length(max=128))  # noqa: N815

    @ma.pre_load
    def _drop_unset(self, data: Any, **_: Any) -> Any:
        if not isinstance(data, dict):
            return data
        return {k: v for k, v in data.items() if not (isinstance(v, str) and v.strip() in NOT_SET)}

    @ma.post_load
    def _occurred_at(self, data: dict[str, Any], **_: Any) -> dict[str, Any]:
        time_iso, epoch = data.get("timeIso"), data.get("time")
        data["occurred_at"] = alta_time(time_iso, epoch)
        given = time_iso if time_iso is not None else epoch
        data["unusable_time"] = None if data["occurred_at"] or given is None else str(given)[:MAX_TIME_TEXT]
        return data


def alta_time(time_iso: Any, epoch: Any) -> datetime | None:
    """Alta's event time: ``$timeIso`` when it carries a zone, else ``$time`` (epoch s or ms).

    An unusable time (not a string or a number, not a time, without a zone, outside what UTC can
    hold, not a finite number of seconds) is dropped rather than refused: Alta cannot fix its
    template per request, and an alarm is never rejected for its clock. The receive time is kept
    in any case.
    """
    if isinstance(time_iso, str) and 0 < len(time_iso) <= MAX_TIME_TEXT:
        try:
            parsed = datetime.fromisoformat(time_iso.strip().replace("Z", "+00:00"))
        except ValueError:
            parsed = None
        if parsed is not None and parsed.tzinfo is not None and (when := in_utc(parsed)) is not None:
            return when
    if (
        isinstance(epoch, int | float | str)
        and not isinstance(epoch, bool)
        and len(str(epoch)) <= MAX_TIME_TEXT
    ):
        try:
            value = float(epoch)
        except ValueError:
            return None
        if value > EPOCH_MS_THRESHOLD:
            value /= 1000
        if 0 < value < 32503680000:  # before year 3000 (NaN and infinities fail both tests)
            return datetime.fromtimestamp(value, UTC)
    return None


def in_utc(when: datetime) -> datetime | None:
    """An aware time in UTC, or None when UTC cannot hold it (year 1 at +14:00, year 9999 at -14:00)."""
    try:
        return when.astimezone(UTC)
    except (OverflowError, ValueError):
        return None


class BatchSchema(_Base):
    """Up to 500 panel events; each is validated and answered on its own."""

    events = ma.fields.List(ma.fields.Raw(), required=True, validate=ma.validate.Length(min=1, max=MAX_BATCH))


class IntakeReceiptSchema(ma.Schema):
    """The answer to an accepted (202) or already-recorded (200, duplicate) event."""

    alarm_id = ma.fields.Integer(
        allow_none=True, metadata={"description": "null for events that open no alarm"}
    )
    event_id = ma.fields.Integer(required=True)
    duplicate = ma.fields.Boolean(required=True)


class BatchResultSchema(ma.Schema):
    """The answer to `events[index]` of a batch: the ids (202 recorded, 200 duplicate) or its own error."""

    index = ma.fields.Integer(required=True)
    status = ma.fields.Integer(
        required=True,
        validate=ma.validate.OneOf([200, 202, 403, 422, 500, 503]),
        metadata={
            "description": "202 recorded, 200 duplicate, 403/422 refused (do not resend as is), "
            "500/503 an error of ours (resend: an event that was recorded answers 200 duplicate)"
        },
    )
    alarm_id = ma.fields.Integer(allow_none=True)
    event_id = ma.fields.Integer()
    duplicate = ma.fields.Boolean()
    error = ma.fields.String()
    message = ma.fields.String()
    field_errors = field_messages()


class BatchReceiptSchema(ma.Schema):
    """The answer to a batch: `results[i]` answers `events[i]`."""

    results = ma.fields.List(ma.fields.Nested(BatchResultSchema), required=True)
