"""The Alta Video (Alta Protect) simulator over real HTTP (seed 002; CONTRACTS Part A items 1-5, §1).

Login and the `va` cookie's expiry; the lifecycle a detection starts (the zone webhook first, the alert
listed later, merged within 60 s, bookmarks later still); verify 101/201/202 and end with their 404s;
alarm zones; the zone webhook as alarm-bridge receives it (a local receiver records it); faults.
"""

import base64
import json
import socket
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from http.cookiejar import Cookie
from typing import Any, cast

import pytest
import requests
from flask import Flask, jsonify, request
from flask.typing import ResponseReturnValue

from sandbox.alta import app as alta
from sandbox.config import load_config
from sandbox.server import combined_app, serve_in_thread
from tests.contract.sandbox.conftest import ServeSimulator
from tests.contract.sandbox.harness import LiveSimulator

pytestmark = pytest.mark.contract

USER = "api@sandbox.alta.example"
PASSWORD = "sandbox-alta-password"
VIEWER = "viewer@sandbox.alta.example"
VIEWER_PASSWORD = "sandbox-alta-viewer-password"
WEBHOOK_TOKEN = "sandbox-alta-webhook-token"
DOCK, YARD = "az-5d1c", "az-7e21"  # the default zones: token in a header / token in the URL
ALERT_FIELDS = [
    "guid",
    "alarm_zone_id",
    "merged",
    "origin_name",
    "origin_id",
    "alarm_zone_name",
    "acknowledgment_code",
    "start_time",
    "site_id",
]
ERROR_FIELDS = {"status", "error", "message"}
UNKNOWN_GUID = "3f9b2c1e-7d44-4b8a-9a51-0c2d7e6f1a22"  # Part B §1.5's example guid


def alta_config(**overrides: Any) -> dict[str, Any]:
    """The default configuration with some `[alta]` keys changed."""
    config = load_config()
    config["alta"] = {**config["alta"], **overrides}
    return config


def zone_config(zone_id: str, **overrides: Any) -> dict[str, Any]:
    """The default configuration with keys of one alarm zone changed."""
    zones = [
        {**zone, **overrides} if zone["id"] == zone_id else zone
        for zone in load_config()["alta"]["alarm_zones"]
    ]
    return alta_config(alarm_zones=zones)


@dataclass
class Receiver:
    """A stand-in for alarm-bridge's intake: records every webhook and answers `status`."""

    live: LiveSimulator
    calls: list[dict[str, Any]] = field(default_factory=list)
    status: int = 202

    @property
    def base_url(self) -> str:
        return self.live.base_url

    def only_call(self) -> dict[str, Any]:
        (call,) = self.calls
        return call


@pytest.fixture
def receiver(serve_simulator: ServeSimulator) -> Receiver:
    app = Flask(__name__)
    holder: dict[str, Receiver] = {}

    @app.route("/<path:path>", methods=["POST", "PUT"])
    def receive(path: str) -> ResponseReturnValue:
        holder["receiver"].calls.append(
            {
                "method": request.method,
                "path": request.path,
                "query": request.args.to_dict(flat=False),
                "headers": dict(request.headers),
                "body": request.get_data(as_text=True),
            }
        )
        return jsonify(accepted=True), holder["receiver"].status

    holder["receiver"] = Receiver(live=serve_simulator(app))
    return holder["receiver"]


def start_alta(
    serve_simulator: ServeSimulator, receiver: Receiver, config: dict[str, Any] | None = None
) -> LiveSimulator:
    """An Alta simulator whose zone webhooks go to `receiver` (configured path and query kept)."""
    sim = serve_simulator(alta.create_app(config))
    target = sim.request("POST", "/_sandbox/webhook-target", json={"base_url": receiver.base_url})
    assert target.status_code == 200, target.text
    return sim


@pytest.fixture
def sim(serve_simulator: ServeSimulator, receiver: Receiver) -> LiveSimulator:
    """The Alta simulator with the default configuration, webhooks going to `receiver`."""
    return start_alta(serve_simulator, receiver)


