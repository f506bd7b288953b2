"""The RapidSOS simulator over real HTTP (seed 004; CONTRACTS Part A items 13-15, Part B §4).

The token flow (path variants, string `issued_at`/`expires_in`, expiry on the clock), every constraint
of seed 004's field table (one case per constraint, checked against the simulator's schema so none is
missed), 201 / 216 / 217 by the coverage map, `blocking: false`, 400 / 401 / 404 / 429, GET and PATCH,
the 12 h retention, faults, and seed 004's own example body accepted as written with every field of
its example response in the answer.
"""

import copy
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from sandbox.config import load_config
from sandbox.rapidsos import app as rapidsos
from sandbox.rapidsos.schema import ALERT_SCHEMA, ARRAY, OBJECT, Field
from sandbox.server import serve_in_thread
from tests.contract.sandbox.conftest import ServeSimulator
from tests.contract.sandbox.harness import LiveSimulator

pytestmark = pytest.mark.contract

CLIENT_ID = "sandbox-rapidsos-client"
CLIENT_SECRET = "sandbox-rapidsos-secret"
ALERTS = "/v1/alerts/"
TWELVE_HOURS_S = 12 * 3600

# Seed 004's "Example Request Body", exactly as written (zip_code and the contact's phone as numbers,
# country "USA").
SEED_004_EXAMPLE_BODY: dict[str, Any] = {
    "blocking": True,
    "callflow": "CentralStationABCFireAlarmFlow",
    "variables": {
        "event": {
            "source_id": "abc123",
            "incident_time": 1581110270622,
            "location": {
                "geodetic": {"latitude": 45.123, "longitude": -71.321, "uncertainty_radius": 7.5},
                "civic": {
                    "name": "RapidSOS HQ",
                    "street_1": "123 Main Street",
                    "street_2": "Apt. 626",
                    "city": "Los Angeles",
                    "state": "CA",
                    "country": "USA",
                    "zip_code": 11375,
                },
            },
            "emergency_type": "BURGLARY",
            "site_type": "RESIDENTIAL",
        },
        "alarm_description": "string",
        "zone_description": "string",
        "alarm_permit_number": "string",
        "visually_verified": True,
        "instructions": "string",
        "service_provider_name": "string",
        "site_phone": "string",
        "emergency_contacts": [
            {"name": "John Doe", "phone": 15555555555, "relationship": "Father", "language": "English"}
        ],
    },
}

# Seed 004's "Example Response Value", exactly as written.
SEED_004_EXAMPLE_RESPONSE: dict[str, Any] = {
    "source_id": "abc123",
    "incident_time": 1581110270622,
    "location": SEED_004_EXAMPLE_BODY["variables"]["event"]["location"],
    "status": {"name": "RECEIVED", "display_name": "Received"},
    "disposition": {"name": "DISPATCHED", "display_name": "Dispatched"},
    "last_updated_time": 1581110270622,
    "alert_id": "6e58d630-d28f-4623-ba01-3207b497a9ba",
    "sla_expiration_time": 1581110270922,
    "emergency_type": {"name": "BURGLARY", "display_name": "Burglary"},
    "site_type": {"name": "RESIDENTIAL", "display_name": "Residential"},
    "covering_psap": {"id": "NY_123", "name": "New York Police Department", "phone": 15555555555},
    "authorized_entity": {"id": "CS_123", "name": "Central Station ABC", "phone": 15555555555},
    "followers": ["41", "23"],
}

CIVIC_ONLY_EXAMPLE = {
    "civic": {
        "street_1": "1 Main Street",
        "city": "Springfield",
        "state": "NY",
        "country": "US",
        "zip_code": "02134",
    }
}


def rapidsos_config(**overrides: Any) -> dict[str, Any]:
    """The default configuration with some `[rapidsos]` keys changed."""
    config = load_config()
    config["rapidsos"] = {**config["rapidsos"], **overrides}
    return config


@pytest.fixture
def sim(serve_simulator: ServeSimulator) -> LiveSimulator:
    """The RapidSOS simulator with the default configuration."""
    return serve_simulator(rapidsos.create_app())


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[LiveSimulator]:
    """One unlimited simulator for the read-only validation table (a 400 stores nothing)."""
    app = rapidsos.create_app(rapidsos_config(rate_limit=0))
    with requests.Session() as session, serve_in_thread(app, port=0) as server:
        yield LiveSimulator(server=server, http=session, app=app)


@pytest.fixture(scope="module")
def shared_auth(shared_sim: LiveSimulator) -> dict[str, str]:
    return bearer(shared_sim)


def fetch_token(
    sim: LiveSimulator,
    path: str = "/oauth/token",
    client_id: str = CLIENT_ID,
    client_secret: str = CLIENT_SECRET,
) -> requests.Response:
    form = {"client_id": client_id, "client_secret": client_secret, "grant_type": "client_credentials"}
    return sim.request("POST", path, data=form)


