"""Alta Protect's alarm zones and alerts: detections, the merge window, late listing, bookmarks, verify, end.

The state behind the Alta simulator's API (`sandbox.alta`), kept apart from HTTP. Time is passed in
(the simulator clock's epoch seconds) and every time-dependent answer is computed from it when asked:
an alert is listed once `now >= listed_at`, a bookmark is shown once `now >= visible_at`. Nothing runs
in the background.

The rules (the reasons are in `sandbox.alta.app`'s docstring):

- A detection in a zone joins the zone's newest open alert when it comes within the zone's merge
  window (default 60 s) of that alert's `start_time` (inclusive); the alert then reads `merged: true`
  and keeps its first device as origin. Otherwise it opens a new alert, listed `listing_delay_s` later.
- Each detection in a zone with an External link action gets one bookmark of its device's video
  (`bookmark_pre_s` before to `bookmark_post_s` after the detection), shown `bookmark_delay_s` after the
  detection; its `guest_token` exists from the start (the `$url` of the webhook carries it).
- An alert that is not listed yet does not exist for the API either (404), as if Alta had not
  written it yet. Ended alerts leave `ongoingAlerts` but still answer verify, end and bookmarks.
"""

import secrets
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

NONE, VALID, FALSE = 101, 201, 202
ACKNOWLEDGMENT_CODES = {NONE: "None", VALID: "Valid", FALSE: "False"}  # code -> `$verification`


class UnknownAlertError(KeyError):
    """No alert with this guid is visible (never created, or not listed yet)."""


@dataclass(frozen=True, slots=True)
class Device:
    """A camera of a zone; the origin of detections."""

    id: str
    name: str
    group_id: str | None = None
    group_name: str | None = None


@dataclass(frozen=True, slots=True)
class AlarmZone:
    """One `[[alta.alarm_zones]]` entry."""

    id: str
    name: str
    site_id: str
    devices: tuple[Device, ...]
    site_name: str | None = None
    address: str | None = None
    description: str | None = None
    emergency_contact: str | None = None
    service_group_id: str | None = None
    service_group_name: str | None = None
    armed: bool = True
    external_link: bool = True
    thumbnail: bool = True
    detection: str = "Person"
    time_zone: ZoneInfo = field(default_factory=lambda: ZoneInfo("UTC"))
    merge_window_s: float = 60.0
    webhook: dict[str, Any] | None = None  # the zone's own webhook keys, over [alta.webhook]

    @classmethod
    def from_settings(cls, table: dict[str, Any], default_merge_window_s: float) -> "AlarmZone":
        """Parse one zone table.

        Raises:
            ValueError: a missing key or a bad value, naming the zone.
        """
        zone_id = str(table.get("id") or "")
        if not zone_id:
            raise ValueError("[[alta.alarm_zones]]: every zone needs an id")
        raw_devices = table.get("devices") or []
        devices = tuple(
            Device(
                id=str(raw["id"]),
                name=str(raw.get("name") or raw["id"]),
                group_id=_optional(raw.get("group_id")),
                group_name=_optional(raw.get("group_name")),
            )
            for raw in raw_devices
        )
        if not devices or len({device.id for device in devices}) != len(devices):
            raise ValueError(f"alarm zone {zone_id!r}: needs at least one device, each with its own id")
        zone_name = str(table.get("time_zone", "UTC"))
        try:
            time_zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"alarm zone {zone_id!r}: {zone_name!r} is not an IANA time zone") from None
        webhook = table.get("webhook")
        return cls(
            id=zone_id,
            name=str(table.get("name") or zone_id),
            site_id=str(table.get("site_id") or ""),
            devices=devices,
            site_name=_optional(table.get("site_name")),
            address=_optional(table.get("address")),
            description=_optional(table.get("description")),
            emergency_contact=_optional(table.get("emergency_contact")),
            service_group_id=_optional(table.get("service_group_id")),
            service_group_name=_optional(table.get("service_group_name")),
            armed=bool(table.get("armed", True)),
            external_link=bool(table.get("external_link", True)),
            thumbnail=bool(table.get("thumbnail", True)),
            detection=str(table.get("detection", "Person")),
            time_zone=time_zone,
            merge_window_s=float(table.get("merge_window_s", default_merge_window_s)),
            webhook=dict(webhook) if isinstance(webhook, dict) else None,
        )

    def device(self, device_id: str | None) -> Device | None:
        """The zone's device with this id; its first device when `device_id` is None."""
        if device_id is None:
            return self.devices[0]
        return next((device for device in self.devices if device.id == device_id), None)

    def to_json(self) -> dict[str, Any]:
        """The zone as `GET /api/v1/alarmZones` lists it."""
        return {
            "id": self.id,
            "name": self.name,
            "site_id": self.site_id,
            "site_name": self.site_name,
            "address": self.address,
            "armed": self.armed,
            "description": self.description,
            "emergency_contacts": [self.emergency_contact] if self.emergency_contact else [],
            "devices": [{"id": device.id, "name": device.name} for device in self.devices],
        }