def login(sim: LiveSimulator, username: str = USER, password: str = PASSWORD) -> dict[str, str]:
    """Log in and return the cookie to send; the shared session's jar is emptied so nothing is implicit."""
    response = sim.request("POST", "/api/v1/dologin", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    cookie = response.cookies["va"]
    sim.http.cookies.clear()
    return {"va": cookie}


def detect(
    sim: LiveSimulator, zone: str = DOCK, device: str | None = "dev-2", **options: Any
) -> dict[str, Any]:
    """Play a detection through the control API."""
    body: dict[str, Any] = {"alarm_zone_id": zone, **options}
    if device is not None:
        body["device_id"] = device
    response = sim.request("POST", "/_sandbox/detections", json=body)
    assert response.status_code == 200, response.text
    played: dict[str, Any] = response.json()
    return played


def ongoing(sim: LiveSimulator, cookies: dict[str, str]) -> list[dict[str, Any]]:
    response = sim.request("GET", "/api/v1/ongoingAlerts", cookies=cookies)
    assert response.status_code == 200, response.text
    alerts: list[dict[str, Any]] = response.json()
    return alerts


def verify_body(alert: dict[str, Any], code: int) -> dict[str, Any]:
    """CONTRACTS Part A item 4's body, built from an `ongoingAlerts` record."""
    return {
        "acknowledgment_code": code,
        "guid": alert["guid"],
        "merged": alert["merged"],
        "origin_name": alert["origin_name"],
    }


def assert_alta_error(response: requests.Response, status: int, *mentions: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == ERROR_FIELDS
    assert body["status"] == status
    for mention in mentions:
        assert mention in body["message"]


def listed_alert(sim: LiveSimulator, cookies: dict[str, str], **options: Any) -> dict[str, Any]:
    """Detect, let the listing delay pass and return the listed alert."""
    played = detect(sim, **options)
    sim.advance_clock(2)
    (alert,) = [a for a in ongoing(sim, cookies) if a["guid"] == played["alert"]["guid"]]
    return alert


def clock_time(sim: LiveSimulator) -> float:
    now: float = sim.request("GET", "/_sandbox/clock").json()["time"]
    return now


# --- login and the va cookie -------------------------------------------------------------------------


def test_dologin_answers_an_empty_object_and_a_va_cookie_with_expiry(sim: LiveSimulator) -> None:
    before = clock_time(sim)
    response = sim.request("POST", "/api/v1/dologin", json={"username": USER, "password": PASSWORD})

    assert response.status_code == 200
    assert response.json() == {}
    set_cookie = response.headers["Set-Cookie"]
    assert set_cookie.startswith("va=")
    assert "HttpOnly" in set_cookie
    assert "Path=/" in set_cookie
    assert "Secure" not in set_cookie  # plain HTTP: a cookie jar must keep sending it
    # types-requests types the jar as a name -> value mapping; iterating it yields Cookie objects.
    (cookie,) = cast("list[Cookie]", list(response.cookies))
    assert cookie.name == "va"
    assert cookie.expires is not None
    assert before + 3600 - 5 <= cookie.expires <= before + 3600 + 5


@pytest.mark.parametrize(
    ("username", "password"),
    [(USER, "wrong"), ("nobody@sandbox.alta.example", PASSWORD), (USER, "")],
    ids=["wrong-password", "unknown-user", "empty-password"],
)
def test_wrong_credentials_are_401(sim: LiveSimulator, username: str, password: str) -> None:
    response = sim.request("POST", "/api/v1/dologin", json={"username": username, "password": password})
    assert_alta_error(response, 401)
    assert "va" not in response.cookies


def test_the_username_is_an_email_compared_ignoring_case(sim: LiveSimulator) -> None:
    assert login(sim, USER.upper(), PASSWORD)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"data": "username=a&password=b", "headers": {"Content-Type": "application/x-www-form-urlencoded"}},
        {"json": {"username": USER}},
        {"json": {"username": USER, "password": 1234}},
        {"json": [USER, PASSWORD]},
    ],
    ids=["form", "no-password", "number-password", "array"],
)
def test_an_unreadable_login_body_is_400(sim: LiveSimulator, kwargs: dict[str, Any]) -> None:
    assert_alta_error(sim.request("POST", "/api/v1/dologin", **kwargs), 400)


CALLS_NEEDING_A_COOKIE = [
    ("GET", "/api/v1/ongoingAlerts"),
    ("GET", "/api/v1/alarmZones"),
    ("GET", f"/api/v1/alarmZones/{DOCK}"),
    ("GET", f"/api/v1/alerts/{UNKNOWN_GUID}/bookmarks"),
    ("POST", f"/api/v1/alerts/{UNKNOWN_GUID}"),
    ("POST", f"/api/v1/alerts/{UNKNOWN_GUID}/end"),
    ("POST", "/api/v1/logout"),
]


@pytest.mark.parametrize(("method", "path"), CALLS_NEEDING_A_COOKIE)
@pytest.mark.parametrize("cookies", [{}, {"va": "not-a-cookie-we-issued"}], ids=["none", "unknown"])
def test_calls_without_a_valid_cookie_are_401(
    sim: LiveSimulator, method: str, path: str, cookies: dict[str, str]
) -> None:
    assert_alta_error(sim.request(method, path, cookies=cookies, json={}), 401, "dologin")


def test_the_cookie_expires_after_its_ttl_and_a_new_login_works(sim: LiveSimulator) -> None:
    cookies = login(sim)
    sim.advance_clock(3599)
    assert sim.request("GET", "/api/v1/ongoingAlerts", cookies=cookies).status_code == 200

    sim.advance_clock(1)
    assert_alta_error(sim.request("GET", "/api/v1/ongoingAlerts", cookies=cookies), 401)
    assert_alta_error(sim.request("GET", "/api/v1/alarmZones", cookies=cookies), 401)

    assert ongoing(sim, login(sim)) == []


def test_the_cookie_ttl_comes_from_the_configuration(
    serve_simulator: ServeSimulator, receiver: Receiver
) -> None:
    short = start_alta(serve_simulator, receiver, alta_config(cookie_ttl_s=60))
    cookies = login(short)
    short.advance_clock(60)
    assert_alta_error(short.request("GET", "/api/v1/ongoingAlerts", cookies=cookies), 401)


def test_calls_do_not_extend_the_cookie(sim: LiveSimulator) -> None:
    cookies = login(sim)
    for _ in range(3):
        sim.advance_clock(1200)
        response = sim.request("GET", "/api/v1/ongoingAlerts", cookies=cookies)
        assert "Set-Cookie" not in response.headers
    assert response.status_code == 401  # 3600 s after the login, whatever happened in between