def bearer(sim: LiveSimulator, **kwargs: str) -> dict[str, str]:
    response = fetch_token(sim, **kwargs)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def post_alert(sim: LiveSimulator, body: Any, auth: dict[str, str], path: str = ALERTS) -> requests.Response:
    return sim.request("POST", path, json=body, headers={**auth, "Accept": "application/json"})


def example_body(**event_changes: Any) -> dict[str, Any]:
    body = copy.deepcopy(SEED_004_EXAMPLE_BODY)
    body["variables"]["event"].update(event_changes)
    return body


def stored(sim: LiveSimulator) -> list[dict[str, Any]]:
    response = sim.request("GET", "/_sandbox/alerts")
    assert response.status_code == 200
    alerts: list[dict[str, Any]] = response.json()
    return alerts


def assert_error(response: requests.Response, status: int, *fields: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) == {"message", "errors"}
    assert isinstance(body["message"], str) and body["message"]
    for name in fields:
        assert name in body["errors"], (name, body)
    return body


def shape(value: Any) -> Any:
    """The keys of a JSON value, recursively (lists by their first item)."""
    if isinstance(value, dict):
        return {key: shape(item) for key, item in value.items()}
    if isinstance(value, list):
        return [shape(value[0])] if value else []
    return None


def clock_ms(sim: LiveSimulator) -> int:
    return int(sim.request("GET", "/_sandbox/clock").json()["time"] * 1000)


# --- seed 004's own example ---------------------------------------------------------------------


def test_seed_example_body_is_accepted_as_written_with_every_example_response_field(
    sim: LiveSimulator,
) -> None:
    before = clock_ms(sim)
    response = post_alert(sim, SEED_004_EXAMPLE_BODY, bearer(sim))
    after = clock_ms(sim)

    assert response.status_code == 201  # seed 004: "201 OK"
    alert = response.json()
    assert shape(alert) == shape(SEED_004_EXAMPLE_RESPONSE)
    assert list(alert) == list(SEED_004_EXAMPLE_RESPONSE)  # the example's field order
    for name in (
        "source_id",
        "incident_time",
        "location",
        "status",
        "disposition",
        "emergency_type",
        "site_type",
        "covering_psap",
        "authorized_entity",
        "followers",
    ):
        assert alert[name] == SEED_004_EXAMPLE_RESPONSE[name], name
    assert uuid.UUID(alert["alert_id"]).version == 4
    assert before <= alert["last_updated_time"] <= after
    assert alert["sla_expiration_time"] == alert["last_updated_time"] + 300_000
    (record,) = stored(sim)
    assert record["request"] == SEED_004_EXAMPLE_BODY
    assert record["alert"] == alert


# --- the token --------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/oauth/token", "/oauth/token/", "/OAUTH/TOKEN/", "/OAuth/Token"])
def test_token_is_issued_on_every_spelling_of_the_path(sim: LiveSimulator, path: str) -> None:
    before = clock_ms(sim)
    response = fetch_token(sim, path)
    after = clock_ms(sim)

    assert response.status_code == 200
    token = response.json()
    assert set(token) == {"access_token", "token_type", "issued_at", "expires_in"}
    assert token["token_type"] == "BearerToken"
    assert isinstance(token["issued_at"], str) and before <= int(token["issued_at"]) <= after  # ms
    assert token["expires_in"] == "3600"
    assert response.headers["Cache-Control"] == "no-store"
    assert post_alert(sim, SEED_004_EXAMPLE_BODY, {"Authorization": f"Bearer {token['access_token']}"}).ok
    assert sim.journal()[0]["path"] == path  # as the client wrote it


def test_the_client_secret_and_tokens_never_reach_the_journal(sim: LiveSimulator) -> None:
    auth = bearer(sim)
    post_alert(sim, SEED_004_EXAMPLE_BODY, auth)
    text = sim.request("GET", "/_sandbox/journal").text
    assert CLIENT_SECRET not in text
    assert auth["Authorization"].split()[1] not in text
    token_entry, alert_entry = sim.journal()
    assert "client_secret=***" in token_entry["body"]
    assert alert_entry["headers"]["Authorization"] == "Bearer ***"


@pytest.mark.parametrize(
    ("client_id", "client_secret"),
    [(CLIENT_ID, "wrong-secret"), ("unknown-client", CLIENT_SECRET)],
    ids=["wrong-secret", "unknown-client"],
)
def test_bad_client_credentials_are_401(sim: LiveSimulator, client_id: str, client_secret: str) -> None:
    response = fetch_token(sim, client_id=client_id, client_secret=client_secret)
    assert_error(response, 401)


