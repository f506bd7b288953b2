"""The Alta Protect zone webhook action: Alta's `$code` template rendered and POSTed to a receiver.

An alarm zone's Webhook action is text the customer writes, with Alta's body-text codes (`$alarmZoneId`,
`$deviceId`, `$time`, ...) put where the values should go (CONTRACTS Part B §1.8). When a detection
raises or joins an alert, the simulator renders the zone's template and sends it, synchronously and
once, to the configured URL: the way Alta Protect calls alarm-bridge's intake. What was sent and what
the receiver answered (or the connection error) comes back as a `Delivery`, and is journaled as an
outbound entry (`simulator` = `alta.outbound`, `path` = the absolute URL) with its secrets masked.

The choices made here (the codes' values are decided in `sandbox.alta.app`'s docstring):

- Codes are replaced textually, longest name first, so `$timeIso` is never read as `$time` + `Iso`;
  `$zoneName` and `$Dispatch` (the February 2025 names) are kept as aliases. A `$word` that is not a
  code stays as written. A code with no value becomes `missing_value` (`"N/A"` by default, as a
  third-party receiver saw Alta send; `""` is the other setting).
- With `json_escape = true` (the default) a value is escaped as the inside of a JSON string (quotes,
  backslashes, control characters), so a device named `Dock "B"` keeps a JSON template valid. Alta does
  not say whether it escapes; set it to false to send values raw.
- The request: `method` (POST) with `Content-Type` = `content_type` (application/json), the configured
  `headers` (e.g. `Authorization: Bearer <token>`), the URL as configured (a `?token=` stays in it), a
  `timeout_s` timeout, no redirects followed, no retries (Alta documents none), and no proxy from the
  environment (the simulator stands in for a cloud calling the URL directly).
"""

import base64
import json
import re
import struct
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import requests

from sandbox.alta.alerts import AlarmZone, DetectionOutcome, Device
from sandbox.journal import Journal, JournalEntry, mask_body, mask_headers, mask_query

OUTBOUND = "alta.outbound"

# Alta's body-text codes (June 2025 list, CONTRACTS Part B §1.8) and the older names kept as aliases.
TEMPLATE_CODES: tuple[str, ...] = (
    "address",
    "alarmZoneId",
    "alarmZoneName",
    "description",
    "detection",
    "deviceGroupId",
    "deviceGroupName",
    "deviceId",
    "deviceName",
    "deviceSiteId",
    "deviceSiteName",
    "dispatch",
    "emergencyContact",
    "jpg",
    "serviceGroupId",
    "serviceGroupName",
    "triggerPhase",
    "time",
    "timeIso",
    "timePretty",
    "url",
    "verification",
)
CODE_ALIASES = {"zoneName": "alarmZoneName", "Dispatch": "dispatch"}
_CODE = re.compile(r"\$(" + "|".join(sorted((*TEMPLATE_CODES, *CODE_ALIASES), key=len, reverse=True)) + ")")
TIME_UNITS = ("s", "ms")
RESPONSE_EXCERPT_CHARS = 2000

# CONTRACTS Part B §1.8: the template alarm-bridge publishes for customers to paste.
DEFAULT_TEMPLATE = """{
  "source": "alta",
  "alarmZoneId": "$alarmZoneId",
  "alarmZoneName": "$alarmZoneName",
  "deviceId": "$deviceId",
  "deviceName": "$deviceName",
  "siteId": "$deviceSiteId",
  "triggerPhase": "$triggerPhase",
  "detection": "$detection",
  "verification": "$verification",
  "timeIso": "$timeIso",
  "url": "$url"
}"""