def test_logout_invalidates_the_cookie(sim: LiveSimulator) -> None:
    cookies = login(sim)
    other = login(sim)
    assert sim.request("POST", "/api/v1/logout", cookies=cookies).json() == {}
    assert_alta_error(sim.request("GET", "/api/v1/ongoingAlerts", cookies=cookies), 401)
    assert ongoing(sim, other) == []  # another session is untouched


def test_a_cookie_jar_keeps_and_sends_the_cookie_over_plain_http(sim: LiveSimulator) -> None:
    with requests.Session() as client:
        login_response = client.post(
            sim.url("/api/v1/dologin"), json={"username": USER, "password": PASSWORD}, timeout=5
        )
        assert login_response.status_code == 200
        assert client.get(sim.url("/api/v1/ongoingAlerts"), timeout=5).json() == []


def test_the_password_and_the_cookie_never_reach_the_journal(sim: LiveSimulator) -> None:
    cookies = login(sim)
    ongoing(sim, cookies)
    raw = sim.request("GET", "/_sandbox/journal").text
    assert PASSWORD not in raw
    assert cookies["va"] not in raw
    login_entry, list_entry = sim.journal()
    assert login_entry["body"] == {"username": USER, "password": "***"}
    assert list_entry["headers"]["Cookie"] == "***"


# --- late listing ----------------------------------------------------------------------------------------


def test_the_webhook_fires_first_and_the_alert_is_listed_after_the_delay(
    sim: LiveSimulator, receiver: Receiver
) -> None:
    cookies = login(sim)
    played = detect(sim, DOCK, "dev-2")
    guid = played["alert"]["guid"]

    assert played["merged"] is False
    assert played["listed"] is False
    assert played["webhook"]["status"] == 202
    assert len(receiver.calls) == 1  # the receiver already has the webhook ...
    assert ongoing(sim, cookies) == []  # ... and the alert is not listed yet
    not_yet = [("GET", f"/api/v1/alerts/{guid}/bookmarks"), ("POST", f"/api/v1/alerts/{guid}/end")]
    for method, path in [*not_yet, ("POST", f"/api/v1/alerts/{guid}")]:
        response = sim.request(method, path, cookies=cookies, json=verify_body(played["alert"], 201))
        assert_alta_error(response, 404)  # not written yet: unknown to the API as well

    sim.advance_clock(1)
    assert ongoing(sim, cookies) == []
    sim.advance_clock(1)
    (alert,) = ongoing(sim, cookies)

    assert list(alert) == ALERT_FIELDS
    assert alert == played["alert"]
    assert alert["alarm_zone_id"] == DOCK
    assert alert["alarm_zone_name"] == "Loading Dock"
    assert (alert["origin_id"], alert["origin_name"]) == ("dev-2", "Loading Dock Cam 2")
    assert alert["acknowledgment_code"] == 101
    assert alert["site_id"] == "site-mtl-hq"
    assert isinstance(alert["start_time"], int)
    assert alert["start_time"] > 10**12  # ms
    assert str(uuid.UUID(guid)) == guid


def test_the_listing_delay_is_configurable_and_can_be_set_per_detection(
    serve_simulator: ServeSimulator, receiver: Receiver
) -> None:
    slow = start_alta(serve_simulator, receiver, alta_config(listing_delay_s=30))
    cookies = login(slow)
    detect(slow)
    slow.advance_clock(29)
    assert ongoing(slow, cookies) == []
    slow.advance_clock(1)
    assert len(ongoing(slow, cookies)) == 1

    immediate = detect(slow, YARD, "dev-9", listing_delay_s=0)
    assert immediate["listed"] is True
    assert [a["alarm_zone_id"] for a in ongoing(slow, cookies)] == [DOCK, YARD]  # oldest first


# --- merging ------------------------------------------------------------------------------------------


def test_a_detection_within_60_s_merges_into_the_open_alert(sim: LiveSimulator, receiver: Receiver) -> None:
    cookies = login(sim)
    first = detect(sim, DOCK, "dev-2")
    sim.advance_clock(59)
    second = detect(sim, DOCK, "dev-3")

    assert second["merged"] is True
    assert second["alert"]["guid"] == first["alert"]["guid"]
    (alert,) = ongoing(sim, cookies)
    assert alert["merged"] is True
    assert alert["origin_name"] == "Loading Dock Cam 2"  # the first detection's device stays the origin
    assert alert["start_time"] == first["alert"]["start_time"]
    assert len(receiver.calls) == 2  # the merged detection fires the webhook too (seed 002: check `merged`)
    assert json.loads(receiver.calls[1]["body"])["deviceId"] == "dev-3"


def test_a_detection_after_60_s_opens_a_new_alert(sim: LiveSimulator) -> None:
    cookies = login(sim)
    first = detect(sim)
    sim.advance_clock(61)
    second = detect(sim)
    sim.advance_clock(2)

    assert second["merged"] is False
    assert second["alert"]["guid"] != first["alert"]["guid"]
    alerts = ongoing(sim, cookies)
    assert [a["guid"] for a in alerts] == [first["alert"]["guid"], second["alert"]["guid"]]
    assert [a["merged"] for a in alerts] == [False, False]

    sim.advance_clock(30)  # 30 s after the second alert began: it is the one that absorbs
    assert detect(sim)["alert"]["guid"] == second["alert"]["guid"]


