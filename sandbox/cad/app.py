"""GovWorx CAD incident upload simulator (seed 003; CONTRACTS Part A item 16, Part B §5).

Vendor API: `PUT /api/v1/external/incident?convertFromUtc=true|false` with `Authorization: Bearer
<token>` (GovWorx's auth page writes `Authentication: Bearer <token>`; both are accepted). The token's
role needs 'Manage Events'. The body is the incident DTO of seed 003, keyed by `sysId`; `id` is refused.
Control extra: `GET /_sandbox/incidents[?sysId=]` lists the stored incidents (never two per `sysId`).

Choices the documents leave open, made here and nowhere else:

- Order of checks: authentication (401: no header, not Bearer, unknown token) → permission (403) →
  `convertFromUtc` (400 unless true/false/1/0/yes/no/on/off, Spring's boolean words; absent or empty =
  true) → media type (415 unless JSON) → body is a JSON object (400) → `id` present, even `null` (400)
  → field validation (400, every bad field named in `message`) → upsert (200).
- Errors are Spring Boot's `{timestamp, status, error, message, path}`; `timestamp` is the simulated
  UTC time with milliseconds and a `+00:00` offset, `path` the vendor path. A 401 also carries
  `WWW-Authenticate: Bearer`.
- Types. `sysId` is required and must not be blank. Text fields accept a string or a number (Jackson
  coerces scalars; seed 003's own example sends `location` as `123` and GovWorx shows `callSource` as
  `911`) and are stored as strings; booleans, objects and arrays are refused. `latitude`/`longitude`
  accept a number or a numeric string within ±90/±180 and are stored as strings, as GovWorx's read-back
  returns them. Times must be ISO 8601 strings with a date and a time; epoch numbers are refused.
  `notes` and `responders` must be arrays of objects with the fields of CONTRACTS §5.2. `null` means
  absent. Fields the DTO does not have are ignored and not stored (Jackson's default), except `id`.
- Times. With `convertFromUtc=true` a time without an offset is read as UTC, one with an offset as that
  instant; either is stored as the wall-clock time in the tenant zone (`[cad] tenant_time_zone`). With
  `false` the wall-clock digits are stored as written and any offset is dropped. Stored times are ISO
  local date-times without an offset (`2026-01-06T05:25:00`), milliseconds only when non-zero.
- Call times fallback (seed 003): a missing `callPickupTime` takes `callReceivedTime`, else
  `incidentDate`; a missing `callReceivedTime` takes `incidentDate` only when both were missing.
- A second PUT of a stored `sysId` creates nothing. By default it changes nothing either (seed 003:
  "will only upload incident once"); with `[cad] update_on_reupload = true` each non-null field it
  carries replaces the stored value (`notes`/`responders` are replaced whole, not appended) and the
  call-time fallback fills only what is still missing. The body is still authenticated and validated
  first, so an invalid re-upload is a 400, not a silent 200.
- Success is 200 with the stored incident: `id` (an integer counting up from `first_incident_id`),
  every DTO field in seed 003's order (`null` when absent), then `createdAt` (simulated UTC time with
  milliseconds and `Z`). The read-back's `event{id, number}` is not simulated.
"""

import copy
import threading
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask.typing import ResponseReturnValue

from sandbox.clock import Clock
from sandbox.simulator import current_state, make_simulator, reason_phrase

NAME = "cad"
INCIDENT_PATH = "/api/v1/external/incident"
MANAGE_EVENTS = "Manage Events"
STORE_KEY = "sandbox.cad"

