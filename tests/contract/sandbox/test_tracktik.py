"""The TrackTik simulator over real HTTP (seed 000; CONTRACTS Part A items 6-9, Part B §2).

The OAuth2 password and single-use refresh grants with expiry and the IP lockout; seed 000's alarm
accepted as written with every field of its example responses; each 422 naming its field; the list
filter a client uses to find its own alarm after an unknown outcome; attachments served back; the
per-minute rate limit; the core's faults in TrackTik's error shapes.
"""

import base64
import copy
import uuid
from datetime import datetime
from typing import Any

import pytest
import requests
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sandbox.config import load_config
from sandbox.server import build_apps, combined_app, serve_in_thread
from sandbox.tracktik import app as tracktik
from sandbox.tracktik.alarms import decode_base64_leniently
from tests.contract.sandbox.conftest import ServeSimulator
from tests.contract.sandbox.harness import LiveSimulator

pytestmark = pytest.mark.contract

CLIENT_ID = "sandbox-tracktik-client"
CLIENT_SECRET = "sandbox-tracktik-secret"
USERNAME = "alarm-bridge-api"
PASSWORD = "sandbox-tracktik-password"
EMPLOYEE_ID = 1002
TOKEN_FIELDS = {"token_type", "expires_in", "access_token", "refresh_token"}
LEAGUE_ERROR_FIELDS = {"error", "error_description", "message"}

# Seed 000's example request, exactly as written (its attachment data is truncated with " etc.").
SEED_000_JPEG = (
    "data:image/jpeg;base64,/9j/4AAQSkZJRgABAQEASABIAAD/4QCORXhpZgAATU0AKgAAAAgAAgESAAMAAAABAAEAAIdpAAQA etc."
)
SEED_000_REQUEST: dict[str, Any] = {
    "alarmConnectionCustomId": "ab-95367",
    "alarmTypeCode": "11111",
    "alarmOrganization": 687,
    "location": {
        "name": None,
        "addressLine1": "4200 Blvd Saint-Laurent",
        "addressLine2": None,
        "city": "Montréal",
        "state": "QC",
        "country": "CA",
        "postalCode": "H2W 2R2",
        "latitude": 45.518336643702625,
        "longitude": -73.58218751610286,
    },
    "triggeredOn": "2026-05-26T14:36:37+00:00",
    "registeredOn": "2026-05-26T14:36:37+00:00",
    "onSiteInformation": {
        "instructions": "Follow the instructions",
        "sensitiveInformation": None,
        "extraInformation": None,
        "sla": 110,
    },
    "notes": [{"comment": "string"}, {"comment": "string2"}],
    "attachments": [{"base64EncodedData": SEED_000_JPEG, "mimeType": "image/jpeg"}],
}
# Seed 000's example response to the POST, in its key order.
SEED_000_RESPONSE_KEYS = [
    "customId",
    "alarmConnectionCustomId",
    "alarmTypeCode",
    "alarmOrganization",
    "location",
    "triggeredOn",
    "registeredOn",
    "onSiteInformation",
    "alarmConnection",
    "dispatchTask",
    "status",
    "id",
]
SEED_000_ATTACHMENT_KEYS = ["url", "tag", "format", "name", "id", "uuid"]
SEED_000_NOTE_KEYS = ["comment", "createdBy", "createdOn", "type", "sentFrom", "id"]
# A real 1x1 PNG.
PNG_BASE64 = (
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="
)


def tracktik_config(**overrides: Any) -> dict[str, Any]:
    """The default configuration with some `[tracktik]` keys changed."""
    config = load_config()
    config["tracktik"] = {**config["tracktik"], **overrides}
    return config


@pytest.fixture
def portal(serve_simulator: ServeSimulator) -> LiveSimulator:
    """The TrackTik simulator with the default configuration."""
    return serve_simulator(tracktik.create_app())


def request_token(
    sim: LiveSimulator, headers: dict[str, str] | None = None, **form: str
) -> requests.Response:
    return sim.request("POST", tracktik.TOKEN_PATH, data=form, headers=headers)


def password_grant(sim: LiveSimulator, **overrides: str) -> requests.Response:
    form = {
        "grant_type": "password",
        "client_id": CLIENT_ID,
        "client_secret": CLIENT_SECRET,
        "username": USERNAME,
        "password": PASSWORD,
        "scope": "",
        **overrides,
    }
    return request_token(sim, None, **form)


def refresh_grant(sim: LiveSimulator, refresh_token: str) -> requests.Response:
    return request_token(
        sim,
        grant_type="refresh_token",
        client_id=CLIENT_ID,
        client_secret=CLIENT_SECRET,
        refresh_token=refresh_token,
    )


def login(sim: LiveSimulator) -> dict[str, str]:
    """A bearer header for the default user."""
    response = password_grant(sim)
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def create(sim: LiveSimulator, body: Any, headers: dict[str, str] | None = None) -> requests.Response:
    return sim.request("POST", tracktik.ALARMS_PATH, json=body, headers=headers or login(sim))


def minimal_alarm(**changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "alarmTypeCode": "INTRUSION",
        "alarmOrganization": 687,
        "location": {"addressLine1": "1 Main St"},
        "triggeredOn": "2026-07-01T12:00:00+00:00",
    }
    body.update(changes)
    return {key: value for key, value in body.items() if value is not ...}