def test_a_detection_after_the_alert_ended_opens_a_new_alert(sim: LiveSimulator) -> None:
    cookies = login(sim)
    alert = listed_alert(sim, cookies)
    assert sim.request("POST", f"/api/v1/alerts/{alert['guid']}/end", cookies=cookies).status_code == 200

    again = detect(sim)
    assert again["merged"] is False
    assert again["alert"]["guid"] != alert["guid"]


def test_detections_merge_only_within_their_zone(sim: LiveSimulator) -> None:
    cookies = login(sim)
    detect(sim, DOCK, "dev-2")
    yard = detect(sim, YARD, "dev-9")
    sim.advance_clock(2)
    assert yard["merged"] is False
    assert sorted(a["alarm_zone_id"] for a in ongoing(sim, cookies)) == [DOCK, YARD]


def test_the_merge_window_can_be_set_per_zone(serve_simulator: ServeSimulator, receiver: Receiver) -> None:
    short = start_alta(serve_simulator, receiver, zone_config(DOCK, merge_window_s=10))
    first = detect(short)
    short.advance_clock(11)
    assert detect(short)["alert"]["guid"] != first["alert"]["guid"]


def test_without_webhook_on_merge_a_merged_detection_sends_nothing(
    serve_simulator: ServeSimulator, receiver: Receiver
) -> None:
    quiet = start_alta(serve_simulator, receiver, alta_config(webhook_on_merge=False))
    detect(quiet)
    merged = detect(quiet)
    assert merged["merged"] is True
    assert merged["webhook"] is None
    assert len(receiver.calls) == 1


# --- bookmarks ---------------------------------------------------------------------------------------


def test_bookmarks_appear_after_their_delay_with_a_guest_token(sim: LiveSimulator) -> None:
    cookies = login(sim)
    played = detect(sim, DOCK, "dev-2")
    guid = played["alert"]["guid"]
    sim.advance_clock(2)
    assert sim.request("GET", f"/api/v1/alerts/{guid}/bookmarks", cookies=cookies).json() == []

    sim.advance_clock(3)
    response = sim.request("GET", f"/api/v1/alerts/{guid}/bookmarks", cookies=cookies)
    assert response.status_code == 200
    (bookmark,) = response.json()
    assert set(bookmark) == {"id", "guest_token", "device_id", "start", "end"}
    assert bookmark["device_id"] == "dev-2"
    assert bookmark["guest_token"] == played["bookmark"]["guest_token"]
    start_time = played["alert"]["start_time"]
    assert (bookmark["start"], bookmark["end"]) == (start_time - 10_000, start_time + 20_000)

    page = sim.request("GET", "/cloud", params={"t": bookmark["guest_token"]})
    assert page.status_code == 200
    assert "Loading Dock" in page.text
    assert_alta_error(sim.request("GET", "/cloud", params={"t": "not-a-token"}), 404)


def test_a_merged_detection_adds_its_own_bookmark(sim: LiveSimulator) -> None:
    cookies = login(sim)
    guid = detect(sim, DOCK, "dev-2")["alert"]["guid"]
    sim.advance_clock(10)
    detect(sim, DOCK, "dev-3")
    sim.advance_clock(4)
    devices = [
        b["device_id"] for b in sim.request("GET", f"/api/v1/alerts/{guid}/bookmarks", cookies=cookies).json()
    ]
    assert devices == ["dev-2"]
    sim.advance_clock(1)
    devices = [
        b["device_id"] for b in sim.request("GET", f"/api/v1/alerts/{guid}/bookmarks", cookies=cookies).json()
    ]
    assert devices == ["dev-2", "dev-3"]


def test_the_bookmark_delay_is_configurable(serve_simulator: ServeSimulator, receiver: Receiver) -> None:
    late = start_alta(serve_simulator, receiver, alta_config(bookmark_delay_s=60))
    cookies = login(late)
    guid = detect(late)["alert"]["guid"]
    late.advance_clock(59)
    assert late.request("GET", f"/api/v1/alerts/{guid}/bookmarks", cookies=cookies).json() == []
    late.advance_clock(1)
    assert len(late.request("GET", f"/api/v1/alerts/{guid}/bookmarks", cookies=cookies).json()) == 1


def test_bookmarks_need_the_share_video_permission(sim: LiveSimulator) -> None:
    guid = listed_alert(sim, login(sim))["guid"]
    viewer = login(sim, VIEWER, VIEWER_PASSWORD)
    assert ongoing(sim, viewer)  # the viewer may list ...
    response = sim.request("GET", f"/api/v1/alerts/{guid}/bookmarks", cookies=viewer)
    assert_alta_error(response, 403, "Share video")  # ... but not share video


def test_a_zone_without_an_external_link_has_no_bookmarks_and_no_url(
    serve_simulator: ServeSimulator, receiver: Receiver
) -> None:
    plain = start_alta(serve_simulator, receiver, zone_config(DOCK, external_link=False))
    cookies = login(plain)
    played = detect(plain)
    plain.advance_clock(60)
    assert played["bookmark"] is None
    assert (
        plain.request("GET", f"/api/v1/alerts/{played['alert']['guid']}/bookmarks", cookies=cookies).json()
        == []
    )
    assert json.loads(receiver.only_call()["body"])["url"] == "N/A"


def test_bookmarks_of_an_unknown_alert_are_404(sim: LiveSimulator) -> None:
    response = sim.request("GET", f"/api/v1/alerts/{UNKNOWN_GUID}/bookmarks", cookies=login(sim))
    assert_alta_error(response, 404, UNKNOWN_GUID)


# --- verify and end -------------------------------------------------------------------------------


