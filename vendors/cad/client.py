"""CadClient: upload an alarm as an incident to the GovWorx CAD (seed 003; CONTRACTS Part A 16, Part B §5).

GovWorx has one verb for us: ``PUT /api/v1/external/incident?convertFromUtc=true`` with a static
bearer token whose role holds 'Manage Events', sent under both header names GovWorx's pages use
(``govworx_bearer``). The upstream dedupes on ``sysId``: the first PUT of a
``sysId`` creates the incident and every later one changes nothing ("will only upload incident
once"). Two consequences shape this module:

- The PUT is idempotent, so a lost answer (read timeout, dropped connection) is merely "unavailable"
  and the retry is its own reconciliation: it answers with the incident the first attempt stored.
- A re-PUT cannot add to an incident, so the caller builds the COMPLETE incident before the first
  upload (``CadIncident``) and never plans a second upload to fill it in.

Times are sent in UTC with a ``Z`` and ``convertFromUtc=true``; the tenant converts them to its zone.
``id`` is never sent (GovWorx refuses it: ``sysId`` names the incident in the source system).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, Self

import redis
import requests

from config.settings import Settings
from vendors.cad.settings import CadSettings
from workers.clients import VendorClient
from workers.clients.base import BaseClient, excerpt, timeouts
from workers.clients.credentials import StaticCredential, bearer
from workers.clients.errors import UpstreamRejectedError

INCIDENT_PATH = "/api/v1/external/incident"


def govworx_bearer(token: str) -> dict[str, str]:
    """The token as ``Authorization: Bearer`` and as ``Authentication: Bearer``.

    GovWorx's auth page literally names the header ``Authentication: Bearer <TOKEN>``; its MCP page
    uses the standard ``Authorization`` (CONTRACTS Part B §5.1, Part A 16). Which one the real API
    reads is not documented, so both go out; each is masked in our logs and the simulator's journal.
    """
    return {**bearer(token), "Authentication": f"Bearer {token}"}


def utc_text(moment: datetime) -> str:
    """An aware time as GovWorx's UTC form (``2026-01-06T10:25:00Z``; milliseconds only when set).

    Raises:
        ValueError: ``moment`` is naive (its zone would be a guess, and the CAD would show it wrong).
    """
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ValueError("CAD times must be timezone-aware")
    utc = moment.astimezone(UTC)
    spec = "milliseconds" if utc.microsecond else "seconds"
    return utc.isoformat(timespec=spec).replace("+00:00", "Z")


@dataclass(frozen=True, slots=True)
class IncidentNote:
    """One entry of the incident's ``notes[]`` (seed 003: ``{noteId, note, noteBy, noteAt}``)."""

    note_id: str
    note: str
    note_by: str | None = None
    note_at: datetime | None = None

    def to_json(self) -> dict[str, object]:
        """The DTO object; absent values are left out rather than sent as null."""
        body: dict[str, object] = {"noteId": self.note_id, "note": self.note}
        if self.note_by is not None:
            body["noteBy"] = self.note_by
        if self.note_at is not None:
            body["noteAt"] = utc_text(self.note_at)
        return body


@dataclass(frozen=True, slots=True)
class CadIncident:
    """The incident DTO of seed 003, in the fields alarm-bridge can fill. ``sys_id`` is the dedupe key.

    Every time must be timezone-aware; it is sent in UTC. Fields left ``None`` are not sent, so the
    CAD applies its own fallbacks (``callPickupTime`` ← ``callReceivedTime`` ← ``incidentDate``).
    """

    sys_id: str
    number: str | None = None
    incident_type: str | None = None
    initial_incident_type: str | None = None
    incident_date: datetime | None = None
    call_received_time: datetime | None = None
    closed_at: datetime | None = None
    priority: str | None = None
    caller_name: str | None = None
    caller_number: str | None = None
    call_source: str | None = None
    location: str | None = None
    latitude: float | None = None
    longitude: float | None = None
    additional_context: str | None = None
    disposition: str | None = None
    related_sys_id: str | None = None
    notes: tuple[IncidentNote, ...] = ()

    def to_json(self) -> dict[str, object]:
        """The PUT body: camelCase DTO fields, UTC times with ``Z``, never an ``id``."""
        if not self.sys_id.strip():
            raise ValueError("sysId must not be blank")
        texts = {
            "sysId": self.sys_id,
            "number": self.number,
            "incidentType": self.incident_type,
            "initialIncidentType": self.initial_incident_type,
            "priority": self.priority,
            "callerName": self.caller_name,
            "callerNumber": self.caller_number,
            "callSource": self.call_source,
            "location": self.location,
            "additionalContext": self.additional_context,
            "disposition": self.disposition,
            "relatedSysId": self.related_sys_id,
        }
        times = {
            "incidentDate": self.incident_date,
            "callReceivedTime": self.call_received_time,
            "closedAt": self.closed_at,
        }
        body: dict[str, object] = {key: value for key, value in texts.items() if value is not None}
        body.update({key: utc_text(value) for key, value in times.items() if value is not None})
        if self.latitude is not None and self.longitude is not None:
            body["latitude"] = self.latitude
            body["longitude"] = self.longitude
        if self.notes:
            body["notes"] = [note.to_json() for note in self.notes]
        return body