def assert_league_error(response: requests.Response, status: int, error: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body: dict[str, Any] = response.json()
    assert set(body) >= LEAGUE_ERROR_FIELDS
    assert body["error"] == error
    assert body["message"] == body["error_description"]
    return body


def assert_field_error(response: requests.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    body = response.json()
    assert set(body) == {"message", "errors"}
    assert field in body["errors"], body
    assert body["errors"][field] and all(isinstance(message, str) for message in body["errors"][field])


def stored(sim: LiveSimulator) -> list[dict[str, Any]]:
    response = sim.request("GET", "/_sandbox/alarms")
    assert response.status_code == 200
    alarms: list[dict[str, Any]] = response.json()
    return alarms


# --- seed 000 ------------------------------------------------------------------------------------


def test_seed_example_is_accepted_as_written_with_every_field_of_its_response(portal: LiveSimulator) -> None:
    response = create(portal, SEED_000_REQUEST)

    assert response.status_code == 201, response.text
    alarm = response.json()
    assert list(alarm) == SEED_000_RESPONSE_KEYS
    for name in SEED_000_RESPONSE_KEYS[1:8]:
        assert alarm[name] == SEED_000_REQUEST[name], name
    assert alarm["alarmConnection"] is None  # "ab-95367" is no configured connection: not an error
    assert (alarm["id"], alarm["dispatchTask"], alarm["status"]) == (22, 683, "ACTIVE")
    assert uuid.UUID(alarm["customId"]).version == 7
    assert "notes" not in alarm and "attachments" not in alarm


def test_get_with_include_shows_notes_and_attachments_as_seed_000_does(portal: LiveSimulator) -> None:
    auth = login(portal)
    created = create(portal, SEED_000_REQUEST, auth).json()

    response = portal.request(
        "GET",
        f"{tracktik.ALARMS_PATH}/{created['id']}",
        params={"include": "notes,attachments"},
        headers=auth,
    )

    assert response.status_code == 200
    alarm = response.json()
    assert list(alarm) == [*SEED_000_RESPONSE_KEYS, "attachments", "notes"]
    assert {key: alarm[key] for key in SEED_000_RESPONSE_KEYS} == created
    (attachment,) = alarm["attachments"]
    assert list(attachment) == SEED_000_ATTACHMENT_KEYS
    assert (attachment["tag"], attachment["format"], attachment["name"], attachment["id"]) == (
        "ATTACHMENT_0",
        "jpeg",
        "frombase64.jpeg",
        14103,
    )
    assert uuid.UUID(attachment["uuid"]).version == 7
    assert [list(note) for note in alarm["notes"]] == [SEED_000_NOTE_KEYS] * 2
    assert [note["comment"] for note in alarm["notes"]] == ["string", "string2"]
    assert [note["id"] for note in alarm["notes"]] == [102443, 102444]
    for note in alarm["notes"]:
        assert (note["createdBy"], note["type"], note["sentFrom"]) == (EMPLOYEE_ID, "COMMENT", "")
        assert note["createdOn"].endswith("+00:00")


def test_without_include_the_get_leaves_the_relations_out(portal: LiveSimulator) -> None:
    auth = login(portal)
    created = create(portal, SEED_000_REQUEST, auth).json()
    plain = portal.request("GET", f"{tracktik.ALARMS_PATH}/{created['id']}", headers=auth).json()
    only_notes = portal.request(
        "GET", f"{tracktik.ALARMS_PATH}/{created['id']}", params={"include": "notes"}, headers=auth
    ).json()
    assert plain == created
    assert "notes" in only_notes and "attachments" not in only_notes


def test_an_attachment_is_served_back_at_its_url(portal: LiveSimulator) -> None:
    auth = login(portal)
    body = minimal_alarm(
        attachments=[
            {"base64EncodedData": f"data:image/png;base64,{PNG_BASE64}", "mimeType": "image/png"},
            {"base64EncodedData": SEED_000_JPEG, "mimeType": "image/jpeg"},
        ]
    )
    created = create(portal, body, auth).json()
    alarm = portal.request(
        "GET", f"{tracktik.ALARMS_PATH}/{created['id']}", params={"include": "attachments"}, headers=auth
    ).json()

    png, jpeg = alarm["attachments"]
    assert (png["tag"], png["format"], png["name"]) == ("ATTACHMENT_0", "png", "frombase64.png")
    assert png["url"].startswith(portal.base_url + "/rest/v1/media/")
    served = portal.http.get(png["url"], headers=auth, timeout=5)
    assert served.status_code == 200
    assert served.headers["Content-Type"] == "image/png"
    assert served.content == base64.b64decode(PNG_BASE64)
    served_jpeg = portal.http.get(jpeg["url"], headers=auth, timeout=5)
    assert served_jpeg.headers["Content-Type"] == "image/jpeg"
    assert served_jpeg.content == decode_base64_leniently(SEED_000_JPEG.partition(",")[2])
    assert served_jpeg.content.startswith(b"\xff\xd8\xff")


def test_media_needs_the_token_and_the_right_digest(portal: LiveSimulator) -> None:
    auth = login(portal)
    body = minimal_alarm(attachments=[{"base64EncodedData": f"data:image/png;base64,{PNG_BASE64}"}])
    alarm_id = create(portal, body, auth).json()["id"]
    url = portal.request(
        "GET", f"{tracktik.ALARMS_PATH}/{alarm_id}", params={"include": "attachments"}, headers=auth
    ).json()["attachments"][0]["url"]

    assert_league_error(portal.http.get(url, timeout=5), 401, "access_denied")
    wrong = portal.http.get(url[: url.rindex("/")] + "/" + "0" * 40, headers=auth, timeout=5)
    assert wrong.status_code == 404
    assert set(wrong.json()) == {"message"}


def test_attachment_urls_carry_the_mount_prefix_of_the_combined_server(http: requests.Session) -> None:
    with serve_in_thread(combined_app(build_apps(only=["tracktik"]))) as server:
        sim = LiveSimulator(server=server, http=http, prefix="/tracktik")
        auth = login(sim)
        body = minimal_alarm(attachments=[{"base64EncodedData": f"data:image/png;base64,{PNG_BASE64}"}])
        alarm_id = create(sim, body, auth).json()["id"]
        url = sim.request(
            "GET", f"{tracktik.ALARMS_PATH}/{alarm_id}", params={"include": "attachments"}, headers=auth
        ).json()["attachments"][0]["url"]
        assert url.startswith(f"{server.base_url}/tracktik/rest/v1/media/")
        assert http.get(url, headers=auth, timeout=5).content == base64.b64decode(PNG_BASE64)


def test_a_configured_connection_of_the_organization_is_linked(portal: LiveSimulator) -> None:
    auth = login(portal)
    in_687 = create(portal, minimal_alarm(alarmConnectionCustomId="alarm-bridge"), auth).json()
    in_688 = create(
        portal, minimal_alarm(alarmOrganization=688, alarmConnectionCustomId="alarm-bridge"), auth
    ).json()
    unknown = create(portal, minimal_alarm(alarmConnectionCustomId="nobody"), auth).json()
    absent = create(portal, minimal_alarm(), auth).json()

    assert in_687["alarmConnection"] == {"id": 41, "customId": "alarm-bridge"}
    assert in_688["alarmConnection"] == {"id": 42, "customId": "alarm-bridge"}
    assert (unknown["alarmConnection"], unknown["alarmConnectionCustomId"]) == (None, "nobody")
    assert (absent["alarmConnection"], absent["alarmConnectionCustomId"]) == (None, None)


def test_each_alarm_gets_new_ids_and_a_new_dispatch_task(portal: LiveSimulator) -> None:
    auth = login(portal)
    first = create(portal, minimal_alarm(), auth).json()
    second = create(portal, minimal_alarm(), auth).json()  # the same payload: no idempotency
    assert (second["id"], second["dispatchTask"]) == (first["id"] + 1, first["dispatchTask"] + 1)
    assert first["customId"] != second["customId"]
    assert len(stored(portal)) == 2


def test_optional_fields_default_and_times_are_stored_in_utc(portal: LiveSimulator) -> None:
    portal.advance_clock(3 * 24 * 3600)
    now = portal.request("GET", "/_sandbox/clock").json()["time"]
    alarm = create(portal, minimal_alarm(triggeredOn="2026-07-01T12:00:00.750+00:00")).json()

    assert alarm["triggeredOn"] == "2026-07-01T12:00:00+00:00"
    registered = alarm["registeredOn"]
    assert registered.endswith("+00:00")
    assert abs(datetime.fromisoformat(registered).timestamp() - now) < 60  # receipt time, simulated clock
    assert alarm["onSiteInformation"] == dict.fromkeys(
        ["instructions", "sensitiveInformation", "extraInformation", "sla"]
    )
    assert list(alarm["location"]) == list(SEED_000_REQUEST["location"])
    assert alarm["location"]["addressLine1"] == "1 Main St"
    assert alarm["location"]["latitude"] is None
    z_time = create(portal, minimal_alarm(triggeredOn="2026-07-01T12:00:00Z")).json()
    assert z_time["triggeredOn"] == "2026-07-01T12:00:00+00:00"


@pytest.mark.parametrize(
    "written", ["2026-07-01T12:00:00Z", "2026-07-01T12:00:00+00:00", "2026-07-01T12:00:00-00:00"]
)
def test_a_utc_time_is_accepted_however_its_zero_offset_is_written(
    portal: LiveSimulator, written: str
) -> None:
    response = create(portal, minimal_alarm(triggeredOn=written, registeredOn=written))
    assert response.status_code == 201, response.text
    assert response.json()["triggeredOn"] == response.json()["registeredOn"] == "2026-07-01T12:00:00+00:00"


def test_a_local_time_is_refused_naming_the_field_not_converted(portal: LiveSimulator) -> None:
    """Seed 000: trigger times "in UTC"; a client sending its local time must fail here, not in production."""
    response = create(portal, minimal_alarm(triggeredOn="2026-07-01T14:00:00+02:00"))
    assert_field_error(response, "triggeredOn")
    assert "not in UTC" in response.json()["errors"]["triggeredOn"][0]
    assert stored(portal) == []


def test_coordinates_alone_are_a_location(portal: LiveSimulator) -> None:
    body = minimal_alarm(location={"latitude": -90, "longitude": 180})
    assert create(portal, body).status_code == 201


# --- 422 -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"alarmOrganization": 999}, "alarmOrganization"),
        ({"alarmOrganization": "687"}, "alarmOrganization"),
        ({"alarmOrganization": ...}, "alarmOrganization"),
        ({"alarmOrganization": 688, "alarmTypeCode": "11111"}, "alarmTypeCode"),
        ({"alarmTypeCode": "NOT-A-CODE"}, "alarmTypeCode"),
        ({"alarmTypeCode": ...}, "alarmTypeCode"),
        ({"alarmTypeCode": 11111}, "alarmTypeCode"),
        ({"alarmConnectionCustomId": 95367}, "alarmConnectionCustomId"),
        ({"location": ...}, "location"),
        ({"location": "4200 Blvd Saint-Laurent"}, "location"),
        ({"location": {"city": "Montréal"}}, "location"),
        ({"location": {"latitude": 45.5}}, "location"),
        ({"location": {"addressLine1": "1 Main St", "latitude": 91, "longitude": 0}}, "location.latitude"),
        ({"location": {"addressLine1": "1 Main St", "latitude": 0, "longitude": -181}}, "location.longitude"),
        ({"location": {"addressLine1": "1 Main St", "latitude": "45.5"}}, "location.latitude"),
        ({"location": {"addressLine1": "1 Main St", "country": "Canada"}}, "location.country"),
        ({"location": {"addressLine1": 4200}}, "location.addressLine1"),
        ({"triggeredOn": ...}, "triggeredOn"),
        ({"triggeredOn": "2026-05-26T14:36:37"}, "triggeredOn"),
        ({"triggeredOn": "2026-05-26"}, "triggeredOn"),
        ({"triggeredOn": "yesterday"}, "triggeredOn"),
        ({"triggeredOn": 1779806197}, "triggeredOn"),
        ({"registeredOn": "2026-05-26T14:36:37"}, "registeredOn"),
        ({"triggeredOn": "2026-05-26T16:36:37+02:00"}, "triggeredOn"),
        ({"triggeredOn": "2026-05-26T09:36:37-05:00"}, "triggeredOn"),
        ({"registeredOn": "2026-05-26T16:36:39+02:00"}, "registeredOn"),
        ({"onSiteInformation": {"sla": -1}}, "onSiteInformation.sla"),
        ({"onSiteInformation": {"sla": "110"}}, "onSiteInformation.sla"),
        ({"onSiteInformation": {"instructions": ["a"]}}, "onSiteInformation.instructions"),
        ({"onSiteInformation": "call the police"}, "onSiteInformation"),
        ({"notes": {"comment": "x"}}, "notes"),
        ({"notes": [{"comment": "ok"}, {}]}, "notes.1.comment"),
        ({"notes": [{"comment": "   "}]}, "notes.0.comment"),
        ({"notes": ["plain text"]}, "notes.0"),
    ],
)
def test_an_invalid_alarm_is_422_naming_the_field(
    portal: LiveSimulator, change: dict[str, Any], field: str
) -> None:
    assert_field_error(create(portal, minimal_alarm(**change)), field)
    assert stored(portal) == []