@pytest.mark.parametrize("code", [201, 101])
def test_verify_sets_the_acknowledgment_code_and_keeps_the_alert_ongoing(
    sim: LiveSimulator, code: int
) -> None:
    cookies = login(sim)
    alert = listed_alert(sim, cookies)
    response = sim.request(
        "POST", f"/api/v1/alerts/{alert['guid']}", json=verify_body(alert, code), cookies=cookies
    )

    assert response.status_code == 200, response.text
    assert response.json() == {**alert, "acknowledgment_code": code}
    assert ongoing(sim, cookies) == [{**alert, "acknowledgment_code": code}]


def test_the_example_verify_body_of_part_b_is_accepted_as_written(sim: LiveSimulator) -> None:
    cookies = login(sim)
    alert = listed_alert(sim, cookies)
    example = {
        "acknowledgment_code": 201,
        "guid": alert["guid"],
        "merged": False,
        "origin_name": "Loading Dock Cam 2",
    }
    response = sim.request("POST", f"/api/v1/alerts/{alert['guid']}", json=example, cookies=cookies)
    assert response.status_code == 200
    assert response.json()["acknowledgment_code"] == 201


def test_verify_202_false_also_ends_the_alert(sim: LiveSimulator) -> None:
    cookies = login(sim)
    alert = listed_alert(sim, cookies)
    response = sim.request(
        "POST", f"/api/v1/alerts/{alert['guid']}", json=verify_body(alert, 202), cookies=cookies
    )

    assert response.status_code == 200
    assert response.json()["acknowledgment_code"] == 202
    assert ongoing(sim, cookies) == []
    assert sim.request("POST", f"/api/v1/alerts/{alert['guid']}/end", cookies=cookies).status_code == 200


@pytest.mark.parametrize(
    "change",
    [
        {"acknowledgment_code": 200},
        {"acknowledgment_code": "201"},
        {"acknowledgment_code": True},
        {"acknowledgment_code": None},
        {"guid": UNKNOWN_GUID},
        {"guid": None},
        {"merged": "false"},
        {"origin_name": None},
    ],
    ids=[
        "code-200",
        "code-string",
        "code-bool",
        "no-code",
        "other-guid",
        "no-guid",
        "merged-string",
        "no-origin",
    ],
)
def test_an_invalid_verify_body_is_400_and_changes_nothing(
    sim: LiveSimulator, change: dict[str, Any]
) -> None:
    cookies = login(sim)
    alert = listed_alert(sim, cookies)
    body = {key: value for key, value in {**verify_body(alert, 201), **change}.items() if value is not None}
    response = sim.request("POST", f"/api/v1/alerts/{alert['guid']}", json=body, cookies=cookies)

    assert_alta_error(response, 400)
    assert ongoing(sim, cookies) == [alert]


def test_a_verify_body_that_is_not_json_is_400(sim: LiveSimulator) -> None:
    cookies = login(sim)
    alert = listed_alert(sim, cookies)
    response = sim.request(
        "POST", f"/api/v1/alerts/{alert['guid']}", data="acknowledgment_code=201", cookies=cookies
    )
    assert_alta_error(response, 400)


def test_verify_does_not_compare_merged_and_origin_with_the_alert(sim: LiveSimulator) -> None:
    cookies = login(sim)
    alert = listed_alert(sim, cookies)
    detect(sim, DOCK, "dev-3")  # merges after the client read the alert: its `merged` is stale now
    response = sim.request(
        "POST", f"/api/v1/alerts/{alert['guid']}", json=verify_body(alert, 201), cookies=cookies
    )
    assert response.status_code == 200
    assert response.json()["merged"] is True


def test_verify_of_an_unknown_guid_is_404(sim: LiveSimulator) -> None:
    cookies = login(sim)
    body = {"acknowledgment_code": 201, "guid": UNKNOWN_GUID, "merged": False, "origin_name": "x"}
    assert_alta_error(sim.request("POST", f"/api/v1/alerts/{UNKNOWN_GUID}", json=body, cookies=cookies), 404)


def test_end_is_200_and_ending_again_is_200(sim: LiveSimulator) -> None:
    cookies = login(sim)
    alert = listed_alert(sim, cookies)

    first = sim.request("POST", f"/api/v1/alerts/{alert['guid']}/end", cookies=cookies)
    assert first.status_code == 200
    assert first.json() == alert
    assert ongoing(sim, cookies) == []

    again = sim.request("POST", f"/api/v1/alerts/{alert['guid']}/end", cookies=cookies)
    assert again.status_code == 200
    assert again.json() == alert


def test_end_of_an_unknown_guid_is_404(sim: LiveSimulator) -> None:
    response = sim.request("POST", f"/api/v1/alerts/{UNKNOWN_GUID}/end", cookies=login(sim))
    assert_alta_error(response, 404, UNKNOWN_GUID)


def test_an_ended_alert_can_still_be_verified_and_stays_ended(sim: LiveSimulator) -> None:
    cookies = login(sim)
    alert = listed_alert(sim, cookies)
    sim.request("POST", f"/api/v1/alerts/{alert['guid']}/end", cookies=cookies)
    response = sim.request(
        "POST", f"/api/v1/alerts/{alert['guid']}", json=verify_body(alert, 201), cookies=cookies
    )
    assert response.status_code == 200
    assert ongoing(sim, cookies) == []


# --- alarm zones ---------------------------------------------------------------------------------------