@pytest.mark.parametrize(
    ("form", "named"),
    [
        ({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET}, "grant_type"),
        ({"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "password"}, "grant_type"),
        ({"client_secret": CLIENT_SECRET, "grant_type": "client_credentials"}, "client_id"),
        ({"client_id": CLIENT_ID, "grant_type": "client_credentials"}, "client_secret"),
    ],
    ids=["no-grant-type", "password-grant", "no-client-id", "no-client-secret"],
)
def test_incomplete_token_request_is_400_naming_the_field(
    sim: LiveSimulator, form: dict[str, str], named: str
) -> None:
    assert_error(sim.request("POST", "/oauth/token", data=form), 400, named)


def test_token_request_must_be_a_form(sim: LiveSimulator) -> None:
    body = {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET, "grant_type": "client_credentials"}
    assert_error(sim.request("POST", "/oauth/token", json=body), 400)


def test_token_path_answers_other_methods_with_405(sim: LiveSimulator) -> None:
    response = sim.request("GET", "/OAUTH/TOKEN/")
    assert_error(response, 405)
    assert response.headers["Allow"] == "POST"


def test_token_expires_after_its_ttl_on_the_clock(sim: LiveSimulator) -> None:
    auth = bearer(sim)
    sim.advance_clock(3599)
    assert post_alert(sim, SEED_004_EXAMPLE_BODY, auth).status_code == 201

    sim.advance_clock(1)
    response = post_alert(sim, SEED_004_EXAMPLE_BODY, auth)
    assert "expired" in assert_error(response, 401)["message"]
    assert len(stored(sim)) == 1

    assert post_alert(sim, SEED_004_EXAMPLE_BODY, bearer(sim)).status_code == 201  # a new token works


def test_token_ttl_comes_from_the_configuration(serve_simulator: ServeSimulator) -> None:
    sim = serve_simulator(rapidsos.create_app(rapidsos_config(token_ttl_s=60)))
    response = fetch_token(sim)
    assert response.json()["expires_in"] == "60"
    sim.advance_clock(60)
    auth = {"Authorization": f"Bearer {response.json()['access_token']}"}
    assert_error(post_alert(sim, SEED_004_EXAMPLE_BODY, auth), 401)


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-token"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {CLIENT_SECRET}"},
    ],
    ids=["no-header", "unknown-token", "empty-bearer", "basic"],
)
def test_missing_or_unknown_token_is_401(sim: LiveSimulator, headers: dict[str, str]) -> None:
    response = post_alert(sim, SEED_004_EXAMPLE_BODY, headers)
    assert_error(response, 401)
    assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert stored(sim) == []


def test_the_token_type_word_is_not_an_authorization_scheme(sim: LiveSimulator) -> None:
    token = bearer(sim)["Authorization"].split()[1]
    assert_error(post_alert(sim, SEED_004_EXAMPLE_BODY, {"Authorization": f"BearerToken {token}"}), 401)


# --- every constraint of seed 004's field table -----------------------------------------------------

DELETE = object()
E = "variables.event."
LOC = E + "location."
GEO = LOC + "geodetic."
CIV = LOC + "civic."
CONTACT = "variables.emergency_contacts[0]."