@pytest.mark.parametrize(
    ("attachment", "field"),
    [
        (
            {"base64EncodedData": "data:text/plain;base64,aGVsbG8=", "mimeType": "text/plain"},
            "base64EncodedData",
        ),
        ({"base64EncodedData": "data:image/png;base64,aGVsbG8gd29ybGQ="}, "base64EncodedData"),
        ({"base64EncodedData": "data:application/pdf;base64,JVBERi0xLjQK"}, "base64EncodedData"),
        ({"base64EncodedData": f"data:image/png,{PNG_BASE64}"}, "base64EncodedData"),
        ({"base64EncodedData": PNG_BASE64}, "base64EncodedData"),
        ({"mimeType": "image/png"}, "base64EncodedData"),
        ({"base64EncodedData": f"data:image/png;base64,{PNG_BASE64}", "mimeType": "text/html"}, "mimeType"),
    ],
    ids=["text", "png-label-on-text", "pdf", "not-base64", "no-data-url", "no-data", "mime-not-image"],
)
def test_a_non_image_attachment_is_422(portal: LiveSimulator, attachment: dict[str, Any], field: str) -> None:
    response = create(portal, minimal_alarm(attachments=[attachment]))
    assert_field_error(response, f"attachments.0.{field}")
    assert stored(portal) == []