def test_alarm_zones_lists_the_configured_zones(sim: LiveSimulator) -> None:
    cookies = login(sim)
    response = sim.request("GET", "/api/v1/alarmZones", cookies=cookies)
    assert response.status_code == 200
    dock, yard = response.json()
    assert dock == {
        "id": DOCK,
        "name": "Loading Dock",
        "site_id": "site-mtl-hq",
        "site_name": "Acme Montréal HQ",
        "address": "4200 Blvd Saint-Laurent, Montréal, QC H2W 2R2",
        "armed": True,
        "description": None,
        "emergency_contacts": ["Security desk +1 514 555 0100"],
        "devices": [
            {"id": "dev-2", "name": "Loading Dock Cam 2"},
            {"id": "dev-3", "name": "Loading Dock Cam 3"},
        ],
    }
    assert yard["id"] == YARD
    assert sim.request("GET", f"/api/v1/alarmZones/{YARD}", cookies=cookies).json() == yard
    assert_alta_error(sim.request("GET", "/api/v1/alarmZones/az-none", cookies=cookies), 404)


# --- the zone webhook ---------------------------------------------------------------------------------------


def test_the_webhook_posts_the_rendered_template_with_the_token_in_the_header(
    sim: LiveSimulator, receiver: Receiver
) -> None:
    before = clock_time(sim)
    played = detect(sim, DOCK, "dev-2")
    call = receiver.only_call()

    assert call["method"] == "POST"
    assert call["path"] == "/v1/webhooks/alta"
    assert call["query"] == {}
    assert call["headers"]["Authorization"] == f"Bearer {WEBHOOK_TOKEN}"
    assert call["headers"]["Content-Type"] == "application/json"
    body = json.loads(call["body"])
    guest_token = played["bookmark"]["guest_token"]
    assert body == {
        "source": "alta",
        "alarmZoneId": DOCK,
        "alarmZoneName": "Loading Dock",
        "deviceId": "dev-2",
        "deviceName": "Loading Dock Cam 2",
        "siteId": "site-mtl-hq",
        "triggerPhase": "Alarm",
        "detection": "Person",
        "verification": "None",
        "timeIso": body["timeIso"],
        "url": f"{sim.base_url}/cloud?t={guest_token}",
    }
    assert body["timeIso"].endswith("Z")
    assert abs(datetime.fromisoformat(body["timeIso"]).timestamp() - before) < 5

    webhook = played["webhook"]
    assert webhook["status"] == 202
    assert webhook["error"] is None
    assert webhook["headers"]["Authorization"] == "Bearer ***"  # masked in what the control API shows
    assert json.loads(webhook["body"]) == body
    assert json.loads(webhook["response_body"]) == {"accepted": True}


def test_the_token_can_travel_in_the_url_instead(sim: LiveSimulator, receiver: Receiver) -> None:
    played = detect(sim, YARD, "dev-9")
    call = receiver.only_call()

    assert call["path"] == "/v1/webhooks/alta"
    assert call["query"] == {"token": [WEBHOOK_TOKEN]}
    assert "Authorization" not in call["headers"]
    assert json.loads(call["body"])["alarmZoneId"] == YARD
    assert played["webhook"]["url"].endswith("/v1/webhooks/alta?token=***")
    assert WEBHOOK_TOKEN not in sim.request("GET", "/_sandbox/journal").text


def test_every_code_is_rendered_and_time_is_epoch_seconds(
    serve_simulator: ServeSimulator, receiver: Receiver
) -> None:
    codes = [
        "address", "alarmZoneId", "alarmZoneName", "description", "detection", "deviceGroupId",
        "deviceGroupName", "deviceId", "deviceName", "deviceSiteId", "deviceSiteName", "dispatch",
        "emergencyContact", "jpg", "serviceGroupId", "serviceGroupName", "triggerPhase", "timeIso",
        "timePretty", "url", "verification", "zoneName", "Dispatch",
    ]  # fmt: skip
    template = (
        "{" + ", ".join(f'"{code}": "${code}"' for code in codes) + ', "time": $time, "other": "$other"}'
    )
    every = start_alta(
        serve_simulator,
        receiver,
        alta_config(webhook={**load_config()["alta"]["webhook"], "template": template}),
    )
    before = clock_time(every)
    detect(every, DOCK, "dev-3")
    body = json.loads(receiver.only_call()["body"])

    assert isinstance(body["time"], int)
    assert before - 1 <= body["time"] <= before + 5  # seconds, not ms
    assert body["timePretty"].endswith(("EST", "EDT"))  # the zone's time zone (America/Montreal)
    assert body["deviceGroupId"] == "grp-dock"
    assert body["deviceGroupName"] == "Dock cameras"
    assert body["deviceSiteName"] == "Acme Montréal HQ"
    assert body["emergencyContact"] == "Security desk +1 514 555 0100"
    assert body["zoneName"] == body["alarmZoneName"] == "Loading Dock"  # the February 2025 name
    for missing in ("description", "dispatch", "Dispatch", "serviceGroupId", "serviceGroupName"):
        assert body[missing] == "N/A", missing
    assert body["other"] == "$other"  # not an Alta code: left as written
    jpeg = base64.b64decode(body["jpg"], validate=True)
    assert jpeg.startswith(b"\xff\xd8") and jpeg.endswith(b"\xff\xd9")


