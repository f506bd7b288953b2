"""The GovWorx CAD simulator over real HTTP (seed 003; CONTRACTS Part A item 16).

Every documented status (200, and the decided 400 / 401 / 403 / 415), the `id` refusal, the `sysId`
upsert, `convertFromUtc`, and seed 003's own example accepted as written.
"""

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from typing import Any

import pytest
import requests

from sandbox.cad import app as cad
from sandbox.config import load_config
from tests.contract.sandbox.conftest import ServeSimulator
from tests.contract.sandbox.harness import LiveSimulator

pytestmark = pytest.mark.contract

TOKEN = "sandbox-cad-token"
READONLY_TOKEN = "sandbox-cad-readonly-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
SPRING_ERROR_FIELDS = {"timestamp", "status", "error", "message", "path"}

# Seed 003's example values under the field names of its curl example (CONTRACTS Part B §5.2),
# exactly as written, including `location` as the number 123. The seed shows no example notes or
# responders, so they are left out here and tested separately.
SEED_003_EXAMPLE: dict[str, Any] = {
    "sysId": "INC-2026-001234",
    "number": "26-001234",
    "incidentType": "Medical Emergency - Cardiac Arrest",
    "incidentDate": "2026-01-06T10:25:00Z",
    "callTakerId": "CT-456",
    "closedAt": "2026-01-06T11:45:00Z",
    "caseNumber": "CR-2026-9876",
    "priority": "Priority 1",
    "callerNumber": "555-123-4567",
    "callerName": "John Smith",
    "agency": "CITY-FIRE-01",
    "agencyType": "Fire",
    "dispatchQueueAt": "2026-01-06T10:30:00Z",
    "disposition": "Transport to Hospital",
    "location": 123,
    "latitude": 40.7128,
    "longitude": -74.006,
    "callPosition": "Position-01",
    "callTakerName": "Jane Doe",
    "callSource": "E911",
    "initialIncidentType": "Chest Pain",
    "additionalContext": (
        "Caller reports patient experiencing chest pain and shortness of breath for 30 minutes"
    ),
    "responseArea": "Beat-3-Downtown",
    "radioChannel": "FIRE-TAC-1",
    "callReceivedTime": "2026-01-06T10:23:00Z",
    "callPickupTime": "2026-01-06T10:23:15Z",
    "callHangupTime": "2026-01-06T10:28:00Z",
    "relatedSysId": "INC-2026-001233",
}
# The default tenant zone is America/New_York: UTC-5 in January.
SEED_003_TIMES_IN_TENANT_ZONE = {
    "incidentDate": "2026-01-06T05:25:00",
    "closedAt": "2026-01-06T06:45:00",
    "dispatchQueueAt": "2026-01-06T05:30:00",
    "callReceivedTime": "2026-01-06T05:23:00",
    "callPickupTime": "2026-01-06T05:23:15",
    "callHangupTime": "2026-01-06T05:28:00",
}


def cad_config(**overrides: Any) -> dict[str, Any]:
    """The default configuration with some `[cad]` keys changed."""
    config = load_config()
    config["cad"] = {**config["cad"], **overrides}
    return config


@pytest.fixture
def govworx(serve_simulator: ServeSimulator) -> LiveSimulator:
    """The CAD simulator with the default configuration."""
    return serve_simulator(cad.create_app())


def upload(
    sim: LiveSimulator, body: Any, *, headers: dict[str, str] | None = None, **params: str
) -> requests.Response:
    return sim.request(
        "PUT", cad.INCIDENT_PATH, json=body, headers=AUTH if headers is None else headers, params=params
    )


def stored(sim: LiveSimulator) -> list[dict[str, Any]]:
    response = sim.request("GET", "/_sandbox/incidents")
    assert response.status_code == 200
    incidents: list[dict[str, Any]] = response.json()
    return incidents