@pytest.mark.parametrize(
    ("data_url", "fmt"),
    [
        ("data:image/gif;base64," + base64.b64encode(b"GIF89a\x01\x00\x01\x00").decode(), "gif"),
        ("data:image/webp;base64," + base64.b64encode(b"RIFF\x1a\x00\x00\x00WEBPVP8 ").decode(), "webp"),
        (f"data:image/png;base64,{PNG_BASE64}", "png"),
        (SEED_000_JPEG, "jpeg"),
    ],
)
def test_png_jpeg_gif_and_webp_are_images(portal: LiveSimulator, data_url: str, fmt: str) -> None:
    auth = login(portal)
    alarm_id = create(portal, minimal_alarm(attachments=[{"base64EncodedData": data_url}]), auth).json()["id"]
    alarm = portal.request(
        "GET", f"{tracktik.ALARMS_PATH}/{alarm_id}", params={"include": "attachments"}, headers=auth
    ).json()
    assert alarm["attachments"][0]["format"] == fmt


JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=10), inner, max_size=3),
    max_leaves=8,
)
FIELD_NAMES = st.sampled_from(
    [*SEED_000_REQUEST, "location.latitude", "location.country", "notes.0", "attachments.0", "extra"]
)


@settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(changes=st.dictionaries(FIELD_NAMES, JSON_VALUES, max_size=4))
def test_any_json_alarm_is_answered_201_or_422_never_500(
    portal: LiveSimulator, changes: dict[str, Any]
) -> None:
    body: Any = copy.deepcopy(SEED_000_REQUEST)
    for name, value in changes.items():
        head, _, rest = name.partition(".")
        if not rest:
            body[head] = value
        elif rest.isdigit():
            body[head] = [value]
        else:
            body[head] = {**body[head], rest: value}
    response = portal.request("POST", tracktik.ALARMS_PATH, json=body, headers=login(portal))
    assert response.status_code in (201, 422), response.text
    if response.status_code == 422:
        assert response.json()["errors"]