# Field kinds, in the order of seed 003 (which is also the order of the stored incident).
TEXT, TIME, COORDINATE, NOTES, RESPONDERS = "text", "time", "coordinate", "notes", "responders"
INCIDENT_FIELDS: tuple[tuple[str, str], ...] = (
    ("sysId", TEXT),
    ("number", TEXT),
    ("incidentType", TEXT),
    ("incidentDate", TIME),
    ("callTakerId", TEXT),
    ("closedAt", TIME),
    ("caseNumber", TEXT),
    ("priority", TEXT),
    ("callerNumber", TEXT),
    ("callerName", TEXT),
    ("agency", TEXT),
    ("agencyType", TEXT),
    ("dispatchQueueAt", TIME),
    ("disposition", TEXT),
    ("location", TEXT),
    ("latitude", COORDINATE),
    ("longitude", COORDINATE),
    ("callPosition", TEXT),
    ("callTakerName", TEXT),
    ("callSource", TEXT),
    ("initialIncidentType", TEXT),
    ("additionalContext", TEXT),
    ("responseArea", TEXT),
    ("radioChannel", TEXT),
    ("callReceivedTime", TIME),
    ("callPickupTime", TIME),
    ("callHangupTime", TIME),
    ("notes", NOTES),
    ("responders", RESPONDERS),
    ("relatedSysId", TEXT),
)
NOTE_FIELDS: tuple[tuple[str, str], ...] = (
    ("noteId", TEXT),
    ("note", TEXT),
    ("noteBy", TEXT),
    ("noteAt", TIME),
)
RESPONDER_FIELDS: tuple[tuple[str, str], ...] = (
    ("personnelId", TEXT),
    ("personnelFirstName", TEXT),
    ("personnelLastName", TEXT),
    ("unitName", TEXT),
    ("dispatchedBy", TEXT),
    ("dispatchedAt", TIME),
    ("enrouteAt", TIME),
    ("arrivedAt", TIME),
    ("clearedAt", TIME),
)
_COORDINATE_LIMITS = {"latitude": 90.0, "longitude": 180.0}
_TRUE_WORDS = frozenset({"true", "1", "yes", "on", ""})
_FALSE_WORDS = frozenset({"false", "0", "no", "off"})


class CadError(Exception):
    """A request the CAD refuses; answered as a Spring error body by the blueprint's handler."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}


def spring_error_body(status: int, message: str) -> dict[str, Any]:
    """Spring Boot's default error body, the shape every CAD error (and injected status) takes."""
    return {
        "timestamp": current_state().clock.now().isoformat(timespec="milliseconds"),
        "status": status,
        "error": reason_phrase(status),
        "message": message,
        "path": request.path,
    }


class IncidentConverter:
    """Validates an incident DTO and turns it into the stored field values (times in tenant time)."""

    def __init__(self, zone: ZoneInfo) -> None:
        self.zone = zone

    def convert(self, body: dict[str, Any], *, convert_from_utc: bool) -> dict[str, Any]:
        """The provided (non-null) DTO fields, validated and normalised.

        Raises:
            CadError: 400 naming every invalid field.
        """
        errors: list[str] = []
        fields = self._convert_object(body, INCIDENT_FIELDS, "", convert_from_utc, errors)
        sys_id = fields.get("sysId")
        if sys_id is None or not sys_id.strip():
            errors.insert(0, "sysId: must not be blank")
        if errors:
            raise CadError(400, "Validation failed: " + "; ".join(errors))
        return fields

    def _convert_object(
        self,
        data: dict[str, Any],
        schema: tuple[tuple[str, str], ...],
        prefix: str,
        convert_from_utc: bool,
        errors: list[str],
    ) -> dict[str, Any]:
        converted: dict[str, Any] = {}
        for name, kind in schema:
            value = data.get(name)
            if value is None:
                continue
            label = f"{prefix}{name}"
            try:
                converted[name] = self._convert_value(value, kind, label, convert_from_utc, errors)
            except ValueError as exc:
                errors.append(f"{label}: {exc}")
        return converted

    def _convert_value(
        self, value: Any, kind: str, label: str, convert_from_utc: bool, errors: list[str]
    ) -> Any:
        if kind == TEXT:
            return _text(value)
        if kind == TIME:
            return self.local_time(value, convert_from_utc=convert_from_utc)
        if kind == COORDINATE:
            return _coordinate(value, _COORDINATE_LIMITS[label])
        item_schema = NOTE_FIELDS if kind == NOTES else RESPONDER_FIELDS
        if not isinstance(value, list):
            raise ValueError("must be an array")
        items = []
        for index, item in enumerate(value):
            if not isinstance(item, dict):
                errors.append(f"{label}[{index}]: must be an object")
                continue
            items.append(
                self._convert_object(item, item_schema, f"{label}[{index}].", convert_from_utc, errors)
            )
        return items

    def local_time(self, value: Any, *, convert_from_utc: bool) -> str:
        """An ISO date-time from the client as the tenant's wall-clock time (ISO, no offset)."""
        if not isinstance(value, str) or "T" not in value.upper():
            raise ValueError("must be an ISO 8601 date-time string, e.g. 2026-01-06T10:25:00Z")
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            raise ValueError(f"{value!r} is not an ISO 8601 date-time") from None
        if convert_from_utc:
            aware = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
            wall = aware.astimezone(self.zone).replace(tzinfo=None)
        else:
            wall = parsed.replace(tzinfo=None)
        return wall.isoformat(timespec="milliseconds" if wall.microsecond else "seconds")