@dataclass(frozen=True, slots=True)
class WebhookAction:
    """A zone's Webhook action, from `[alta.webhook]` with the zone's own `webhook` keys over it."""

    url: str
    method: str = "POST"
    headers: dict[str, str] = field(default_factory=dict)
    template: str = DEFAULT_TEMPLATE
    content_type: str = "application/json"
    time_unit: str = "s"
    missing_value: str = "N/A"
    json_escape: bool = True
    timeout_s: float = 5.0

    @classmethod
    def from_settings(cls, default: dict[str, Any], own: dict[str, Any] | None) -> "WebhookAction | None":
        """The action of one zone; None when it has no URL (the zone has no Webhook action).

        Raises:
            ValueError: a setting of the wrong type or value (named).
        """
        table = {**default, **(own or {})}
        url = str(table.get("url") or "")
        if not url:
            return None
        if urlsplit(url).scheme not in ("http", "https"):
            raise ValueError(f"webhook url {url!r} is not an http(s) URL")
        headers = table.get("headers", {})
        if not isinstance(headers, dict):
            raise ValueError("webhook headers must be a table of strings")
        time_unit = str(table.get("time_unit", "s"))
        if time_unit not in TIME_UNITS:
            raise ValueError(f"webhook time_unit must be one of {TIME_UNITS}, not {time_unit!r}")
        return cls(
            url=url,
            method=str(table.get("method", "POST")).upper(),
            headers={str(name): str(value) for name, value in headers.items()},
            template=str(table.get("template", DEFAULT_TEMPLATE)),
            content_type=str(table.get("content_type", "application/json")),
            time_unit=time_unit,
            missing_value=str(table.get("missing_value", "N/A")),
            json_escape=bool(table.get("json_escape", True)),
            timeout_s=float(table.get("timeout_s", 5.0)),
        )

    def render(self, values: dict[str, str | None]) -> str:
        """The template with every code replaced by its value (or `missing_value`)."""

        def substitute(match: re.Match[str]) -> str:
            name = CODE_ALIASES.get(match.group(1), match.group(1))
            value = values.get(name)
            if value is None or value == "":
                return self.missing_value
            return json.dumps(value, ensure_ascii=False)[1:-1] if self.json_escape else value

        return _CODE.sub(substitute, self.template)

    def epoch(self, at: float) -> str:
        """`$time`: Unix epoch of `at` in the configured unit, as an integer."""
        return str(int(at * 1000) if self.time_unit == "ms" else int(at))


@dataclass(frozen=True, slots=True)
class Delivery:
    """One webhook call: what was sent (secrets masked) and what came back."""

    at: datetime
    alarm_zone_id: str
    alert_guid: str
    method: str
    url: str
    headers: dict[str, str]
    body: str
    status: int | None
    response_body: str | None
    error: str | None

    def to_json(self) -> dict[str, Any]:
        """The delivery as the control API shows it."""
        return {
            "at": self.at.isoformat(),
            "alarm_zone_id": self.alarm_zone_id,
            "alert_guid": self.alert_guid,
            "method": self.method,
            "url": self.url,
            "headers": self.headers,
            "body": self.body,
            "status": self.status,
            "response_body": self.response_body,
            "error": self.error,
        }


def template_values(
    action: WebhookAction,
    zone: AlarmZone,
    device: Device,
    outcome: DetectionOutcome,
    at: float,
    *,
    link: str | None,
    detection: str | None = None,
    trigger_phase: str | None = None,
) -> dict[str, str | None]:
    """The value of every code for one detection (None = missing); see `sandbox.alta.app` for the choices."""
    moment = datetime.fromtimestamp(at, tz=UTC)
    return {
        "address": zone.address,
        "alarmZoneId": zone.id,
        "alarmZoneName": zone.name,
        "description": zone.description,
        "detection": detection or zone.detection,
        "deviceGroupId": device.group_id,
        "deviceGroupName": device.group_name,
        "deviceId": device.id,
        "deviceName": device.name,
        "deviceSiteId": zone.site_id or None,
        "deviceSiteName": zone.site_name,
        "dispatch": None,
        "emergencyContact": zone.emergency_contact,
        "jpg": THUMBNAIL_B64 if zone.thumbnail else None,
        "serviceGroupId": zone.service_group_id,
        "serviceGroupName": zone.service_group_name,
        "triggerPhase": trigger_phase or "Alarm",
        "time": action.epoch(at),
        "timeIso": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "timePretty": moment.astimezone(zone.time_zone).strftime("%A, %B %d, %Y %H:%M:%S %Z"),
        "url": link,
        "verification": outcome.verification,
    }