def test_every_invalid_field_is_named_at_once(portal: LiveSimulator) -> None:
    body = {"alarmOrganization": 999, "location": {"latitude": 91}, "triggeredOn": "2026-05-26T14:36:37"}
    response = create(portal, body)
    assert response.status_code == 422
    assert {"alarmOrganization", "alarmTypeCode", "location", "location.latitude", "triggeredOn"} <= set(
        response.json()["errors"]
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "{not json", "headers": {"Content-Type": "application/json"}},
        {"json": [SEED_000_REQUEST]},
        {"data": {"alarmTypeCode": "11111"}},
    ],
    ids=["invalid-json", "array", "form"],
)
def test_a_body_that_is_not_a_json_object_is_400(portal: LiveSimulator, kwargs: dict[str, Any]) -> None:
    headers = {**login(portal), **kwargs.pop("headers", {})}
    response = portal.request("POST", tracktik.ALARMS_PATH, headers=headers, **kwargs)
    assert response.status_code == 400
    assert set(response.json()) == {"message"}


def test_unknown_alarm_is_404(portal: LiveSimulator) -> None:
    auth = login(portal)
    for path in (f"{tracktik.ALARMS_PATH}/22", f"{tracktik.ALARMS_PATH}/abc"):
        response = portal.request("GET", path, headers=auth)
        assert response.status_code == 404
        assert set(response.json()) == {"message"}


def test_a_wrong_method_is_405_in_the_tracktik_shape(portal: LiveSimulator) -> None:
    response = portal.request("DELETE", f"{tracktik.ALARMS_PATH}/22", headers=login(portal))
    assert response.status_code == 405
    assert set(response.json()) == {"message"}


# --- the list a client searches after an unknown outcome ----------------------------------------


def test_the_list_filters_by_organization_and_exact_trigger_time_with_notes(portal: LiveSimulator) -> None:
    auth = login(portal)
    sent = "2026-07-01T12:00:00+00:00"
    mine = create(portal, minimal_alarm(triggeredOn=sent, notes=[{"comment": "alarm-bridge ref k-1"}]), auth)
    create(portal, minimal_alarm(triggeredOn="2026-07-01T12:00:01+00:00"), auth)
    create(portal, minimal_alarm(alarmOrganization=688, triggeredOn=sent), auth)

    response = portal.request(
        "GET",
        tracktik.ALARMS_PATH,
        params={"alarmOrganization": "687", "triggeredOn": sent, "include": "notes"},
        headers=auth,
    )

    assert response.status_code == 200
    body = response.json()
    assert list(body) == ["data", "meta"]
    assert body["meta"] == {"count": 1, "itemCount": 1, "limit": 100, "offset": 0}
    (found,) = body["data"]
    assert found["id"] == mine.json()["id"]
    assert found["notes"][0]["comment"] == "alarm-bridge ref k-1"
    assert "attachments" not in found


def test_the_trigger_time_filter_matches_the_instant_however_it_is_written(portal: LiveSimulator) -> None:
    auth = login(portal)
    create(portal, minimal_alarm(triggeredOn="2026-07-01T12:00:00Z"), auth)
    for written in ("2026-07-01T12:00:00+00:00", "2026-07-01T14:00:00+02:00", "2026-07-01T12:00:00Z"):
        found = portal.request("GET", tracktik.ALARMS_PATH, params={"triggeredOn": written}, headers=auth)
        assert found.json()["meta"]["count"] == 1, written