@dataclass(frozen=True, slots=True)
class UploadedIncident:
    """What the CAD stored for a ``sysId``: its numeric ``id`` and creation time.

    Seed 003 documents the 200 as "OK" without a body; Part A 16 (and the simulator) answer with the
    stored incident. A body without an ``id`` leaves ``id``/``created_at`` as ``None``: the upload
    still happened, and ``sys_id`` names the incident.
    """

    id: int | None
    sys_id: str
    created_at: datetime | None

    @classmethod
    def from_json(cls, data: object, sys_id: str) -> UploadedIncident:
        """Read the stored incident leniently (numbers or strings; a missing or odd body)."""
        if not isinstance(data, dict):
            return cls(id=None, sys_id=sys_id, created_at=None)
        raw_id = data.get("id")
        try:
            incident_id = int(raw_id) if raw_id is not None and not isinstance(raw_id, bool) else None
        except (TypeError, ValueError):
            incident_id = None
        created_at: datetime | None = None
        raw_created = data.get("createdAt")
        if isinstance(raw_created, str):
            try:
                parsed = datetime.fromisoformat(raw_created.replace("Z", "+00:00"))
            except ValueError:
                parsed = None
            if parsed is not None:
                # GovWorx reads times without an offset as UTC (seed 003's default).
                created_at = parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)
        stored_sys_id = data.get("sysId")
        return cls(
            id=incident_id,
            sys_id=stored_sys_id if isinstance(stored_sys_id, str) and stored_sys_id else sys_id,
            created_at=created_at,
        )


class CadClient(BaseClient):
    """GovWorx CAD incident upload (seed 003): one idempotent PUT keyed by ``sysId``."""

    upstream = "cad"
    default_headers = {"Accept": "application/json"}

    def __init__(
        self,
        base_url: str,
        token: str,
        timeout: tuple[float, float],
        session: requests.Session | None = None,
    ) -> None:
        super().__init__(
            base_url, timeout, session, credential=StaticCredential(token, header=govworx_bearer)
        )

    @classmethod
    def from_settings(
        cls, settings: Settings, cache: redis.Redis, *, session: requests.Session | None = None
    ) -> Self:
        """The client for this deployment; the CAD token is static, so ``cache`` holds nothing of ours."""
        cad = settings.vendor(CadSettings)
        return cls(cad.base_url, cad.token, timeouts(settings), session)

    def upload_incident(self, incident: CadIncident) -> UploadedIncident:
        """Upload an incident (seed 003 "Upload Incident"; CONTRACTS Part A 16).

        The first PUT of ``incident.sys_id`` creates it; a repeat answers with the incident already
        stored and changes nothing, so this call may be retried freely after any failure.

        Raises:
            UpstreamRejectedError: 400 (the CAD refused the body), 401 (bad token), 403 (the token's
                role lacks 'Manage Events'), any other 4xx: permanent, a person must look.
            UpstreamUnavailableError: connect failure, timeout or dropped connection (the PUT may
                have landed; retrying is safe), 5xx or 429 (with ``retry_after_s`` when given).
        """
        response = self._authorized(
            "PUT",
            INCIDENT_PATH,
            idempotent=True,
            expected=(401, 403),
            params={"convertFromUtc": "true"},
            json=incident.to_json(),
        )
        if response.status_code == 401:
            raise UpstreamRejectedError(
                self.upstream, 401, f"CAD_TOKEN was refused (unknown or revoked): {excerpt(response)}"
            )
        if response.status_code == 403:
            raise UpstreamRejectedError(
                self.upstream,
                403,
                "CAD_TOKEN's role lacks the 'Manage Events' permission (GovWorx: Settings → Security "
                f"→ API Bearer Tokens): {excerpt(response)}",
            )
        # Seed 003 documents the 200 only as "OK": the body is read leniently.
        return self._decode(
            response, lambda body: UploadedIncident.from_json(body, incident.sys_id), optional=True
        )


# The registry finds each vendor's client under this name (workers.clients.Clients).
CLIENT: Final[VendorClient] = CadClient