def _grey_jpeg() -> bytes:
    """An 8x8 mid-grey baseline JPEG assembled by hand: one block, DC difference 0, no AC terms."""

    def segment(marker: int, payload: bytes) -> bytes:
        return struct.pack(">BBH", 0xFF, marker, len(payload) + 2) + payload

    single_code = bytes([1] + [0] * 15) + b"\x00"  # one Huffman code, length 1, for symbol 0
    return b"".join(
        [
            b"\xff\xd8",
            segment(0xE0, b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"),
            segment(0xDB, b"\x00" + b"\x01" * 64),
            segment(0xC0, b"\x08\x00\x08\x00\x08\x01\x01\x11\x00"),
            segment(0xC4, b"\x00" + single_code),
            segment(0xC4, b"\x10" + single_code),
            segment(0xDA, b"\x01\x01\x00\x00\x3f\x00"),
            b"\x3f",  # DC category 0 ("0"), end of block ("0"), padded with ones
            b"\xff\xd9",
        ]
    )


THUMBNAIL_B64 = base64.b64encode(_grey_jpeg()).decode("ascii")


def target_url(configured: str, url: str | None = None, base_url: str | None = None) -> str:
    """The URL to call: `url` replaces the configured one whole; `base_url` only its scheme and host.

    `base_url` keeps the configured path and query (a `?token=` survives), which is how a test or
    `alarm-bridge dev` points the zones at a bridge on another port.
    """
    if url:
        return url
    if base_url:
        base = urlsplit(base_url)
        return urlunsplit(urlsplit(configured)._replace(scheme=base.scheme, netloc=base.netloc))
    return configured


def masked_url(url: str) -> str:
    """The URL with token-like query values masked, as it appears in the journal."""
    parts = urlsplit(url)
    masked = mask_query(parse_qsl(parts.query, keep_blank_values=True))
    pairs = [(key, value) for key, values in masked.items() for value in values]
    return urlunsplit(parts._replace(query=urlencode(pairs, safe="*")))


def deliver(
    action: WebhookAction,
    url: str,
    body: str,
    *,
    at: datetime,
    alarm_zone_id: str,
    alert_guid: str,
    journal: Journal,
) -> Delivery:
    """Send the rendered body to `url` once and journal the call as an outbound entry."""
    headers = {"Content-Type": action.content_type, **action.headers}
    status: int | None = None
    response_body: str | None = None
    error: str | None = None
    with requests.Session() as session:
        session.trust_env = False  # never through a proxy from the environment
        try:
            response = session.request(
                action.method,
                url,
                data=body.encode("utf-8"),
                headers=headers,
                timeout=action.timeout_s,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            error = f"{type(exc).__name__}: {exc}"
        else:
            status = response.status_code
            response_body = response.text[:RESPONSE_EXCERPT_CHARS]
    parts = urlsplit(url)
    query_pairs = parse_qsl(parts.query, keep_blank_values=True)
    journal.record(
        JournalEntry(
            at=at,
            simulator=OUTBOUND,
            method=action.method,
            path=urlunsplit(parts._replace(query="", fragment="")),
            query=mask_query(query_pairs),
            headers=mask_headers(headers.items()),
            body=mask_body(body.encode("utf-8"), action.content_type),
            status=status,
            fault=None,
        )
    )
    return Delivery(
        at=at,
        alarm_zone_id=alarm_zone_id,
        alert_guid=alert_guid,
        method=action.method,
        url=masked_url(url),
        headers=mask_headers(headers.items()),
        body=body,
        status=status,
        response_body=response_body,
        error=error,
    )