# (constraint class, field path, bad value or DELETE). One case per documented constraint; the classes
# are checked against the simulator's schema below so that no field's constraint goes untested.
CONSTRAINT_CASES: list[tuple[str, str, Any]] = [
    ("missing", "blocking", DELETE),
    ("wrong_type", "blocking", "true"),
    ("missing", "callflow", DELETE),
    ("too_short", "callflow", ""),
    ("wrong_type", "callflow", 42),
    ("missing", "variables", DELETE),
    ("wrong_type", "variables", "event"),
    ("missing", E.rstrip("."), DELETE),
    ("wrong_type", E.rstrip("."), []),
    ("missing", E + "source_id", DELETE),
    ("too_short", E + "source_id", ""),
    ("too_long", E + "source_id", "x" * 101),
    ("wrong_type", E + "source_id", 123),
    ("wrong_type", E + "source", 7),
    ("missing", E + "incident_time", DELETE),
    ("below", E + "incident_time", -1),
    ("wrong_type", E + "incident_time", "1581110270622"),
    ("wrong_type", E + "incident_time", 1581110270622.5),
    ("wrong_type", E + "incident_time", True),
    ("seconds", E + "incident_time", 1581110270),
    ("below", E + "dispatch_requested_time", -1),
    ("wrong_type", E + "dispatch_requested_time", "now"),
    ("seconds", E + "dispatch_requested_time", 1581110270),
    ("missing", LOC.rstrip("."), DELETE),
    ("wrong_type", LOC.rstrip("."), "123 Main Street"),
    ("one_of", LOC.rstrip("."), {}),
    ("wrong_type", GEO.rstrip("."), [45.1, -71.3]),
    ("missing", GEO + "latitude", DELETE),
    ("above", GEO + "latitude", 91),
    ("below", GEO + "latitude", -91),
    ("wrong_type", GEO + "latitude", "45.123"),
    ("missing", GEO + "longitude", DELETE),
    ("above", GEO + "longitude", 181),
    ("below", GEO + "longitude", -181),
    ("wrong_type", GEO + "longitude", None),
    ("below", GEO + "uncertainty_radius", -1.5),
    ("wrong_type", GEO + "uncertainty_radius", "7.5"),
    ("wrong_type", CIV.rstrip("."), "RapidSOS HQ"),
    ("too_short", CIV + "name", ""),
    ("too_long", CIV + "name", "n" * 201),
    ("wrong_type", CIV + "name", 1),
    ("missing", CIV + "street_1", DELETE),
    ("too_short", CIV + "street_1", ""),
    ("too_long", CIV + "street_1", "s" * 201),
    ("wrong_type", CIV + "street_1", 123),
    ("too_short", CIV + "street_2", ""),
    ("too_long", CIV + "street_2", "s" * 201),
    ("wrong_type", CIV + "street_2", 626),
    ("missing", CIV + "city", DELETE),
    ("too_short", CIV + "city", ""),
    ("too_long", CIV + "city", "c" * 31),
    ("wrong_type", CIV + "city", ["Los Angeles"]),
    ("missing", CIV + "state", DELETE),
    ("too_short", CIV + "state", "C"),
    ("too_long", CIV + "state", "CAL"),
    ("wrong_type", CIV + "state", 6),
    ("missing", CIV + "country", DELETE),
    ("too_short", CIV + "country", ""),
    ("too_long", CIV + "country", "U" * 31),
    ("wrong_type", CIV + "country", 840),
    ("missing", CIV + "zip_code", DELETE),
    ("too_short", CIV + "zip_code", "1137"),
    ("too_long", CIV + "zip_code", "113750"),
    ("too_short", CIV + "zip_code", 1137),
    ("too_long", CIV + "zip_code", 113750),
    ("wrong_type", CIV + "zip_code", "ABCDE"),
    ("wrong_type", CIV + "zip_code", 11375.0),
    ("missing", E + "emergency_type", DELETE),
    ("bad_enum", E + "emergency_type", "EARTHQUAKE"),
    ("bad_enum", E + "emergency_type", "burglary"),
    ("wrong_type", E + "emergency_type", 1),
    ("missing", E + "site_type", DELETE),
    ("bad_enum", E + "site_type", "OFFICE"),
    ("wrong_type", E + "site_type", ["RESIDENTIAL"]),
    ("wrong_type", "variables.alarm_description", 1),
    ("wrong_type", "variables.zone_description", 1),
    ("wrong_type", "variables.alarm_permit_number", 1234),
    ("wrong_type", "variables.visually_verified", "yes"),
    ("wrong_type", "variables.instructions", ["gate code 1234"]),
    ("wrong_type", "variables.service_provider_name", {"name": "ABC"}),
    ("wrong_type", "variables.site_phone", 15555555555),
    ("wrong_type", "variables.emergency_contacts", {"name": "John Doe"}),
    ("wrong_type", "variables.emergency_contacts[0]", "John Doe"),
    ("missing", CONTACT + "name", DELETE),
    ("wrong_type", CONTACT + "name", 1),
    ("missing", CONTACT + "phone", DELETE),
    ("wrong_type", CONTACT + "phone", "555-555-5555"),
    ("wrong_type", CONTACT + "phone", "+0155555555"),
    ("wrong_type", CONTACT + "phone", 1.5e10),
    ("wrong_type", CONTACT + "relationship", 1),
    ("wrong_type", CONTACT + "language", False),
    ("null", "variables.alarm_description", None),
    ("null", CIV + "street_2", None),
]


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for part in path.split("."):
        name, _, index = part.partition("[")
        steps.append(name)
        if index:
            steps.append(int(index.rstrip("]")))
    return steps


