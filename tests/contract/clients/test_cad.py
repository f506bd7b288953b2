"""CadClient against the GovWorx CAD simulator over real loopback HTTP (seed 003; CONTRACTS Part A 16).

What the client sends (path, query, auth scheme, body without `id`, UTC times), what it reads back,
how each failure maps onto the error family, and that a retry after a lost answer never makes a
second incident.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fakeredis
import pytest
import requests

from config.settings import Settings
from sandbox.cad import create_app
from sandbox.config import load_config
from sandbox.server import serve_in_thread
from tests.contract.sandbox.harness import LiveSimulator
from vendors.cad.client import CadClient, CadIncident, IncidentNote, UploadedIncident, utc_text
from vendors.cad.settings import CadSettings
from workers.clients.base import USER_AGENT
from workers.clients.errors import UpstreamRejectedError, UpstreamUnavailableError

pytestmark = pytest.mark.contract

TOKEN = "sandbox-cad-token"
READONLY_TOKEN = "sandbox-cad-readonly-token"
PATH = "/api/v1/external/incident"
OPENED_AT = datetime(2026, 1, 6, 10, 25, tzinfo=UTC)


@pytest.fixture
def govworx() -> Iterator[LiveSimulator]:
    """The CAD simulator on a free port, with its default configuration (tenant: America/New_York)."""
    server = serve_in_thread(create_app(load_config()), port=0)
    with requests.Session() as http:
        yield LiveSimulator(server=server, http=http)
    server.stop()


def make_client(sim: LiveSimulator, token: str = TOKEN, read_timeout_s: float = 5.0) -> CadClient:
    return CadClient(sim.base_url, token, (2.0, read_timeout_s))


@pytest.fixture
def cad(govworx: LiveSimulator) -> Iterator[CadClient]:
    client = make_client(govworx)
    yield client
    client.session.close()


def make_incident(sys_id: str = "alarm-bridge-42", **overrides: Any) -> CadIncident:
    fields: dict[str, Any] = {
        "sys_id": sys_id,
        "number": "AB-42",
        "incident_type": "Fire Alarm",
        "initial_incident_type": "SIA FA",
        "incident_date": OPENED_AT,
        "call_received_time": OPENED_AT - timedelta(seconds=3),
        "priority": "Priority 1",
        "caller_name": "Newton residence",
        "caller_number": "+16175550118",
        "call_source": "Alarm Monitoring",
        "location": "48 Maple Ridge Rd, Newton, MA 02459, US",
        "latitude": 42.3168,
        "longitude": -71.2087,
        "additional_context": "alarm-bridge alarm 42: Fire Alarm at Newton residence",
        "notes": (
            IncidentNote("alarm-bridge-42-signal", "Signal: SIA FA, zone 3", "alarm-bridge", OPENED_AT),
        ),
    }
    fields.update(overrides)
    return CadIncident(**fields)


def incidents(sim: LiveSimulator) -> list[dict[str, Any]]:
    stored: list[dict[str, Any]] = sim.request("GET", "/_sandbox/incidents").json()
    return stored


def test_first_upload_creates_the_incident_and_returns_its_id(cad: CadClient, govworx: LiveSimulator) -> None:
    uploaded = cad.upload_incident(make_incident())

    assert isinstance(uploaded, UploadedIncident)
    assert uploaded.id == 1  # [cad] first_incident_id
    assert uploaded.sys_id == "alarm-bridge-42"
    assert uploaded.created_at is not None
    assert uploaded.created_at.tzinfo is not None
    [stored] = incidents(govworx)
    assert stored["sysId"] == "alarm-bridge-42"
    assert stored["incidentType"] == "Fire Alarm"
    assert stored["priority"] == "Priority 1"
    assert stored["latitude"] == "42.3168"
    assert stored["notes"][0]["note"] == "Signal: SIA FA, zone 3"


def test_upload_is_a_put_with_bearer_auth_convert_from_utc_and_no_id(
    cad: CadClient, govworx: LiveSimulator
) -> None:
    cad.upload_incident(make_incident())

    [entry] = govworx.journal()
    assert entry["method"] == "PUT"
    assert entry["path"] == PATH
    assert entry["query"] == {"convertFromUtc": ["true"]}
    assert entry["headers"]["Authorization"] == "Bearer ***"  # the simulator masks the secret
    assert entry["headers"]["User-Agent"] == USER_AGENT  # ours, not python-requests'
    body = entry["body"]
    assert "id" not in body
    assert body["sysId"] == "alarm-bridge-42"
    assert body["incidentDate"] == "2026-01-06T10:25:00Z"
    assert body["callReceivedTime"] == "2026-01-06T10:24:57Z"
    assert body["notes"] == [
        {
            "noteId": "alarm-bridge-42-signal",
            "note": "Signal: SIA FA, zone 3",
            "noteBy": "alarm-bridge",
            "noteAt": "2026-01-06T10:25:00Z",
        }
    ]


def test_the_token_goes_as_authorization_and_as_authentication_and_the_journal_masks_both(
    govworx: LiveSimulator,
) -> None:
    """GovWorx's auth page names the header ``Authentication``, its MCP page ``Authorization``
    (CONTRACTS Part B §5.1): the client sends both, and neither value is ever recorded."""
    sent: list[requests.structures.CaseInsensitiveDict[str]] = []
    session = requests.Session()
    session.hooks["response"].append(lambda response, *args, **kwargs: sent.append(response.request.headers))
    client = CadClient(govworx.base_url, TOKEN, (2.0, 5.0), session)

    client.upload_incident(make_incident())

    [headers] = sent
    assert headers["Authorization"] == f"Bearer {TOKEN}"
    assert headers["Authentication"] == f"Bearer {TOKEN}"
    [entry] = govworx.journal()
    assert entry["headers"]["Authorization"] == "Bearer ***"
    assert entry["headers"]["Authentication"] == "Bearer ***"
    assert TOKEN not in json.dumps(entry)
    session.close()


def test_times_are_sent_in_utc_whatever_their_zone_and_stored_in_tenant_time(
    cad: CadClient, govworx: LiveSimulator
) -> None:
    montreal = timezone(timedelta(hours=-5))
    cad.upload_incident(make_incident(incident_date=datetime(2026, 1, 6, 5, 25, tzinfo=montreal)))

    assert govworx.journal()[0]["body"]["incidentDate"] == "2026-01-06T10:25:00Z"
    # The tenant (America/New_York, UTC-5 in January) shows its own wall-clock time.
    assert incidents(govworx)[0]["incidentDate"] == "2026-01-06T05:25:00"


def test_naive_times_are_refused_before_anything_is_sent(cad: CadClient, govworx: LiveSimulator) -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        cad.upload_incident(make_incident(incident_date=datetime(2026, 1, 6, 10, 25)))  # noqa: DTZ001

    assert govworx.journal() == []


def test_absent_fields_are_left_out_so_the_cad_applies_its_call_time_fallback(
    cad: CadClient, govworx: LiveSimulator
) -> None:
    cad.upload_incident(CadIncident(sys_id="alarm-bridge-7", incident_date=OPENED_AT))

    assert govworx.journal()[0]["body"] == {"sysId": "alarm-bridge-7", "incidentDate": "2026-01-06T10:25:00Z"}
    [stored] = incidents(govworx)
    assert stored["callReceivedTime"] == stored["callPickupTime"] == "2026-01-06T05:25:00"


def test_a_repeated_upload_of_the_same_sys_id_returns_the_first_incident_unchanged(
    cad: CadClient, govworx: LiveSimulator
) -> None:
    first = cad.upload_incident(make_incident())
    again = cad.upload_incident(make_incident(incident_type="Something else"))

    assert again.id == first.id
    assert again.created_at == first.created_at
    [stored] = incidents(govworx)
    assert stored["incidentType"] == "Fire Alarm"


def test_retry_after_a_lost_answer_is_retryable_and_makes_exactly_one_incident(
    govworx: LiveSimulator,
) -> None:
    govworx.add_fault(method="PUT", path=PATH, timeout_after_commit=True, hold_s=10)
    impatient = make_client(govworx, read_timeout_s=0.5)

    # The PUT landed but its answer never came: idempotent (sysId), so "unavailable", not "unknown".
    with pytest.raises(UpstreamUnavailableError):
        impatient.upload_incident(make_incident())
    assert len(incidents(govworx)) == 1

    retried = impatient.upload_incident(make_incident())

    assert retried.id == 1
    assert [incident["sysId"] for incident in incidents(govworx)] == ["alarm-bridge-42"]
    impatient.session.close()


def test_a_dropped_connection_is_retryable(cad: CadClient, govworx: LiveSimulator) -> None:
    govworx.add_fault(method="PUT", path=PATH, drop=True)

    with pytest.raises(UpstreamUnavailableError):
        cad.upload_incident(make_incident())
    assert cad.upload_incident(make_incident()).id == 1


def test_503_is_unavailable_with_the_retry_after_it_gives(cad: CadClient, govworx: LiveSimulator) -> None:
    govworx.add_fault(method="PUT", path=PATH, status=503, headers={"Retry-After": "7"})

    with pytest.raises(UpstreamUnavailableError) as caught:
        cad.upload_incident(make_incident())

    assert caught.value.retry_after_s == 7
    assert incidents(govworx) == []


def test_429_is_unavailable_with_its_retry_after(cad: CadClient, govworx: LiveSimulator) -> None:
    govworx.add_fault(method="PUT", path=PATH, status=429, headers={"Retry-After": "30"})

    with pytest.raises(UpstreamUnavailableError) as caught:
        cad.upload_incident(make_incident())

    assert caught.value.retry_after_s == 30


def test_an_unknown_token_is_rejected_as_401(govworx: LiveSimulator) -> None:
    client = make_client(govworx, token="not-a-cad-token")

    with pytest.raises(UpstreamRejectedError) as caught:
        client.upload_incident(make_incident())

    assert caught.value.status == 401
    assert "CAD_TOKEN" in str(caught.value)
    assert "not-a-cad-token" not in str(caught.value)
    client.session.close()


def test_a_token_without_manage_events_is_rejected_as_403_naming_the_permission(
    govworx: LiveSimulator,
) -> None:
    client = make_client(govworx, token=READONLY_TOKEN)

    with pytest.raises(UpstreamRejectedError) as caught:
        client.upload_incident(make_incident())

    assert caught.value.status == 403
    assert "Manage Events" in str(caught.value)
    assert incidents(govworx) == []
    client.session.close()


def test_a_body_the_cad_refuses_is_rejected_as_400(cad: CadClient) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        cad.upload_incident(make_incident(latitude=123.0, longitude=0.0))

    assert caught.value.status == 400
    assert "latitude" in str(caught.value)


def test_an_unreachable_cad_is_unavailable() -> None:
    server = serve_in_thread(create_app(load_config()), port=0)
    base_url = server.base_url
    server.stop()  # nothing listens on that port any more
    client = CadClient(base_url, TOKEN, (2.0, 2.0))

    with pytest.raises(UpstreamUnavailableError):
        client.upload_incident(make_incident())
    client.session.close()


def test_from_settings_uses_the_cad_url_token_and_timeouts(govworx: LiveSimulator) -> None:
    settings = Settings(http_connect_timeout_s=1.5, http_read_timeout_s=4.0).with_vendor(
        CadSettings(base_url=govworx.base_url)
    )
    client = CadClient.from_settings(settings, fakeredis.FakeRedis())

    assert client.timeout == (1.5, 4.0)
    assert client.upload_incident(make_incident()).id == 1
    client.session.close()


def test_utc_text_keeps_milliseconds_only_when_present() -> None:
    assert utc_text(datetime(2026, 1, 6, 10, 25, tzinfo=UTC)) == "2026-01-06T10:25:00Z"
    assert utc_text(datetime(2026, 1, 6, 10, 25, 0, 250_000, tzinfo=UTC)) == "2026-01-06T10:25:00.250Z"


def test_an_answer_without_a_body_still_names_the_incident_by_sys_id() -> None:
    assert UploadedIncident.from_json(None, "alarm-bridge-9") == UploadedIncident(
        None, "alarm-bridge-9", None
    )
    assert UploadedIncident.from_json({"id": "12", "createdAt": "2026-01-06T10:25:00"}, "x") == (
        UploadedIncident(12, "x", datetime(2026, 1, 6, 10, 25, tzinfo=UTC))
    )