class IncidentStore:
    """The tenant's incidents, one per `sysId`; thread-safe; reseeded by `reset()`."""

    def __init__(self, settings: dict[str, Any], clock: Clock) -> None:
        self._lock = threading.Lock()
        self._clock = clock
        self.update_on_reupload = bool(settings.get("update_on_reupload", False))
        self.first_id = int(settings.get("first_incident_id", 1))
        zone_name = str(settings.get("tenant_time_zone", "UTC"))
        try:
            zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"[cad] tenant_time_zone {zone_name!r} is not an IANA time zone") from None
        self.converter = IncidentConverter(zone)
        self._seed: list[dict[str, Any]] = list(settings.get("incidents", []))
        self._by_sys_id: dict[str, dict[str, Any]] = {}
        self._next_id = self.first_id
        self.reset()

    def reset(self) -> None:
        """Forget every upload and store the configured seed incidents again."""
        with self._lock:
            self._by_sys_id = {}
            self._next_id = self.first_id
        for raw in self._seed:
            try:
                fields = self.converter.convert(dict(raw), convert_from_utc=False)
            except CadError as exc:
                raise ValueError(f"invalid [[cad.incidents]] entry {raw!r}: {exc.message}") from None
            self.upload(fields)

    def upload(self, fields: dict[str, Any]) -> tuple[dict[str, Any], bool]:
        """Store an incident unless its `sysId` is known; return (the stored incident, created?)."""
        with self._lock:
            stored = self._by_sys_id.get(fields["sysId"])
            created = stored is None
            if stored is None:
                stored = {
                    "id": self._next_id,
                    **{name: None for name, _ in INCIDENT_FIELDS},
                    "createdAt": None,
                }
                stored.update(fields)
                stored["createdAt"] = _utc_timestamp(self._clock.now())
                self._next_id += 1
                self._by_sys_id[fields["sysId"]] = stored
            elif self.update_on_reupload:
                stored.update(fields)
            if created or self.update_on_reupload:
                _fill_call_times(stored)
            return copy.deepcopy(stored), created

    def incidents(self) -> list[dict[str, Any]]:
        """Every stored incident, in creation order."""
        with self._lock:
            return copy.deepcopy(sorted(self._by_sys_id.values(), key=lambda incident: incident["id"]))


bp = Blueprint("cad", __name__)


@bp.errorhandler(CadError)
def _answer_cad_error(exc: CadError) -> Response:
    return current_state().error_response(exc.status, exc.message, headers=exc.headers)


