"""The RapidSOS simulator's data: its `[rapidsos]` settings, coverage map, tokens, rate windows and alerts.

Kept apart from the routes in `sandbox/rapidsos/app.py` (whose docstring records every behaviour decided
here) so that the HTTP layer reads as the vendor's API and this module as the state behind it. Every
time-dependent answer (token expiry, the sliding rate window, the 12 h retention) is computed from the
simulator clock at the moment of the call; nothing runs in the background.
"""

import copy
import math
import secrets
import threading
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from sandbox.clock import Clock
from sandbox.rapidsos.schema import Errors

FULL, SUPPLEMENTAL = "full", "supplemental"
CREATED, UNSUPPORTED_LOCATION, SUPPLEMENTAL_ONLY = 201, 216, 217
PSAP_STATUS = {FULL: CREATED, SUPPLEMENTAL: SUPPLEMENTAL_ONLY}

PARTNER_STATUSES: tuple[str, ...] = ("CANCELED", "DISPATCH_REQUESTED", "IGNORED")
CANCELED = "CANCELED"
DISPLAY_NAMES: dict[str, str] = {
    # status
    "RECEIVED": "Received",
    "ACCEPTED": "Accepted",
    "DECLINED": "Declined",
    "DISPATCH_REQUESTED": "Dispatch Requested",
    "IGNORED": "Ignored",
    "CANCELED": "Canceled",
    # disposition
    "DISPATCHED": "Dispatched",
    "ENROUTE": "Enroute",
    "ON_SCENE": "On Scene",
    "PREEMPTED": "Preempted",
    "CLEARED_NO_REPORT": "Cleared No Report",
    "CLEARED_WITH_REPORT": "Cleared With Report",
    "CLOSED": "Closed",
    # emergency_type
    "BURGLARY": "Burglary",
    "HOLDUP": "Holdup",
    "SILENT_ALARM": "Silent Alarm",
    "CRASH": "Crash",
    "MEDICAL": "Medical",
    "FIRE": "Fire",
    "CO": "CO",
    "OTHER": "Other",
    # site_type
    "RESIDENTIAL": "Residential",
    "COMMERCIAL": "Commercial",
    "VEHICLE": "Vehicle",
    "PERSONAL": "Personal",
}