def assert_spring_error(response: requests.Response, status: int, *mentions: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == SPRING_ERROR_FIELDS
    assert body["status"] == status
    assert body["path"] == cad.INCIDENT_PATH
    for mention in mentions:
        assert mention in body["message"]


def test_seed_example_is_accepted_as_written_and_every_field_comes_back(govworx: LiveSimulator) -> None:
    response = upload(govworx, SEED_003_EXAMPLE)

    assert response.status_code == 200  # seed 003: "OK"
    incident = response.json()
    assert isinstance(incident["id"], int)
    assert incident["createdAt"].endswith("Z")
    assert set(SEED_003_EXAMPLE) <= set(incident)
    for name, sent in SEED_003_EXAMPLE.items():
        expected = SEED_003_TIMES_IN_TENANT_ZONE.get(name, str(sent))
        assert incident[name] == expected, name
    assert stored(govworx) == [incident]


def test_notes_and_responders_are_validated_and_their_times_converted(govworx: LiveSimulator) -> None:
    body: dict[str, Any] = {
        "sysId": "INC-NOTES-1",
        "notes": [
            {"noteId": "N-1", "note": "Unit on scene", "noteBy": "CT-456", "noteAt": "2026-07-01T12:00:00Z"}
        ],
        "responders": [
            {
                "personnelId": "P-9",
                "personnelFirstName": "Sam",
                "personnelLastName": "Guard",
                "unitName": "GUARD-7",
                "dispatchedBy": "CT-456",
                "dispatchedAt": "2026-07-01T12:01:00Z",
                "enrouteAt": "2026-07-01T12:02:00Z",
                "arrivedAt": "2026-07-01T12:10:00Z",
                "clearedAt": "2026-07-01T12:40:00.250Z",
            }
        ],
    }
    incident = upload(govworx, body).json()

    assert incident["notes"] == [{**body["notes"][0], "noteAt": "2026-07-01T08:00:00"}]  # EDT, UTC-4
    responder = incident["responders"][0]
    assert responder["unitName"] == "GUARD-7"
    assert responder["dispatchedAt"] == "2026-07-01T08:01:00"
    assert responder["clearedAt"] == "2026-07-01T08:40:00.250"


def test_convert_from_utc_false_keeps_the_wall_clock_digits(govworx: LiveSimulator) -> None:
    body = {"sysId": "INC-LOCAL", "incidentDate": "2026-01-06T10:25:00Z", "closedAt": "2026-01-06T11:45:00"}
    incident = upload(govworx, body, convertFromUtc="false").json()
    assert incident["incidentDate"] == "2026-01-06T10:25:00"
    assert incident["closedAt"] == "2026-01-06T11:45:00"


def test_convert_from_utc_true_is_the_default_and_honours_explicit_offsets(govworx: LiveSimulator) -> None:
    naive = upload(govworx, {"sysId": "INC-A", "incidentDate": "2026-01-06T10:25:00"}).json()
    explicit = upload(
        govworx, {"sysId": "INC-B", "incidentDate": "2026-01-06T12:25:00+02:00"}, convertFromUtc="true"
    ).json()
    assert naive["incidentDate"] == "2026-01-06T05:25:00"  # read as UTC
    assert explicit["incidentDate"] == "2026-01-06T05:25:00"  # the same instant


def test_tenant_time_zone_comes_from_the_configuration(serve_simulator: ServeSimulator) -> None:
    sim = serve_simulator(cad.create_app(cad_config(tenant_time_zone="Europe/Paris")))
    incident = upload(sim, {"sysId": "INC-PARIS", "incidentDate": "2026-01-06T10:25:00Z"}).json()
    assert incident["incidentDate"] == "2026-01-06T11:25:00"


def test_call_times_fall_back_as_seed_003_describes(govworx: LiveSimulator) -> None:
    both_missing = upload(govworx, {"sysId": "F1", "incidentDate": "2026-01-06T10:25:00Z"}).json()
    assert both_missing["callReceivedTime"] == both_missing["callPickupTime"] == "2026-01-06T05:25:00"

    pickup_missing = upload(
        govworx,
        {"sysId": "F2", "incidentDate": "2026-01-06T10:25:00Z", "callReceivedTime": "2026-01-06T10:23:00Z"},
    ).json()
    assert pickup_missing["callPickupTime"] == "2026-01-06T05:23:00"

    received_missing = upload(
        govworx,
        {"sysId": "F3", "incidentDate": "2026-01-06T10:25:00Z", "callPickupTime": "2026-01-06T10:24:00Z"},
    ).json()
    assert received_missing["callReceivedTime"] is None  # only filled when both are missing
    assert received_missing["callPickupTime"] == "2026-01-06T05:24:00"


# --- authentication and permission ---------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": f"Basic {TOKEN}"},
        {"Authorization": "Bearer"},
    ],
    ids=["no-header", "unknown-token", "not-bearer", "empty-bearer"],
)
def test_missing_or_unknown_token_is_401(govworx: LiveSimulator, headers: dict[str, str]) -> None:
    response = upload(govworx, SEED_003_EXAMPLE, headers=headers)
    assert_spring_error(response, 401)
    assert response.headers["WWW-Authenticate"] == "Bearer"
    assert stored(govworx) == []


def test_the_authentication_header_of_govworx_auth_page_is_accepted(govworx: LiveSimulator) -> None:
    response = upload(govworx, SEED_003_EXAMPLE, headers={"Authentication": f"Bearer {TOKEN}"})
    assert response.status_code == 200