def with_value(body: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of `body` with the field at a dotted path (`a.b[0].c`) set to `value` or deleted."""
    changed = copy.deepcopy(body)
    *parents, last = _steps(path)
    target: Any = changed
    for step in parents:
        target = target[step]
    if value is DELETE:
        del target[last]
    else:
        target[last] = value
    return changed


@pytest.mark.parametrize(
    ("constraint", "path", "value"),
    CONSTRAINT_CASES,
    ids=[f"{path}-{constraint}-{index}" for index, (constraint, path, _) in enumerate(CONSTRAINT_CASES)],
)
def test_each_documented_constraint_is_a_400_naming_the_field(
    shared_sim: LiveSimulator, shared_auth: dict[str, str], constraint: str, path: str, value: Any
) -> None:
    response = post_alert(shared_sim, with_value(SEED_004_EXAMPLE_BODY, path, value), shared_auth)
    body = assert_error(response, 400, path)
    assert list(body["errors"]) == [path]  # only the field at fault


def _schema_constraints(fields: tuple[Field, ...], prefix: str = "") -> dict[str, set[str]]:
    """Each schema field's path and the constraint classes a test must cover for it."""
    found: dict[str, set[str]] = {}
    for spec in fields:
        path = f"{prefix}{spec.name}"
        classes = {"wrong_type"}
        if spec.required:
            classes.add("missing")
        if spec.min_length:
            classes.add("too_short")
        if spec.max_length is not None:
            classes.add("too_long")
        if spec.minimum is not None:
            classes.add("below")
        if spec.maximum is not None:
            classes.add("above")
        if spec.choices:
            classes.add("bad_enum")
        if spec.one_of:
            classes.add("one_of")
        if spec.ms_timestamp:
            classes.add("seconds")
        if spec.kind == "zip_code":
            classes |= {"too_short", "too_long"}
        found[path] = classes
        if spec.kind in (OBJECT, ARRAY):
            found.update(_schema_constraints(spec.fields, f"{path}."))
    return found


def test_the_constraint_table_covers_every_constraint_of_the_schema() -> None:
    covered: dict[str, set[str]] = {}
    for constraint, path, _ in CONSTRAINT_CASES:
        covered.setdefault(path.replace("[0]", ""), set()).add(constraint)
    missing = {
        path: sorted(classes - covered.get(path, set()))
        for path, classes in _schema_constraints(ALERT_SCHEMA).items()
        if classes - covered.get(path, set())
    }
    assert missing == {}


def test_every_invalid_field_is_named_at_once(shared_sim: LiveSimulator, shared_auth: dict[str, str]) -> None:
    body = with_value(SEED_004_EXAMPLE_BODY, GEO + "latitude", 91)
    body = with_value(body, E + "source_id", "")
    body = with_value(body, E + "emergency_type", "EARTHQUAKE")
    body = with_value(body, "blocking", DELETE)
    errors = assert_error(post_alert(shared_sim, body, shared_auth), 400)["errors"]
    assert set(errors) == {GEO + "latitude", E + "source_id", E + "emergency_type", "blocking"}


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (E + "source_id", "x" * 100),
        (E + "source_id", "a"),
        (GEO + "latitude", 90),
        (GEO + "latitude", -90),
        (GEO + "longitude", 180),
        (GEO + "longitude", -180),
        (GEO + "uncertainty_radius", -1),
        (GEO + "uncertainty_radius", 0),
        (CIV + "name", "n" * 200),
        (CIV + "street_1", "s" * 200),
        (CIV + "street_2", "s"),
        (CIV + "city", "c" * 30),
        (CIV + "country", "CA"),
        (CIV + "country", "U" * 30),
        (CIV + "zip_code", "02134"),
        (CIV + "zip_code", 11375),
        (CONTACT + "phone", "+15555555555"),
        (CONTACT + "phone", "15555555555"),
        (CONTACT + "phone", 15555555555),
        (E + "dispatch_requested_time", 1581110270622),
        (E + "source", "Acme Alarms"),
        ("blocking", False),
        ("variables.visually_verified", False),
        ("variables.emergency_contacts", []),
        (GEO + "uncertainty_radius", DELETE),
        (CIV + "name", DELETE),
        (CIV + "street_2", DELETE),
        (CONTACT + "relationship", DELETE),
        (CONTACT + "language", DELETE),
        ("variables.alarm_description", DELETE),
        ("variables.emergency_contacts", DELETE),
    ],
)
def test_values_at_the_documented_limits_and_omitted_optional_fields_are_accepted(
    shared_sim: LiveSimulator, shared_auth: dict[str, str], path: str, value: Any
) -> None:
    response = post_alert(shared_sim, with_value(SEED_004_EXAMPLE_BODY, path, value), shared_auth)
    assert response.status_code in (201, 216, 217), response.text  # valid; the coverage map decides which


@pytest.mark.parametrize(
    "location",
    [
        {"geodetic": {"latitude": 40.7128, "longitude": -74.006}},
        CIVIC_ONLY_EXAMPLE,
    ],
    ids=["geodetic-only", "civic-only"],
)
def test_either_geodetic_or_civic_alone_is_a_location(
    shared_sim: LiveSimulator, shared_auth: dict[str, str], location: dict[str, Any]
) -> None:
    response = post_alert(shared_sim, example_body(location=location), shared_auth)
    assert response.status_code == 201, response.text
    assert response.json()["location"] == location


def test_unknown_fields_are_accepted_and_stored(sim: LiveSimulator) -> None:
    body = with_value(SEED_004_EXAMPLE_BODY, "variables.patient_name", "Pat")
    assert post_alert(sim, body, bearer(sim)).status_code == 201
    assert stored(sim)[0]["request"]["variables"]["patient_name"] == "Pat"