def test_time_can_be_sent_in_milliseconds_and_missing_values_as_empty_strings(
    serve_simulator: ServeSimulator, receiver: Receiver
) -> None:
    webhook = {
        **load_config()["alta"]["webhook"],
        "time_unit": "ms",
        "missing_value": "",
        "template": '{"time": $time, "description": "$description"}',
    }
    ms = start_alta(serve_simulator, receiver, alta_config(webhook=webhook))
    before = clock_time(ms)
    detect(ms)
    body = json.loads(receiver.only_call()["body"])
    assert body["time"] > 10**12
    assert abs(body["time"] / 1000 - before) < 5
    assert body["description"] == ""


def test_values_are_escaped_so_a_json_template_stays_valid(
    serve_simulator: ServeSimulator, receiver: Receiver
) -> None:
    quoted = {"id": "dev-q", "name": 'Dock "B" \\ west'}
    odd = start_alta(serve_simulator, receiver, zone_config(DOCK, devices=[quoted]))
    detect(odd, DOCK, "dev-q")
    assert json.loads(receiver.only_call()["body"])["deviceName"] == 'Dock "B" \\ west'


def test_the_verification_code_reflects_the_alert_being_merged_into(
    sim: LiveSimulator, receiver: Receiver
) -> None:
    cookies = login(sim)
    alert = listed_alert(sim, cookies)
    sim.request("POST", f"/api/v1/alerts/{alert['guid']}", json=verify_body(alert, 201), cookies=cookies)
    detect(sim)
    assert json.loads(receiver.calls[-1]["body"])["verification"] == "Valid"


def test_the_webhook_target_can_be_overridden_and_restored(sim: LiveSimulator, receiver: Receiver) -> None:
    elsewhere = f"{receiver.base_url}/elsewhere?token=abc"
    response = sim.request("POST", "/_sandbox/webhook-target", json={"url": elsewhere})
    assert response.status_code == 200
    assert response.json()["targets"][DOCK] == f"{receiver.base_url}/elsewhere?token=***"
    detect(sim)
    assert receiver.calls[-1]["path"] == "/elsewhere"
    assert receiver.calls[-1]["query"] == {"token": ["abc"]}

    per_call = detect(sim, YARD, "dev-9", webhook_url=f"{receiver.base_url}/this-call-only")
    assert receiver.calls[-1]["path"] == "/this-call-only"
    assert per_call["webhook"]["status"] == 202

    assert sim.request("DELETE", "/_sandbox/webhook-target").status_code == 204
    targets = sim.request("GET", "/_sandbox/webhook-target").json()["targets"]
    assert targets == {
        DOCK: "http://127.0.0.1:8000/v1/webhooks/alta",
        YARD: "http://127.0.0.1:8000/v1/webhooks/alta?token=***",
    }


def test_the_webhook_target_can_be_set_for_one_zone(sim: LiveSimulator, receiver: Receiver) -> None:
    response = sim.request(
        "POST", "/_sandbox/webhook-target", json={"alarm_zone_id": YARD, "url": f"{receiver.base_url}/yard"}
    )
    targets = response.json()["targets"]
    assert targets[YARD] == f"{receiver.base_url}/yard"
    assert targets[DOCK] == f"{receiver.base_url}/v1/webhooks/alta"  # still the all-zones base_url


@pytest.mark.parametrize(
    "body",
    [{"url": "ftp://example.org/x"}, {"url": 5}, {"url": "http://a", "base_url": "http://b"}, ["http://a"]],
    ids=["not-http", "not-a-string", "both", "not-an-object"],
)
def test_an_invalid_webhook_target_is_400(sim: LiveSimulator, body: Any) -> None:
    assert sim.request("POST", "/_sandbox/webhook-target", json=body).status_code == 400


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_an_unreachable_receiver_is_reported_in_the_answer_and_the_journal(sim: LiveSimulator) -> None:
    played = detect(sim, webhook_base_url=f"http://127.0.0.1:{closed_port()}")

    assert played["alert"]["guid"]  # the alert exists all the same
    assert played["webhook"]["status"] is None
    assert played["webhook"]["error"].startswith("ConnectionError")
    (outbound,) = [entry for entry in sim.journal() if entry["simulator"] == "alta.outbound"]
    assert outbound["status"] is None


def test_the_receivers_status_is_reported(sim: LiveSimulator, receiver: Receiver) -> None:
    receiver.status = 401
    assert detect(sim)["webhook"]["status"] == 401


def test_outbound_calls_are_journaled_and_marked_as_such(sim: LiveSimulator, receiver: Receiver) -> None:
    cookies = login(sim)
    detect(sim)
    ongoing(sim, cookies)
    entries = sim.journal()

    assert [(e["simulator"], e["method"]) for e in entries] == [
        ("alta", "POST"),
        ("alta.outbound", "POST"),
        ("alta", "GET"),
    ]
    outbound = entries[1]
    assert outbound["path"] == f"{receiver.base_url}/v1/webhooks/alta"
    assert outbound["headers"]["Authorization"] == "Bearer ***"
    assert outbound["body"]["alarmZoneId"] == DOCK
    assert outbound["status"] == 202
    assert sim.request("GET", "/_sandbox/webhooks").json()[0]["status"] == 202


def test_fire_webhook_false_plays_a_detection_silently(sim: LiveSimulator, receiver: Receiver) -> None:
    played = detect(sim, fire_webhook=False)
    assert played["webhook"] is None
    assert played["alert"] is not None
    assert receiver.calls == []