@dataclass(frozen=True, slots=True)
class Timing:
    """When things show up after a detection (simulated seconds)."""

    listing_delay_s: float = 2.0
    bookmark_delay_s: float = 5.0
    bookmark_pre_s: float = 10.0
    bookmark_post_s: float = 20.0


@dataclass(slots=True)
class Bookmark:
    """A bookmark of one device's video around one detection, shareable by its guest token."""

    id: str
    guest_token: str
    device_id: str
    start_ms: int
    end_ms: int
    visible_at: float

    def to_json(self) -> dict[str, Any]:
        """The bookmark as `GET /api/v1/alerts/{guid}/bookmarks` lists it."""
        return {
            "id": self.id,
            "guest_token": self.guest_token,
            "device_id": self.device_id,
            "start": self.start_ms,
            "end": self.end_ms,
        }


@dataclass(slots=True)
class Alert:
    """One alert (alarm) of a zone."""

    guid: str
    zone: AlarmZone
    origin: Device
    start: float
    listed_at: float
    merged: bool = False
    acknowledgment_code: int = NONE
    ended_at: float | None = None
    detections: int = 1
    bookmarks: list[Bookmark] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The alert as `ongoingAlerts`, verify and end answer it (CONTRACTS Part A item 2)."""
        return {
            "guid": self.guid,
            "alarm_zone_id": self.zone.id,
            "merged": self.merged,
            "origin_name": self.origin.name,
            "origin_id": self.origin.id,
            "alarm_zone_name": self.zone.name,
            "acknowledgment_code": self.acknowledgment_code,
            "start_time": int(self.start * 1000),
            "site_id": self.zone.site_id,
        }

    def control_json(self, now: float) -> dict[str, Any]:
        """The alert with the simulator's internals, for `GET /_sandbox/alerts`."""
        return {
            **self.to_json(),
            "listed": now >= self.listed_at,
            "listed_at": int(self.listed_at * 1000),
            "ended_at": None if self.ended_at is None else int(self.ended_at * 1000),
            "detections": self.detections,
            "bookmarks": [
                {**bookmark.to_json(), "visible_at": int(bookmark.visible_at * 1000)}
                for bookmark in self.bookmarks
            ],
        }


@dataclass(frozen=True, slots=True)
class DetectionOutcome:
    """What one detection did: the alert it created or joined, and its bookmark (if any)."""

    alert: dict[str, Any]
    merged: bool
    listed_at: float
    bookmark: Bookmark | None
    verification: str