def test_the_list_pages_with_limit_and_offset(portal: LiveSimulator) -> None:
    auth = login(portal)
    ids = [create(portal, minimal_alarm(), auth).json()["id"] for _ in range(5)]
    everything = portal.request("GET", tracktik.ALARMS_PATH, headers=auth).json()
    page = portal.request(
        "GET", tracktik.ALARMS_PATH, params={"limit": "2", "offset": "3"}, headers=auth
    ).json()
    assert [alarm["id"] for alarm in everything["data"]] == ids
    assert [alarm["id"] for alarm in page["data"]] == ids[3:5]
    assert page["meta"] == {"count": 5, "itemCount": 2, "limit": 2, "offset": 3}
    assert portal.request("GET", tracktik.ALARMS_PATH, params={"limit": "1000"}, headers=auth).ok


@pytest.mark.parametrize(
    "params",
    [
        {"limit": "1001"},
        {"limit": "0"},
        {"offset": "-1"},
        {"limit": "ten"},
        {"alarmOrganization": "x"},
        {"triggeredOn": "2026-07-01T12:00:00"},
        {"triggeredOn": "2026-07-01T12:00:00 00:00"},
        {"status": "ACTIVE"},
    ],
)
def test_unreadable_or_unsupported_list_parameters_are_400(
    portal: LiveSimulator, params: dict[str, str]
) -> None:
    response = portal.request("GET", tracktik.ALARMS_PATH, params=params, headers=login(portal))
    assert response.status_code == 400
    assert set(response.json()) == {"message"}


def test_an_empty_list_is_200(portal: LiveSimulator) -> None:
    response = portal.request(
        "GET", tracktik.ALARMS_PATH, params={"alarmOrganization": 687}, headers=login(portal)
    )
    assert response.status_code == 200
    assert response.json() == {"data": [], "meta": {"count": 0, "itemCount": 0, "limit": 100, "offset": 0}}


# --- OAuth2 --------------------------------------------------------------------------------------


def test_the_password_grant_issues_a_bearer_token_and_a_refresh_token(portal: LiveSimulator) -> None:
    response = password_grant(portal)
    assert response.status_code == 200
    body = response.json()
    assert set(body) == TOKEN_FIELDS
    assert (body["token_type"], body["expires_in"]) == ("Bearer", 3600)
    assert body["access_token"].count(".") == 2  # a JWT
    assert body["refresh_token"].startswith("def502")
    assert response.headers["Cache-Control"] == "no-store"
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert portal.request("GET", tracktik.ALARMS_PATH, headers=headers).status_code == 200


def test_a_refresh_token_works_exactly_once(portal: LiveSimulator) -> None:
    first = password_grant(portal).json()
    refreshed = refresh_grant(portal, first["refresh_token"])
    assert refreshed.status_code == 200
    second = refreshed.json()
    assert set(second) == TOKEN_FIELDS
    assert second["refresh_token"] != first["refresh_token"]
    assert second["access_token"] != first["access_token"]

    reused = assert_league_error(refresh_grant(portal, first["refresh_token"]), 400, "invalid_grant")
    assert reused["hint"] == "Token has been revoked"
    assert refresh_grant(portal, second["refresh_token"]).status_code == 200  # the new one works, once


def test_refreshing_revokes_the_access_token_issued_with_it(portal: LiveSimulator) -> None:
    first = password_grant(portal).json()
    second = refresh_grant(portal, first["refresh_token"]).json()
    old = portal.request(
        "GET", tracktik.ALARMS_PATH, headers={"Authorization": f"Bearer {first['access_token']}"}
    )
    new = portal.request(
        "GET", tracktik.ALARMS_PATH, headers={"Authorization": f"Bearer {second['access_token']}"}
    )
    assert assert_league_error(old, 401, "access_denied")["hint"] == "Access token has been revoked"
    assert new.status_code == 200


def test_the_refresh_grant_accepts_a_json_body_and_basic_client_credentials(portal: LiveSimulator) -> None:
    first = password_grant(portal).json()
    as_json = portal.request(
        "POST",
        tracktik.TOKEN_PATH,
        json={
            "grant_type": "refresh_token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "refresh_token": first["refresh_token"],
        },
    )
    assert as_json.status_code == 200
    with_basic = portal.request(
        "POST",
        tracktik.TOKEN_PATH,
        data={"grant_type": "refresh_token", "refresh_token": as_json.json()["refresh_token"]},
        auth=(CLIENT_ID, CLIENT_SECRET),
    )
    assert with_basic.status_code == 200


def test_an_access_token_expires_after_expires_in(portal: LiveSimulator) -> None:
    auth = login(portal)
    portal.advance_clock(3599)
    assert portal.request("GET", tracktik.ALARMS_PATH, headers=auth).status_code == 200
    portal.advance_clock(1)
    expired = portal.request("GET", tracktik.ALARMS_PATH, headers=auth)
    assert assert_league_error(expired, 401, "access_denied")["hint"] == "Access token could not be verified"
    assert create(portal, minimal_alarm(), auth).status_code == 401
    assert stored(portal) == []


def test_the_token_lifetime_comes_from_the_configuration(serve_simulator: ServeSimulator) -> None:
    sim = serve_simulator(tracktik.create_app(tracktik_config(token_ttl_s=60)))
    body = password_grant(sim).json()
    assert body["expires_in"] == 60
    sim.advance_clock(60)
    headers = {"Authorization": f"Bearer {body['access_token']}"}
    assert sim.request("GET", tracktik.ALARMS_PATH, headers=headers).status_code == 401
    assert refresh_grant(sim, body["refresh_token"]).status_code == 200  # the refresh token outlives it