def test_a_disarmed_zone_raises_nothing(serve_simulator: ServeSimulator, receiver: Receiver) -> None:
    disarmed = start_alta(serve_simulator, receiver, zone_config(DOCK, armed=False))
    played = detect(disarmed)
    disarmed.advance_clock(10)
    assert (played["armed"], played["alert"], played["webhook"]) == (False, None, None)
    assert ongoing(disarmed, login(disarmed)) == []
    assert receiver.calls == []


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ({"alarm_zone_id": "az-none"}, 404),
        ({"alarm_zone_id": DOCK, "device_id": "dev-9"}, 400),
        ({"alarm_zone_id": DOCK, "listing_delay_s": -1}, 400),
        ({"alarm_zone_id": DOCK, "fire_webhook": "no"}, 400),
        ([DOCK], 400),
    ],
    ids=["unknown-zone", "device-of-another-zone", "negative-delay", "fire-not-bool", "not-an-object"],
)
def test_an_invalid_detection_is_refused(sim: LiveSimulator, body: Any, status: int) -> None:
    response = sim.request("POST", "/_sandbox/detections", json=body)
    assert response.status_code == status
    assert "error" in response.json()


def test_a_detection_without_a_device_uses_the_zones_first_camera(sim: LiveSimulator) -> None:
    assert detect(sim, DOCK, None)["alert"]["origin_id"] == "dev-2"


# --- the simulator core on Alta ----------------------------------------------------------------------------


def test_an_injected_503_on_ongoing_alerts_uses_the_alta_error_body(sim: LiveSimulator) -> None:
    cookies = login(sim)
    sim.add_fault(method="GET", path="/api/v1/ongoingAlerts", status=503, headers={"Retry-After": "5"})
    response = sim.request("GET", "/api/v1/ongoingAlerts", cookies=cookies)
    assert_alta_error(response, 503)
    assert response.json()["error"] == "Service Unavailable"
    assert response.headers["Retry-After"] == "5"
    assert ongoing(sim, cookies) == []


def test_an_end_that_times_out_after_commit_is_ended_and_the_retry_is_200(sim: LiveSimulator) -> None:
    cookies = login(sim)
    alert = listed_alert(sim, cookies)
    sim.add_fault(method="POST", path_regex=r"/end$", timeout_after_commit=True, hold_s=30)
    with pytest.raises(requests.ReadTimeout):
        sim.request("POST", f"/api/v1/alerts/{alert['guid']}/end", cookies=cookies, timeout=(5, 0.5))
    assert ongoing(sim, cookies) == []
    assert sim.request("POST", f"/api/v1/alerts/{alert['guid']}/end", cookies=cookies).status_code == 200


def test_unknown_paths_and_wrong_methods_get_the_alta_error_body(sim: LiveSimulator) -> None:
    cookies = login(sim)
    assert_alta_error(sim.request("GET", "/api/v1/nothingHere", cookies=cookies), 404)
    response = sim.request("DELETE", "/api/v1/ongoingAlerts", cookies=cookies)
    assert_alta_error(response, 405)
    assert "GET" in response.headers["Allow"]


def test_reset_forgets_sessions_alerts_and_deliveries_but_keeps_the_webhook_target(
    sim: LiveSimulator, receiver: Receiver
) -> None:
    cookies = login(sim)
    listed_alert(sim, cookies)
    sim.reset()

    assert_alta_error(sim.request("GET", "/api/v1/ongoingAlerts", cookies=cookies), 401)
    assert ongoing(sim, login(sim)) == []
    assert sim.request("GET", "/_sandbox/alerts").json() == []
    assert sim.request("GET", "/_sandbox/webhooks").json() == []
    detect(sim)
    assert len(receiver.calls) == 2  # still pointed at the receiver


def test_the_control_view_shows_every_alert_with_its_timing(sim: LiveSimulator) -> None:
    played = detect(sim)
    (alert,) = sim.request("GET", "/_sandbox/alerts").json()
    assert alert["guid"] == played["alert"]["guid"]
    assert alert["listed"] is False
    assert alert["listed_at"] == played["alert"]["start_time"] + 2000
    assert alert["ended_at"] is None
    assert alert["bookmarks"][0]["visible_at"] == played["alert"]["start_time"] + 5000


@pytest.fixture
def combined(receiver: Receiver) -> Iterator[str]:
    """The combined server (every simulator under its prefix), Alta's webhooks going to `receiver`."""
    server = serve_in_thread(combined_app({"alta": alta.create_app()}), port=0)
    try:
        yield server.base_url
    finally:
        server.stop()


def test_under_the_combined_server_links_carry_the_prefix(
    combined: str, receiver: Receiver, http: requests.Session
) -> None:
    base = f"{combined}/alta"
    http.post(f"{base}/_sandbox/webhook-target", json={"base_url": receiver.base_url}, timeout=5)
    played = http.post(f"{base}/_sandbox/detections", json={"alarm_zone_id": DOCK}, timeout=5).json()
    link = json.loads(receiver.only_call()["body"])["url"]

    assert link == f"{base}/cloud?t={played['bookmark']['guest_token']}"
    assert http.get(link, timeout=5).status_code == 200
    login_response = http.post(
        f"{base}/api/v1/dologin", json={"username": USER, "password": PASSWORD}, timeout=5
    )
    assert login_response.status_code == 200
    assert http.get(f"{base}/api/v1/ongoingAlerts", timeout=5).json() == []  # the jar sends the cookie