class AlertBook:
    """Every alert of the deployment; thread-safe; `reset()` forgets them all."""

    def __init__(self, zones: dict[str, AlarmZone], timing: Timing) -> None:
        self.zones = zones
        self.timing = timing
        self._lock = threading.Lock()
        self._alerts: list[Alert] = []

    def reset(self) -> None:
        """Forget every alert (the configured zones stay)."""
        with self._lock:
            self._alerts = []

    def detect(
        self,
        zone: AlarmZone,
        device: Device,
        at: float,
        *,
        listing_delay_s: float | None = None,
        bookmark_delay_s: float | None = None,
    ) -> DetectionOutcome:
        """Play one detection of `device` in `zone` at `at`: merge into the open alert or open one."""
        listing_delay = self.timing.listing_delay_s if listing_delay_s is None else listing_delay_s
        bookmark_delay = self.timing.bookmark_delay_s if bookmark_delay_s is None else bookmark_delay_s
        with self._lock:
            alert = self._mergeable(zone, at)
            merged = alert is not None
            if alert is None:
                alert = Alert(
                    guid=str(uuid.uuid4()), zone=zone, origin=device, start=at, listed_at=at + listing_delay
                )
                self._alerts.append(alert)
            else:
                alert.merged = True
                alert.detections += 1
            bookmark = None
            if zone.external_link:
                bookmark = Bookmark(
                    id=str(uuid.uuid4()),
                    guest_token=secrets.token_urlsafe(24),
                    device_id=device.id,
                    start_ms=int((at - self.timing.bookmark_pre_s) * 1000),
                    end_ms=int((at + self.timing.bookmark_post_s) * 1000),
                    visible_at=at + bookmark_delay,
                )
                alert.bookmarks.append(bookmark)
            return DetectionOutcome(
                alert=alert.to_json(),
                merged=merged,
                listed_at=alert.listed_at,
                bookmark=bookmark,
                verification=ACKNOWLEDGMENT_CODES[alert.acknowledgment_code],
            )

    def ongoing(self, now: float) -> list[dict[str, Any]]:
        """The listed alerts not ended, oldest first."""
        with self._lock:
            return [
                alert.to_json() for alert in self._alerts if alert.ended_at is None and now >= alert.listed_at
            ]

    def alert(self, guid: str, now: float) -> dict[str, Any]:
        """One visible alert, ongoing or ended."""
        with self._lock:
            return self._visible(guid, now).to_json()

    def verify(self, guid: str, code: int, now: float) -> dict[str, Any]:
        """Set the acknowledgment code; 202 (false) also ends the alert."""
        with self._lock:
            alert = self._visible(guid, now)
            alert.acknowledgment_code = code
            if code == FALSE and alert.ended_at is None:
                alert.ended_at = now
            return alert.to_json()

    def end(self, guid: str, now: float) -> dict[str, Any]:
        """End the alert; ending an ended alert changes nothing."""
        with self._lock:
            alert = self._visible(guid, now)
            if alert.ended_at is None:
                alert.ended_at = now
            return alert.to_json()

    def bookmarks(self, guid: str, now: float) -> list[dict[str, Any]]:
        """The alert's bookmarks whose delay has passed, oldest first."""
        with self._lock:
            alert = self._visible(guid, now)
            return [bookmark.to_json() for bookmark in alert.bookmarks if now >= bookmark.visible_at]

    def shared_bookmark(self, guest_token: str) -> tuple[Alert, Bookmark] | None:
        """The alert and bookmark a guest token opens (the token works from the detection on)."""
        with self._lock:
            for alert in self._alerts:
                for bookmark in alert.bookmarks:
                    if secrets.compare_digest(bookmark.guest_token, guest_token):
                        return alert, bookmark
        return None

    def snapshot(self, now: float) -> list[dict[str, Any]]:
        """Every alert with its internals, listed or not, ended or not, oldest first."""
        with self._lock:
            return [alert.control_json(now) for alert in self._alerts]

    def _mergeable(self, zone: AlarmZone, at: float) -> Alert | None:
        for alert in reversed(self._alerts):
            if alert.zone.id == zone.id and alert.ended_at is None:
                return alert if at - alert.start <= zone.merge_window_s else None
        return None

    def _visible(self, guid: str, now: float) -> Alert:
        for alert in self._alerts:
            if alert.guid == guid and now >= alert.listed_at:
                return alert
        raise UnknownAlertError(guid)


def _optional(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)