@pytest.mark.parametrize(
    ("kwargs"),
    [
        {"data": "{not json", "headers": {"Content-Type": "application/json"}},
        {"json": [SEED_004_EXAMPLE_BODY]},
        {"data": "blocking=true", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
    ],
    ids=["malformed-json", "array-body", "form-body"],
)
def test_unreadable_alert_bodies_are_400(sim: LiveSimulator, kwargs: dict[str, Any]) -> None:
    auth = bearer(sim)
    kwargs = {**kwargs, "headers": {**kwargs.get("headers", {}), **auth}}
    assert_error(sim.request("POST", ALERTS, **kwargs), 400)
    assert stored(sim) == []


def test_the_sandbox_refuses_epoch_seconds_unless_configured_not_to(
    serve_simulator: ServeSimulator,
) -> None:
    sim = serve_simulator(rapidsos.create_app(rapidsos_config(min_timestamp_ms=0)))
    body = example_body(incident_time=0)
    assert post_alert(sim, body, bearer(sim)).status_code == 201


def test_configured_callflows_refuse_an_unknown_flow(serve_simulator: ServeSimulator) -> None:
    sim = serve_simulator(rapidsos.create_app(rapidsos_config(callflows=["AcmeFlow"])))
    auth = bearer(sim)
    assert_error(post_alert(sim, SEED_004_EXAMPLE_BODY, auth), 400, "callflow")
    assert post_alert(sim, {**SEED_004_EXAMPLE_BODY, "callflow": "AcmeFlow"}, auth).status_code == 201


# --- coverage: 201 / 216 / 217 ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "status", "psap_id"),
    [
        ({"geodetic": {"latitude": 40.7128, "longitude": -74.006}}, 201, "NY_123"),
        ({"civic": {**CIVIC_ONLY_EXAMPLE["civic"], "state": "CA"}}, 201, "CA_LAPD"),
        ({"civic": {**CIVIC_ONLY_EXAMPLE["civic"], "state": "tx"}}, 217, "TX_HCEC"),
        ({"geodetic": {"latitude": 29.76, "longitude": -95.37}}, 217, "TX_HCEC"),
        ({"civic": {**CIVIC_ONLY_EXAMPLE["civic"], "state": "WY"}}, 216, None),
        # geodetic takes precedence over civic: the point decides, not the state
        ({"geodetic": {"latitude": 0, "longitude": 0}, **CIVIC_ONLY_EXAMPLE}, 216, None),
    ],
    ids=["ny-point", "ca-state", "tx-state", "tx-point", "wy-state", "point-beats-state"],
)
def test_coverage_map_decides_201_216_217_and_each_creates_the_alert(
    sim: LiveSimulator, location: dict[str, Any], status: int, psap_id: str | None
) -> None:
    auth = bearer(sim)
    response = post_alert(sim, example_body(location=location), auth)

    assert response.status_code == status
    alert = response.json()
    assert shape({**alert, "covering_psap": None}) == shape(
        {**SEED_004_EXAMPLE_RESPONSE, "location": location, "covering_psap": None}
    )
    assert (alert["covering_psap"] or {}).get("id") == psap_id
    fetched = sim.request("GET", ALERTS + alert["alert_id"], headers=auth)
    assert fetched.status_code == 200
    assert fetched.json() == alert
    assert [record["http_status"] for record in stored(sim)] == [status]


def test_coverage_map_comes_from_the_configuration(serve_simulator: ServeSimulator) -> None:
    psaps = [
        {
            "id": "NZ_1",
            "name": "Chatham Islands",
            "phone": 6435550100,
            "mode": "supplemental",
            "boxes": [{"south": -45.0, "west": 170.0, "north": -40.0, "east": -175.0}],
        }
    ]
    sim = serve_simulator(rapidsos.create_app(rapidsos_config(psaps=psaps)))
    auth = bearer(sim)

    across = post_alert(
        sim, example_body(location={"geodetic": {"latitude": -44, "longitude": -176.5}}), auth
    )
    assert across.status_code == 217  # the box crosses the antimeridian
    assert across.json()["covering_psap"] == {"id": "NZ_1", "name": "Chatham Islands", "phone": 6435550100}
    assert post_alert(sim, SEED_004_EXAMPLE_BODY, auth).status_code == 216  # NY_123 is gone


def test_non_blocking_create_answers_201_with_source_id_and_status_only(sim: LiveSimulator) -> None:
    body = {
        **example_body(location={"civic": {**CIVIC_ONLY_EXAMPLE["civic"], "state": "WY"}}),
        "blocking": False,
    }
    response = post_alert(sim, body, bearer(sim))

    assert response.status_code == 201  # not 216: a non-blocking job reports nothing
    assert response.json() == {"source_id": "abc123", "status": {"name": "RECEIVED"}}
    (record,) = stored(sim)
    assert (record["blocking"], record["http_status"]) == (False, 216)
    assert record["alert"]["alert_id"]


def test_a_repeated_source_id_creates_a_second_alert(sim: LiveSimulator) -> None:
    auth = bearer(sim)
    first = post_alert(sim, SEED_004_EXAMPLE_BODY, auth).json()
    second = post_alert(sim, SEED_004_EXAMPLE_BODY, auth).json()
    assert first["alert_id"] != second["alert_id"]
    assert len(sim.request("GET", "/_sandbox/alerts", params={"source_id": "abc123"}).json()) == 2
    assert sim.request("GET", "/_sandbox/alerts", params={"source_id": "other"}).json() == []