class RapidsosError(Exception):
    """A request the simulator refuses; answered as `{"message", "errors"}` by the app's handler."""

    def __init__(
        self,
        status: int,
        message: str,
        errors: Errors | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.errors = errors or {}
        self.headers = headers or {}


# --- configuration ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Client:
    """A tech partner application: its secret and the central station its alerts are authorized by."""

    client_id: str
    client_secret: str
    authorized_entity: dict[str, Any]
    followers: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Box:
    """A latitude/longitude rectangle; `west > east` crosses the antimeridian."""

    south: float
    west: float
    north: float
    east: float

    def contains(self, latitude: float, longitude: float) -> bool:
        """Whether the point lies inside (edges included)."""
        if not self.south <= latitude <= self.north:
            return False
        if self.west <= self.east:
            return self.west <= longitude <= self.east
        return longitude >= self.west or longitude <= self.east


@dataclass(frozen=True, slots=True)
class Psap:
    """A PSAP of the coverage map and how it takes RapidSOS alerts (`full` or `supplemental`)."""

    id: str
    name: str
    phone: Any
    mode: str
    states: frozenset[str]
    boxes: tuple[Box, ...]

    def covers(self, location: dict[str, Any]) -> bool:
        """Whether this PSAP covers a (validated) alert location: geodetic point first, else civic state."""
        geodetic = location.get("geodetic")
        if geodetic is not None:
            return any(box.contains(geodetic["latitude"], geodetic["longitude"]) for box in self.boxes)
        return str(location["civic"]["state"]).upper() in self.states

    def to_json(self) -> dict[str, Any]:
        """The `covering_psap` object of an AlertMetaDataResponse."""
        return {"id": self.id, "name": self.name, "phone": self.phone}


@dataclass(frozen=True, slots=True)
class Settings:
    """The `[rapidsos]` table, parsed and checked."""

    clients: dict[str, Client]
    psaps: tuple[Psap, ...]
    token_ttl_s: int = 3600
    alert_retention_s: float = 12 * 3600
    rate_limit: int = 60
    rate_window_s: float = 60
    sla_ms: int = 300_000
    initial_disposition: str = "DISPATCHED"
    min_timestamp_ms: int = 10**11
    callflows: tuple[str, ...] = ()

    @classmethod
    def from_table(cls, table: dict[str, Any]) -> "Settings":
        """Parse the `[rapidsos]` table; a malformed one is a ValueError naming the key."""
        try:
            clients = {
                client_id: Client(
                    client_id=client_id,
                    client_secret=str(raw["client_secret"]),
                    authorized_entity=dict(raw.get("authorized_entity", {})),
                    followers=tuple(str(item) for item in raw.get("followers", [])),
                )
                for client_id, raw in table.get("clients", {}).items()
            }
            psaps = tuple(_parse_psap(raw) for raw in table.get("psaps", []))
            return cls(
                clients=clients,
                psaps=psaps,
                token_ttl_s=int(table.get("token_ttl_s", 3600)),
                alert_retention_s=float(table.get("alert_retention_s", 12 * 3600)),
                rate_limit=int(table.get("rate_limit", 60)),
                rate_window_s=float(table.get("rate_window_s", 60)),
                sla_ms=int(table.get("sla_ms", 300_000)),
                initial_disposition=str(table.get("initial_disposition", "DISPATCHED")),
                min_timestamp_ms=int(table.get("min_timestamp_ms", 10**11)),
                callflows=tuple(str(name) for name in table.get("callflows", [])),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ValueError(f"invalid [rapidsos] configuration: {exc!r}") from None


def _parse_psap(raw: dict[str, Any]) -> Psap:
    mode = str(raw.get("mode", FULL))
    if mode not in PSAP_STATUS:
        raise ValueError(f"psap {raw.get('id')!r}: mode must be {FULL!r} or {SUPPLEMENTAL!r}")
    return Psap(
        id=str(raw["id"]),
        name=str(raw["name"]),
        phone=raw.get("phone"),
        mode=mode,
        states=frozenset(str(state).upper() for state in raw.get("states", [])),
        boxes=tuple(
            Box(float(box["south"]), float(box["west"]), float(box["north"]), float(box["east"]))
            for box in raw.get("boxes", [])
        ),
    )


# --- state -----------------------------------------------------------------------------------------


@dataclass(slots=True)
class AlertRecord:
    """One created alert: who sent it, what was sent, and the AlertMetaDataResponse as it stands."""

    alert_id: str
    client_id: str
    created_at: float  # simulated epoch seconds
    blocking: bool
    http_status: int
    request: dict[str, Any]
    alert: dict[str, Any]


@dataclass
class RapidsosStore:
    """Tokens, rate windows and alerts of the simulator; thread-safe; emptied by `reset()`."""

    settings: Settings
    clock: Clock
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _tokens: dict[str, tuple[str, float]] = field(default_factory=dict)  # token -> (client, issued s)
    _hits: dict[str, deque[float]] = field(default_factory=dict)
    _alerts: dict[str, AlertRecord] = field(default_factory=dict)

    def reset(self) -> None:
        """Forget every token, rate window and alert."""
        with self._lock:
            self._tokens.clear()
            self._hits.clear()
            self._alerts.clear()

    def issue_token(self, client_id: str) -> tuple[str, float]:
        """A new access token for the client and its issue time (simulated epoch seconds)."""
        token = secrets.token_urlsafe(21)
        issued_at = self.clock.time()
        with self._lock:
            self._tokens[token] = (client_id, issued_at)
        return token, issued_at

    def token_client(self, token: str) -> str:
        """The client a live token belongs to.

        Raises:
            RapidsosError: 401 for an unknown or expired token.
        """
        with self._lock:
            found = self._tokens.get(token)
        if found is None:
            raise unauthorized("Invalid access token")
        client_id, issued_at = found
        if self.clock.time() >= issued_at + self.settings.token_ttl_s:
            raise unauthorized("Access token expired")
        return client_id

    def count_request(self, client_id: str) -> None:
        """Count one request in the client's sliding window.

        Raises:
            RapidsosError: 429 with `Retry-After` when the window is full (the request is not counted).
        """
        limit, window = self.settings.rate_limit, self.settings.rate_window_s
        if limit <= 0:
            return
        now = self.clock.time()
        with self._lock:
            hits = self._hits.setdefault(client_id, deque())
            while hits and hits[0] <= now - window:
                hits.popleft()
            if len(hits) >= limit:
                retry_after = max(1, math.ceil(hits[0] + window - now))
                raise RapidsosError(
                    429,
                    f"Too Many Requests: at most {limit} requests per {window:g} s",
                    headers={"Retry-After": str(retry_after)},
                )
            hits.append(now)

    def add(self, record: AlertRecord) -> None:
        """Store a created alert."""
        with self._lock:
            self._alerts[record.alert_id] = record

    def live_alert(self, alert_id: str, client_id: str) -> AlertRecord:
        """The client's alert if it is still retained.

        Raises:
            RapidsosError: 404 for an unknown id, another client's alert, or one past its retention.
        """
        with self._lock:
            record = self._alerts.get(alert_id)
        if (
            record is None
            or record.client_id != client_id
            or self.clock.time() >= record.created_at + self.settings.alert_retention_s
        ):
            raise RapidsosError(404, f"Alert {alert_id} not found")
        return record

    def snapshot(self, record: AlertRecord) -> dict[str, Any]:
        """A copy of the alert's AlertMetaDataResponse as it stands (PATCH may change it meanwhile)."""
        with self._lock:
            return copy.deepcopy(record.alert)

    def update_status(self, record: AlertRecord, status: str) -> dict[str, Any]:
        """Apply a partner status change and return the PATCH answer.

        Raises:
            RapidsosError: 400 when the alert is already canceled and `status` is not CANCELED.
        """
        with self._lock:
            alert = record.alert
            current = alert["status"]["name"]
            if current == CANCELED and status != CANCELED:
                raise RapidsosError(
                    400,
                    f"Alert {record.alert_id} is CANCELED; its status cannot change to {status}",
                    {"status": ["the alert is already CANCELED"]},
                )
            if current != status:
                alert["status"] = named(status)
                if status == CANCELED:
                    alert["disposition"] = named(CANCELED)
                alert["last_updated_time"] = epoch_ms(self.clock.time())
            return {
                "status": copy.deepcopy(alert["status"]),
                "disposition": copy.deepcopy(alert["disposition"]),
                "last_updated_time": alert["last_updated_time"],
            }

    def records(self) -> list[AlertRecord]:
        """Every stored alert (expired ones too), oldest first."""
        with self._lock:
            return [copy.deepcopy(record) for record in self._alerts.values()]


def unauthorized(message: str) -> RapidsosError:
    """A 401 refusal of the access token, with the RFC 6750 challenge."""
    return RapidsosError(401, message, headers={"WWW-Authenticate": 'Bearer error="invalid_token"'})


def new_alert(settings: Settings, client: Client, body: dict[str, Any], now: float) -> AlertRecord:
    """The alert a validated body creates at `now`, routed by the coverage map (201 / 216 / 217)."""
    event = body["variables"]["event"]
    location = event["location"]
    psap = next((psap for psap in settings.psaps if psap.covers(location)), None)
    http_status = UNSUPPORTED_LOCATION if psap is None else PSAP_STATUS[psap.mode]
    alert_id = str(uuid.uuid4())
    now_ms = epoch_ms(now)
    alert = {
        "source_id": event["source_id"],
        "incident_time": event["incident_time"],
        "location": copy.deepcopy(location),
        "status": named("RECEIVED"),
        "disposition": named(settings.initial_disposition),
        "last_updated_time": now_ms,
        "alert_id": alert_id,
        "sla_expiration_time": now_ms + settings.sla_ms,
        "emergency_type": named(event["emergency_type"]),
        "site_type": named(event["site_type"]),
        "covering_psap": psap.to_json() if psap is not None else None,
        "authorized_entity": copy.deepcopy(client.authorized_entity),
        "followers": list(client.followers),
    }
    return AlertRecord(
        alert_id=alert_id,
        client_id=client.client_id,
        created_at=now,
        blocking=body["blocking"],
        http_status=http_status,
        request=copy.deepcopy(body),
        alert=alert,
    )


def named(name: str) -> dict[str, str]:
    """A `{name, display_name}` object (status, disposition, emergency_type, site_type)."""
    return {"name": name, "display_name": DISPLAY_NAMES.get(name, name.replace("_", " ").title())}


def epoch_ms(epoch_s: float) -> int:
    """Epoch seconds as the integer milliseconds RapidSOS uses."""
    return int(epoch_s * 1000)
