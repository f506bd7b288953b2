"""What the Alta Video API answers, as typed values (seed 002; CONTRACTS Part A items 2-4, Part B §1.3-1.6).

Alta publishes no response schemas (its readme.io reference was not available), so parsing is lenient
where the docs are silent — unknown fields are ignored, missing optional ones become None — and strict
only where the bridge depends on a value: an alert without a ``guid`` or a bookmark without a
``guest_token`` is useless and skipped, and a body that is not the documented list raises TypeError,
which the client's decoder (``BaseClient._decode``) turns into a refusal.
"""

from __future__ import annotations

from dataclasses import dataclass

# acknowledgment_code values (seed 002 "Verify an ongoing alarm").
ACK_NONE = 101
ACK_VALID = 201
ACK_FALSE = 202
ACKNOWLEDGMENT_CODES = frozenset({ACK_NONE, ACK_VALID, ACK_FALSE})


@dataclass(frozen=True, slots=True)
class OngoingAlert:
    """One entry of ``GET /api/v1/ongoingAlerts`` (also the body verify and end answer with)."""

    guid: str
    alarm_zone_id: str
    merged: bool
    origin_name: str
    origin_id: str | None = None
    alarm_zone_name: str | None = None
    acknowledgment_code: int | None = None
    start_time_ms: int | None = None
    site_id: str | None = None

    @classmethod
    def from_json(cls, raw: object) -> OngoingAlert | None:
        """The alert, or None when the entry carries no guid (nothing could be done with it)."""
        if not isinstance(raw, dict) or not raw.get("guid"):
            return None
        return cls(
            guid=str(raw["guid"]),
            alarm_zone_id=_text(raw.get("alarm_zone_id")) or "",
            merged=raw.get("merged") is True,
            origin_name=_text(raw.get("origin_name")) or "",
            origin_id=_text(raw.get("origin_id")),
            alarm_zone_name=_text(raw.get("alarm_zone_name")),
            acknowledgment_code=_int(raw.get("acknowledgment_code")),
            start_time_ms=_int(raw.get("start_time")),
            site_id=_text(raw.get("site_id")),
        )


@dataclass(frozen=True, slots=True)
class Bookmark:
    """One entry of ``GET /api/v1/alerts/{guid}/bookmarks``: a stretch of video with its guest token."""

    guest_token: str
    id: str | None = None
    device_id: str | None = None
    start_ms: int | None = None
    end_ms: int | None = None

    @classmethod
    def from_json(cls, raw: object) -> Bookmark | None:
        """The bookmark, or None when it carries no guest token (it could not be shared)."""
        if not isinstance(raw, dict) or not raw.get("guest_token"):
            return None
        return cls(
            guest_token=str(raw["guest_token"]),
            id=_text(raw.get("id")),
            device_id=_text(raw.get("device_id")),
            start_ms=_int(raw.get("start")),
            end_ms=_int(raw.get("end")),
        )


@dataclass(frozen=True, slots=True)
class EndResult:
    """What ``POST /api/v1/alerts/{guid}/end`` did: ``known`` False when Alta answered 404 (no such
    alert, so nothing is left to end); ``alert`` is the ended alert when Alta sent it back."""

    guid: str
    known: bool
    alert: OngoingAlert | None = None


def parse_alerts(body: object) -> list[OngoingAlert]:
    """A bare array (Part A item 2) or ``{"alerts": [...]}`` (accepted too: the docs show neither).

    Raises:
        TypeError: the body is neither shape (Alta answered, but not with something we can read;
            retrying will not change that).
    """
    if isinstance(body, dict) and isinstance(body.get("alerts"), list):
        body = body["alerts"]
    if not isinstance(body, list):
        raise TypeError("ongoingAlerts: expected a JSON array of alerts")
    return [alert for alert in map(OngoingAlert.from_json, body) if alert is not None]


def parse_bookmarks(body: object) -> list[Bookmark]:
    """A bare array (Part A item 3), or ``{"bookmarks": [...]}`` by the same leniency as alerts.

    Raises:
        TypeError: the body is neither shape.
    """
    if isinstance(body, dict) and isinstance(body.get("bookmarks"), list):
        body = body["bookmarks"]
    if not isinstance(body, list):
        raise TypeError("bookmarks: expected a JSON array of bookmarks")
    return [bookmark for bookmark in map(Bookmark.from_json, body) if bookmark is not None]


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def _int(value: object) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value)
    if isinstance(value, str):
        try:
            return int(float(value))
        except ValueError:
            return None
    return None