def test_the_alerts_path_is_answered_without_the_trailing_slash(sim: LiveSimulator) -> None:
    assert post_alert(sim, SEED_004_EXAMPLE_BODY, bearer(sim), path="/v1/alerts").status_code == 201
    response = sim.request("GET", ALERTS)
    assert_error(response, 405)


# --- the rate limit ---------------------------------------------------------------------------------


def test_the_request_over_the_rate_is_429_until_the_window_moves(serve_simulator: ServeSimulator) -> None:
    sim = serve_simulator(rapidsos.create_app(rapidsos_config(rate_limit=3, rate_window_s=60)))
    auth = bearer(sim)
    created = post_alert(sim, SEED_004_EXAMPLE_BODY, auth).json()
    assert sim.request("GET", ALERTS + created["alert_id"], headers=auth).status_code == 200
    assert_error(post_alert(sim, {}, auth), 400)  # a 400 counts
    assert_error(post_alert(sim, SEED_004_EXAMPLE_BODY, {"Authorization": "Bearer x"}), 401)  # not counted

    limited = post_alert(sim, SEED_004_EXAMPLE_BODY, auth)
    assert_error(limited, 429)
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert_error(sim.request("GET", ALERTS + created["alert_id"], headers=auth), 429)
    assert len(stored(sim)) == 1

    sim.advance_clock(60)
    assert post_alert(sim, SEED_004_EXAMPLE_BODY, auth).status_code == 201


def test_each_client_has_its_own_rate_window(serve_simulator: ServeSimulator) -> None:
    clients = {
        **load_config()["rapidsos"]["clients"],
        "second-client": {"client_secret": "second-secret", "followers": []},
    }
    sim = serve_simulator(rapidsos.create_app(rapidsos_config(rate_limit=1, clients=clients)))
    first = bearer(sim)
    second = bearer(sim, client_id="second-client", client_secret="second-secret")
    assert post_alert(sim, SEED_004_EXAMPLE_BODY, first).status_code == 201
    assert_error(post_alert(sim, SEED_004_EXAMPLE_BODY, first), 429)
    alert = post_alert(sim, SEED_004_EXAMPLE_BODY, second).json()
    assert (alert["authorized_entity"], alert["followers"]) == ({}, [])


# --- GET and PATCH ----------------------------------------------------------------------------------


@pytest.fixture
def created(sim: LiveSimulator) -> tuple[dict[str, str], dict[str, Any]]:
    """A token and the alert created from seed 004's example."""
    auth = bearer(sim)
    response = post_alert(sim, SEED_004_EXAMPLE_BODY, auth)
    assert response.status_code == 201
    alert: dict[str, Any] = response.json()
    return auth, alert


def test_get_returns_the_alert_until_twelve_hours_have_passed(
    sim: LiveSimulator, created: tuple[dict[str, str], dict[str, Any]]
) -> None:
    _, alert = created
    sim.advance_clock(TWELVE_HOURS_S - 60)
    auth = bearer(sim)
    assert sim.request("GET", ALERTS + alert["alert_id"], headers=auth).json() == alert

    sim.advance_clock(60)
    assert_error(sim.request("GET", ALERTS + alert["alert_id"], headers=auth), 404)
    assert_error(
        sim.request("PATCH", ALERTS + alert["alert_id"], json={"status": "CANCELED"}, headers=auth), 404
    )
    assert stored(sim)[0]["expired"] is True


def test_get_of_an_unknown_alert_is_404(sim: LiveSimulator) -> None:
    assert_error(sim.request("GET", ALERTS + str(uuid.uuid4()), headers=bearer(sim)), 404)


def test_get_and_patch_need_a_valid_token(
    sim: LiveSimulator, created: tuple[dict[str, str], dict[str, Any]]
) -> None:
    _, alert = created
    assert_error(sim.request("GET", ALERTS + alert["alert_id"]), 401)
    assert_error(sim.request("PATCH", ALERTS + alert["alert_id"], json={"status": "CANCELED"}), 401)


def test_another_clients_alert_is_404(serve_simulator: ServeSimulator) -> None:
    clients = {
        **load_config()["rapidsos"]["clients"],
        "second-client": {"client_secret": "second-secret"},
    }
    sim = serve_simulator(rapidsos.create_app(rapidsos_config(clients=clients)))
    alert = post_alert(sim, SEED_004_EXAMPLE_BODY, bearer(sim)).json()
    other = bearer(sim, client_id="second-client", client_secret="second-secret")
    assert_error(sim.request("GET", ALERTS + alert["alert_id"], headers=other), 404)