def test_an_expired_refresh_token_is_refused(portal: LiveSimulator) -> None:
    body = password_grant(portal).json()
    portal.advance_clock(30 * 24 * 3600)
    refused = assert_league_error(refresh_grant(portal, body["refresh_token"]), 400, "invalid_grant")
    assert refused["hint"] == "Token has expired"


@pytest.mark.parametrize(
    ("headers", "hint"),
    [
        ({}, 'Missing "Authorization" header'),
        ({"Authorization": "Bearer not-a-token"}, "Access token could not be verified"),
        ({"Authorization": "Basic c2FuZGJveDpzYW5kYm94"}, "Access token could not be verified"),
    ],
    ids=["no-header", "unknown-token", "not-bearer"],
)
def test_the_api_without_a_valid_token_is_401(
    portal: LiveSimulator, headers: dict[str, str], hint: str
) -> None:
    for method, path in (("POST", tracktik.ALARMS_PATH), ("GET", tracktik.ALARMS_PATH)):
        response = portal.request(method, path, json=SEED_000_REQUEST, headers=headers)
        assert assert_league_error(response, 401, "access_denied")["hint"] == hint
    assert stored(portal) == []


@pytest.mark.parametrize(
    ("overrides", "status", "error"),
    [
        ({"password": "wrong"}, 400, "invalid_grant"),
        ({"username": "nobody"}, 400, "invalid_grant"),
        ({"client_secret": "wrong"}, 401, "invalid_client"),
        ({"client_id": "nobody"}, 401, "invalid_client"),
        ({"client_id": ""}, 400, "invalid_request"),
        ({"password": ""}, 400, "invalid_request"),
        ({"grant_type": "client_credentials"}, 400, "unsupported_grant_type"),
        ({"grant_type": ""}, 400, "unsupported_grant_type"),
    ],
)
def test_bad_token_requests_are_refused_in_league_style(
    portal: LiveSimulator, overrides: dict[str, str], status: int, error: str
) -> None:
    assert_league_error(password_grant(portal, **overrides), status, error)


def test_an_unknown_or_other_clients_refresh_token_is_refused(serve_simulator: ServeSimulator) -> None:
    clients = [
        {"client_id": CLIENT_ID, "client_secret": CLIENT_SECRET},
        {"client_id": "other", "client_secret": "other-secret"},
    ]
    sim = serve_simulator(tracktik.create_app(tracktik_config(clients=clients)))
    unknown = assert_league_error(refresh_grant(sim, "def50200abc"), 400, "invalid_grant")
    assert unknown["hint"] == "Cannot decrypt the refresh token"
    refresh_token = password_grant(sim).json()["refresh_token"]
    other = request_token(
        sim,
        grant_type="refresh_token",
        client_id="other",
        client_secret="other-secret",
        refresh_token=refresh_token,
    )
    assert assert_league_error(other, 400, "invalid_grant")["hint"] == "Token is not linked to client"
    assert refresh_grant(sim, refresh_token).status_code == 200  # a refused attempt does not use it up


def test_failed_logins_from_one_ip_block_it_on_the_token_endpoint(serve_simulator: ServeSimulator) -> None:
    sim = serve_simulator(
        tracktik.create_app(
            tracktik_config(login_block_failures=3, login_block_window_s=120, login_block_s=7200)
        )
    )
    auth = login(sim)
    for _ in range(3):
        assert password_grant(sim, password="wrong").status_code == 400

    blocked = password_grant(sim)  # even the right credentials
    body = assert_league_error(blocked, 429, "too_many_attempts")
    assert "blocked" in body["hint"]
    assert 7100 < int(blocked.headers["Retry-After"]) <= 7200
    assert password_grant(sim, password="wrong").status_code == 429
    other_ip = sim.request(
        "POST",
        tracktik.TOKEN_PATH,
        data={
            "grant_type": "password",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "username": USERNAME,
            "password": PASSWORD,
        },
        headers={"X-Forwarded-For": "203.0.113.7"},
    )
    assert other_ip.status_code == 200
    assert sim.request("GET", tracktik.ALARMS_PATH, headers=auth).status_code == 200  # only auth is blocked

    sim.advance_clock(7199)
    assert password_grant(sim).status_code == 429
    sim.advance_clock(1)
    assert password_grant(sim).status_code == 200


def test_failures_spread_over_more_than_the_window_do_not_block(serve_simulator: ServeSimulator) -> None:
    sim = serve_simulator(tracktik.create_app(tracktik_config(login_block_failures=3)))
    for _ in range(2):
        password_grant(sim, password="wrong")
    sim.advance_clock(120)  # "in under 2 minutes": the first two no longer count
    for _ in range(2):
        assert password_grant(sim, password="wrong").status_code == 400
    assert password_grant(sim).status_code == 200