def test_token_without_manage_events_is_403(govworx: LiveSimulator) -> None:
    response = upload(govworx, SEED_003_EXAMPLE, headers={"Authorization": f"Bearer {READONLY_TOKEN}"})
    assert_spring_error(response, 403, "Manage Events")
    assert stored(govworx) == []


def test_the_token_never_reaches_the_journal(govworx: LiveSimulator) -> None:
    upload(govworx, SEED_003_EXAMPLE)
    assert TOKEN not in govworx.request("GET", "/_sandbox/journal").text
    assert govworx.journal()[0]["headers"]["Authorization"] == "Bearer ***"


# --- body validation -----------------------------------------------------------------------------


@pytest.mark.parametrize("id_value", [42, None, "INC-2026-001234"])
def test_a_body_carrying_id_is_400(govworx: LiveSimulator, id_value: Any) -> None:
    response = upload(govworx, {"id": id_value, **SEED_003_EXAMPLE})
    assert_spring_error(response, 400, "'id'", "sysId")
    assert stored(govworx) == []


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"sysId": None}, "sysId"),
        ({"sysId": "   "}, "sysId"),
        ({"number": {"value": 1}}, "number"),
        ({"priority": True}, "priority"),
        ({"incidentDate": "yesterday"}, "incidentDate"),
        ({"closedAt": 1767695100}, "closedAt"),
        ({"callHangupTime": "2026-01-06"}, "callHangupTime"),
        ({"latitude": "north"}, "latitude"),
        ({"latitude": 91}, "latitude"),
        ({"longitude": [1]}, "longitude"),
        ({"notes": {"note": "x"}}, "notes"),
        ({"notes": ["just text"]}, "notes[0]"),
        ({"notes": [{"noteAt": "soon"}]}, "notes[0].noteAt"),
        ({"responders": [{"unitName": ["A"]}]}, "responders[0].unitName"),
    ],
)
def test_missing_required_field_or_wrong_type_is_400_naming_the_field(
    govworx: LiveSimulator, change: dict[str, Any], named: str
) -> None:
    body = {**SEED_003_EXAMPLE, **change}
    if change.get("sysId", "") is None:
        del body["sysId"]
    assert_spring_error(upload(govworx, body), 400, named)
    assert stored(govworx) == []


def test_every_invalid_field_is_named_at_once(govworx: LiveSimulator) -> None:
    response = upload(govworx, {"latitude": "x", "incidentDate": "x"})
    assert_spring_error(response, 400, "sysId", "latitude", "incidentDate")


def test_numbers_in_text_fields_and_numeric_coordinate_strings_are_accepted(govworx: LiveSimulator) -> None:
    incident = upload(
        govworx, {"sysId": "INC-N", "callSource": 911, "latitude": " 40.5 ", "longitude": -74}
    ).json()
    assert (incident["callSource"], incident["latitude"], incident["longitude"]) == ("911", "40.5", "-74")


def test_unknown_fields_are_ignored(govworx: LiveSimulator) -> None:
    incident = upload(govworx, {"sysId": "INC-U", "favouriteColour": "red"}).json()
    assert "favouriteColour" not in incident


@pytest.mark.parametrize(
    ("kwargs", "status"),
    [
        ({"data": "{not json", "headers": {**AUTH, "Content-Type": "application/json"}}, 400),
        ({"json": [SEED_003_EXAMPLE], "headers": AUTH}, 400),
        (
            {"data": "sysId=INC-1", "headers": {**AUTH, "Content-Type": "application/x-www-form-urlencoded"}},
            415,
        ),
        ({"json": SEED_003_EXAMPLE, "headers": AUTH, "params": {"convertFromUtc": "maybe"}}, 400),
    ],
    ids=["invalid-json", "array-body", "form-body", "bad-convertFromUtc"],
)
def test_unreadable_requests_are_refused(govworx: LiveSimulator, kwargs: dict[str, Any], status: int) -> None:
    assert_spring_error(govworx.request("PUT", cad.INCIDENT_PATH, **kwargs), status)
    assert stored(govworx) == []


def test_other_methods_are_405_in_the_spring_shape(govworx: LiveSimulator) -> None:
    response = govworx.request("POST", cad.INCIDENT_PATH, json=SEED_003_EXAMPLE, headers=AUTH)
    assert_spring_error(response, 405)


# --- the sysId upsert ----------------------------------------------------------------------------


def test_a_second_put_of_a_sys_id_creates_nothing_and_changes_nothing(govworx: LiveSimulator) -> None:
    first = upload(govworx, SEED_003_EXAMPLE).json()
    changed = {**SEED_003_EXAMPLE, "disposition": "Cancelled", "priority": None}
    second = upload(govworx, changed)

    assert second.status_code == 200
    assert second.json() == first
    assert stored(govworx) == [first]