@bp.put(INCIDENT_PATH)
def upload_incident() -> ResponseReturnValue:
    """Seed 003 "Upload a new incident": create once per `sysId`, 200 with the stored incident."""
    state = current_state()
    _authorize(state.settings)
    convert_from_utc = _parse_convert_from_utc(request.args.get("convertFromUtc"))
    if not request.is_json:
        raise CadError(415, f"Content-Type '{request.content_type or ''}' is not supported")
    body = request.get_json(silent=True)
    if body is None:
        raise CadError(400, "Required request body is missing or is not valid JSON")
    if not isinstance(body, dict):
        raise CadError(400, "JSON parse error: the request body must be a JSON object (an incident)")
    if "id" in body:
        raise CadError(
            400,
            "Do not include the 'id' field in your request - "
            "use 'sysId' to identify incidents from your source system",
        )
    store = incident_store()
    fields = store.converter.convert(body, convert_from_utc=convert_from_utc)
    incident, _created = store.upload(fields)
    return jsonify(incident), 200


@bp.get("/_sandbox/incidents")
def list_incidents() -> ResponseReturnValue:
    """Control view: the stored incidents, optionally `?sysId=` only."""
    incidents = incident_store().incidents()
    sys_id = request.args.get("sysId")
    if sys_id is not None:
        incidents = [incident for incident in incidents if incident["sysId"] == sys_id]
    return jsonify(incidents)


def create_app(config: dict[str, Any] | None = None, clock: Clock | None = None) -> Flask:
    """The CAD simulator; `config` is the whole sandbox configuration (None = the default)."""
    app, state = make_simulator(NAME, error_body=spring_error_body, config=config, clock=clock)
    store = IncidentStore(state.settings, state.clock)
    state.on_reset(store.reset)
    app.extensions[STORE_KEY] = store
    app.register_blueprint(bp)
    return app


def incident_store(app: Flask | None = None) -> IncidentStore:
    """The CAD's incident store (of `app`, or of the app handling the current request)."""
    store: IncidentStore = (app or current_app).extensions[STORE_KEY]
    return store


def _authorize(settings: dict[str, Any]) -> None:
    header = request.headers.get("Authorization") or request.headers.get("Authentication")
    unauthorized = {"WWW-Authenticate": "Bearer"}
    if not header:
        raise CadError(401, "Full authentication is required to access this resource", unauthorized)
    scheme, _, token = header.strip().partition(" ")
    tokens: dict[str, list[str]] = settings.get("tokens", {})
    if scheme.lower() != "bearer" or token.strip() not in tokens:
        raise CadError(401, "Invalid bearer token", unauthorized)
    if MANAGE_EVENTS not in tokens[token.strip()]:
        raise CadError(403, f"Access Denied: the token's role lacks the '{MANAGE_EVENTS}' permission")


def _parse_convert_from_utc(raw: str | None) -> bool:
    if raw is None or raw.strip().lower() in _TRUE_WORDS:
        return True
    if raw.strip().lower() in _FALSE_WORDS:
        return False
    raise CadError(
        400, f"Failed to convert value of type 'java.lang.String' to required type 'boolean': {raw!r}"
    )


def _text(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a string")
    return value if isinstance(value, str) else str(value)


def _coordinate(value: Any, limit: float) -> str:
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        raise ValueError("must be a number (decimal degrees)")
    try:
        number = float(value)
    except ValueError:
        raise ValueError(f"{value!r} is not a number (decimal degrees)") from None
    if not -limit <= number <= limit:  # also rejects NaN
        raise ValueError(f"must be between -{limit:g} and {limit:g}")
    return value.strip() if isinstance(value, str) else str(value)


def _fill_call_times(incident: dict[str, Any]) -> None:
    """Seed 003's fallback for the call-audio times."""
    received, pickup, created_in_cad = (
        incident["callReceivedTime"],
        incident["callPickupTime"],
        incident["incidentDate"],
    )
    if received is None and pickup is None:
        incident["callReceivedTime"] = created_in_cad
    if pickup is None:
        incident["callPickupTime"] = received if received is not None else created_in_cad


def _utc_timestamp(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