def test_the_default_block_is_40_failures_in_2_minutes_for_2_hours(portal: LiveSimulator) -> None:
    settings = load_config()["tracktik"]
    assert (
        settings["login_block_failures"],
        settings["login_block_window_s"],
        settings["login_block_s"],
    ) == (40, 120, 7200)

    for _ in range(39):
        assert password_grant(portal, password="wrong").status_code == 400
    assert password_grant(portal).status_code == 200  # 39 failures are not enough
    assert password_grant(portal, password="wrong").status_code == 400  # the 40th starts the block
    blocked = password_grant(portal)
    assert blocked.status_code == 429
    assert int(blocked.headers["Retry-After"]) == pytest.approx(7200, abs=2)


def test_secrets_never_reach_the_journal(portal: LiveSimulator) -> None:
    body = password_grant(portal).json()
    refresh_grant(portal, body["refresh_token"])
    portal.request("GET", tracktik.ALARMS_PATH, headers={"Authorization": f"Bearer {body['access_token']}"})
    journal = portal.request("GET", "/_sandbox/journal").text
    for secret in (PASSWORD, CLIENT_SECRET, body["access_token"], body["refresh_token"]):
        assert secret not in journal


# --- rate limit, faults, reset -------------------------------------------------------------------


def test_more_requests_than_the_per_minute_limit_are_429(serve_simulator: ServeSimulator) -> None:
    sim = serve_simulator(tracktik.create_app(tracktik_config(rate_limit_per_minute=3)))
    auth = login(sim)
    for _ in range(3):
        assert sim.request("GET", tracktik.ALARMS_PATH, headers=auth).status_code == 200

    limited = create(sim, minimal_alarm(), auth)
    assert limited.status_code == 429
    assert set(limited.json()) == {"message"}
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert stored(sim) == []
    assert password_grant(sim).status_code == 200  # the token endpoint is not counted

    sim.advance_clock(60)
    assert create(sim, minimal_alarm(), auth).status_code == 201


def test_the_default_rate_limit_is_generous(portal: LiveSimulator) -> None:
    assert load_config()["tracktik"]["rate_limit_per_minute"] >= 1000
    auth = login(portal)
    assert all(portal.request("GET", tracktik.ALARMS_PATH, headers=auth).ok for _ in range(50))


def test_an_injected_status_uses_the_tracktik_error_body(portal: LiveSimulator) -> None:
    auth = login(portal)
    portal.add_fault(method="POST", path=tracktik.ALARMS_PATH, status=503, headers={"Retry-After": "5"})
    failed = create(portal, minimal_alarm(), auth)
    assert failed.status_code == 503
    assert failed.json() == {"message": "Service Unavailable"}
    assert failed.headers["Retry-After"] == "5"
    assert stored(portal) == []
    assert create(portal, minimal_alarm(), auth).status_code == 201


def test_an_injected_status_on_the_token_endpoint_uses_the_league_body(portal: LiveSimulator) -> None:
    portal.add_fault(path=tracktik.TOKEN_PATH, status=503)
    assert_league_error(password_grant(portal), 503, "server_error")
    portal.add_fault(path=tracktik.TOKEN_PATH, status=401)
    assert_league_error(password_grant(portal), 401, "invalid_client")
    assert password_grant(portal).status_code == 200


def test_after_a_timeout_after_commit_the_list_filter_finds_the_alarm(portal: LiveSimulator) -> None:
    auth = login(portal)
    body = minimal_alarm(notes=[{"comment": "alarm-bridge ref act-42"}, {"comment": "details"}])
    portal.add_fault(method="POST", path=tracktik.ALARMS_PATH, timeout_after_commit=True, hold_s=30)
    with pytest.raises(requests.ReadTimeout):
        portal.request("POST", tracktik.ALARMS_PATH, json=body, headers=auth, timeout=(5, 0.5))

    found = portal.request(
        "GET",
        tracktik.ALARMS_PATH,
        params={
            "alarmOrganization": body["alarmOrganization"],
            "triggeredOn": body["triggeredOn"],
            "include": "notes",
        },
        headers=auth,
    ).json()
    (alarm,) = [
        a for a in found["data"] if a["notes"] and a["notes"][0]["comment"] == "alarm-bridge ref act-42"
    ]
    assert alarm["status"] == "ACTIVE"
    assert [note["comment"] for note in alarm["notes"]] == ["alarm-bridge ref act-42", "details"]
    assert len(stored(portal)) == 1


def test_reset_forgets_alarms_and_tokens_and_restarts_the_ids(portal: LiveSimulator) -> None:
    auth = login(portal)
    create(portal, minimal_alarm(), auth)
    portal.reset()

    assert stored(portal) == []
    assert portal.request("GET", tracktik.ALARMS_PATH, headers=auth).status_code == 401
    alarm = create(portal, minimal_alarm()).json()
    assert (alarm["id"], alarm["dispatchTask"]) == (22, 683)


def test_invalid_configuration_is_refused_at_start() -> None:
    with pytest.raises(ValueError, match="login_block_failures"):
        tracktik.create_app(tracktik_config(login_block_failures=0))
    with pytest.raises(ValueError, match="rate_limit_per_minute"):
        tracktik.create_app(tracktik_config(rate_limit_per_minute="many"))
    with pytest.raises(ValueError, match="alarmOrganization"):
        tracktik.create_app(tracktik_config(connections=[{"id": 1, "customId": "x", "alarmOrganization": 5}]))