def test_with_the_switch_a_second_put_updates_the_one_incident(serve_simulator: ServeSimulator) -> None:
    sim = serve_simulator(cad.create_app(cad_config(update_on_reupload=True)))
    first = upload(sim, SEED_003_EXAMPLE).json()
    notes = [{"noteId": "N-2", "note": "Cancelled by caller"}]
    second = upload(
        sim, {**SEED_003_EXAMPLE, "disposition": "Cancelled", "priority": None, "notes": notes}
    ).json()

    assert second["id"] == first["id"]
    assert second["createdAt"] == first["createdAt"]
    assert second["disposition"] == "Cancelled"
    assert second["priority"] == "Priority 1"  # null means "not sent": the stored value stays
    assert second["notes"] == [{"noteId": "N-2", "note": "Cancelled by caller"}]
    assert stored(sim) == [second]


def test_concurrent_puts_of_one_sys_id_store_one_incident(govworx: LiveSimulator) -> None:
    def put(number: int) -> dict[str, Any]:
        with requests.Session() as session:
            response = session.request(
                "PUT",
                govworx.url(cad.INCIDENT_PATH),
                json={**SEED_003_EXAMPLE, "number": str(number)},
                headers=AUTH,
                timeout=5,
            )
        assert response.status_code == 200
        body: dict[str, Any] = response.json()
        return body

    with ThreadPoolExecutor(max_workers=8) as pool:
        answers = list(pool.map(put, range(8)))

    assert len({answer["id"] for answer in answers}) == 1
    assert len(stored(govworx)) == 1
    assert len(govworx.journal(method="PUT")) == 8


def test_the_listing_filters_by_sys_id(govworx: LiveSimulator) -> None:
    upload(govworx, {"sysId": "INC-1"})
    upload(govworx, {"sysId": "INC-2"})
    only = govworx.request("GET", "/_sandbox/incidents", params={"sysId": "INC-2"}).json()
    assert [incident["sysId"] for incident in only] == ["INC-2"]


# --- simulator core on the CAD -------------------------------------------------------------------


def test_injected_status_uses_the_spring_error_body(govworx: LiveSimulator) -> None:
    govworx.add_fault(method="PUT", path=cad.INCIDENT_PATH, status=503, headers={"Retry-After": "5"})
    response = upload(govworx, SEED_003_EXAMPLE)
    assert_spring_error(response, 503)
    assert response.headers["Retry-After"] == "5"
    assert upload(govworx, SEED_003_EXAMPLE).status_code == 200


def test_timeout_after_commit_stores_the_incident_once(govworx: LiveSimulator) -> None:
    govworx.add_fault(method="PUT", timeout_after_commit=True, hold_s=30)
    with pytest.raises(requests.ReadTimeout):
        govworx.request("PUT", cad.INCIDENT_PATH, json=SEED_003_EXAMPLE, headers=AUTH, timeout=(5, 0.5))
    retried = upload(govworx, SEED_003_EXAMPLE)  # the client's retry finds the same incident
    assert retried.status_code == 200
    assert [incident["id"] for incident in stored(govworx)] == [retried.json()["id"]]


def test_reset_reseeds_the_configured_incidents(serve_simulator: ServeSimulator) -> None:
    seed = {"sysId": "INC-SEED-1", "number": "26-000001", "incidentDate": "2026-01-05T08:00:00"}
    sim = serve_simulator(cad.create_app(cad_config(incidents=[seed], first_incident_id=500)))
    (seeded,) = stored(sim)
    assert (seeded["id"], seeded["incidentDate"]) == (500, "2026-01-05T08:00:00")  # stored as local time

    upload(sim, {"sysId": "INC-NEW"})
    assert upload(sim, {**seed, "number": "changed"}).json() == seeded  # a seed is an upload like any other
    sim.reset()

    assert stored(sim) == [seeded | {"createdAt": stored(sim)[0]["createdAt"]}]
    assert upload(sim, {"sysId": "INC-AFTER"}).json()["id"] == 501


def test_created_at_follows_the_simulated_clock(govworx: LiveSimulator) -> None:
    govworx.advance_clock(365 * 24 * 3600)
    clock_now = govworx.request("GET", "/_sandbox/clock").json()["now"]
    incident = upload(govworx, {"sysId": "INC-LATER"}).json()
    created_at = datetime.fromisoformat(incident["createdAt"])
    assert abs((created_at - datetime.fromisoformat(clock_now)).total_seconds()) < 60