def test_patch_cancel_answers_status_disposition_and_time(
    sim: LiveSimulator, created: tuple[dict[str, str], dict[str, Any]]
) -> None:
    auth, alert = created
    sim.advance_clock(30)
    response = sim.request("PATCH", ALERTS + alert["alert_id"], json={"status": "CANCELED"}, headers=auth)

    assert response.status_code == 200
    answer = response.json()
    assert answer == {
        "status": {"name": "CANCELED", "display_name": "Canceled"},
        "disposition": {"name": "CANCELED", "display_name": "Canceled"},
        "last_updated_time": answer["last_updated_time"],
    }
    assert answer["last_updated_time"] >= alert["last_updated_time"] + 30_000
    fetched = sim.request("GET", ALERTS + alert["alert_id"], headers=auth).json()
    assert (fetched["status"], fetched["last_updated_time"]) == (
        answer["status"],
        answer["last_updated_time"],
    )

    again = sim.request("PATCH", ALERTS + alert["alert_id"], json={"status": "CANCELED"}, headers=auth)
    assert again.status_code == 200  # a retried cancel succeeds
    assert again.json() == answer
    after = sim.request(
        "PATCH", ALERTS + alert["alert_id"], json={"status": "DISPATCH_REQUESTED"}, headers=auth
    )
    assert_error(after, 400, "status")


@pytest.mark.parametrize(
    ("status", "display"), [("DISPATCH_REQUESTED", "Dispatch Requested"), ("IGNORED", "Ignored")]
)
def test_patch_sets_the_other_partner_statuses(
    sim: LiveSimulator, created: tuple[dict[str, str], dict[str, Any]], status: str, display: str
) -> None:
    auth, alert = created
    answer = sim.request("PATCH", ALERTS + alert["alert_id"], json={"status": status}, headers=auth).json()
    assert answer["status"] == {"name": status, "display_name": display}
    assert answer["disposition"] == alert["disposition"]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"status": "ACCEPTED"}, "status"),
        ({"status": "canceled"}, "status"),
        ({"status": 1}, "status"),
        ({}, "status"),
        ({"status": "CANCELED", "disposition": "CANCELED"}, "disposition"),
    ],
    ids=["psap-status", "lower-case", "number", "missing", "disposition"],
)
def test_patch_with_an_invalid_status_is_400(
    sim: LiveSimulator, created: tuple[dict[str, str], dict[str, Any]], body: dict[str, Any], named: str
) -> None:
    auth, alert = created
    response = sim.request("PATCH", ALERTS + alert["alert_id"], json=body, headers=auth)
    assert_error(response, 400, named)
    assert sim.request("GET", ALERTS + alert["alert_id"], headers=auth).json() == alert


def test_patch_of_an_unknown_alert_is_404(sim: LiveSimulator) -> None:
    response = sim.request("PATCH", ALERTS + "nope", json={"status": "CANCELED"}, headers=bearer(sim))
    assert_error(response, 404)


# --- simulator core on RapidSOS ---------------------------------------------------------------------


def test_injected_status_uses_the_rapidsos_error_body(sim: LiveSimulator) -> None:
    auth = bearer(sim)
    sim.add_fault(method="POST", path="/v1/alerts", status=503, headers={"Retry-After": "5"})
    response = post_alert(sim, SEED_004_EXAMPLE_BODY, auth)
    assert_error(response, 503)
    assert response.headers["Retry-After"] == "5"
    sim.add_fault(method="POST", path="/v1/alerts", status=216)
    assert (
        assert_error(post_alert(sim, SEED_004_EXAMPLE_BODY, auth), 216)["message"] == "Unsupported Location"
    )
    assert stored(sim) == []
    assert post_alert(sim, SEED_004_EXAMPLE_BODY, auth).status_code == 201


def test_timeout_after_commit_creates_the_alert_the_client_never_hears_of(sim: LiveSimulator) -> None:
    auth = bearer(sim)
    sim.add_fault(method="POST", path="/v1/alerts", timeout_after_commit=True, hold_s=30)
    with pytest.raises(requests.ReadTimeout):
        sim.request("POST", ALERTS, json=SEED_004_EXAMPLE_BODY, headers=auth, timeout=(5, 0.5))
    assert len(stored(sim)) == 1


def test_a_dropped_connection_creates_nothing(sim: LiveSimulator) -> None:
    auth = bearer(sim)
    sim.add_fault(method="POST", path="/v1/alerts", drop=True)
    with pytest.raises(requests.ConnectionError):
        post_alert(sim, SEED_004_EXAMPLE_BODY, auth)
    assert stored(sim) == []


def test_reset_forgets_tokens_and_alerts(sim: LiveSimulator) -> None:
    auth = bearer(sim)
    post_alert(sim, SEED_004_EXAMPLE_BODY, auth)
    sim.reset()
    assert stored(sim) == []
    assert_error(post_alert(sim, SEED_004_EXAMPLE_BODY, auth), 401)
