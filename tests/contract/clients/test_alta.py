"""AltaClient against the Alta simulator over real loopback HTTP (seed 002; CONTRACTS Part A items 1-4).

What the client must get right: one login shared by every worker through Redis and renewed once on a
401; the ongoing alert of a zone found only once Alta lists it, the newest one when the zone has
several; bookmarks that appear late, turned into guest links; verify and end sent as idempotent calls;
and each failure mapped to the error family perform() classifies.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import fakeredis
import pytest
import requests

from config.settings import Settings
from sandbox.alta import create_app
from sandbox.server import RunningServer, serve_in_thread
from vendors.alta.client import AltaClient
from vendors.alta.settings import AltaSettings
from workers.clients.base import USER_AGENT
from workers.clients.cache import cache_key
from workers.clients.errors import UpstreamRejectedError, UpstreamUnavailableError

pytestmark = pytest.mark.contract

DOCK, YARD = "az-5d1c", "az-7e21"  # the simulator's default zones


class AltaSandbox:
    """The simulator's control API, for arranging detections, time and faults."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.base_url = server.base_url
        self.http = requests.Session()

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, self.base_url + path, json=body, timeout=5)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def detect(self, zone: str = DOCK, **options: Any) -> dict[str, Any]:
        """Play a detection without firing the zone webhook (no receiver runs here)."""
        result: dict[str, Any] = self.control(
            "POST", "/_sandbox/detections", {"alarm_zone_id": zone, "fire_webhook": False, **options}
        )
        return result

    def advance(self, seconds: float) -> None:
        self.control("POST", "/_sandbox/clock", {"advance_s": seconds})

    def fault(self, **fault: Any) -> None:
        self.control("POST", "/_sandbox/faults", fault)

    def journal(self, path: str = "", method: str = "") -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.control("GET", f"/_sandbox/journal?path={path}&method={method}")
        return entries

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.control("GET", "/_sandbox/alerts")
        return alerts


@pytest.fixture
def sandbox() -> Iterator[AltaSandbox]:
    server = serve_in_thread(create_app(), port=0)
    sim = AltaSandbox(server)
    yield sim
    sim.http.close()
    server.stop()


@pytest.fixture
def cache() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


def make_client(sandbox: AltaSandbox, cache: Any, *, read_timeout_s: float = 5.0, **alta: Any) -> AltaClient:
    """A client of the sandbox; ``alta``: AltaSettings fields other than its URL."""
    settings = Settings(
        http_connect_timeout_s=2.0, http_read_timeout_s=read_timeout_s, broker_key_prefix="test:"
    ).with_vendor(AltaSettings(base_url=sandbox.base_url, **alta))
    return AltaClient.from_settings(settings, cache)


@pytest.fixture
def client(sandbox: AltaSandbox, cache: fakeredis.FakeRedis) -> AltaClient:
    return make_client(sandbox, cache)


# --- login and the shared cookie ---------------------------------------------------------------------


def test_one_login_serves_every_worker_through_the_shared_cookie(
    sandbox: AltaSandbox, cache: fakeredis.FakeRedis
) -> None:
    first, second = make_client(sandbox, cache), make_client(sandbox, cache)
    assert first.ongoing_alerts() == []
    assert second.ongoing_alerts() == []
    logins = sandbox.journal("/api/v1/dologin")
    assert len(logins) == 1
    assert logins[0]["body"]["username"] == "api@sandbox.alta.example"
    calls = sandbox.journal("/api/v1/ongoingAlerts")
    assert [call["status"] for call in calls] == [200, 200]
    assert all("Cookie" in call["headers"] for call in calls)
    key = "test:ab:alta:cookie"
    assert key == cache_key(Settings(broker_key_prefix="test:"), "alta", "cookie")
    assert cache.get(key)
    ttl = cache.ttl(key)
    assert isinstance(ttl, int) and 0 < ttl < 3600  # kept for less than the cookie lives


def test_an_expired_cookie_is_renewed_by_one_login_and_the_call_retried(
    sandbox: AltaSandbox, client: AltaClient, cache: fakeredis.FakeRedis
) -> None:
    client.ongoing_alerts()
    old = cache.get("test:ab:alta:cookie")
    sandbox.advance(3601)  # past cookie_ttl_s on the simulated clock: the cookie answers 401
    assert client.ongoing_alerts() == []
    assert [call["status"] for call in sandbox.journal("/api/v1/ongoingAlerts")] == [200, 401, 200]
    assert len(sandbox.journal("/api/v1/dologin")) == 2
    assert cache.get("test:ab:alta:cookie") not in (None, old)


def test_a_401_after_a_fresh_login_is_a_refusal_not_a_loop(sandbox: AltaSandbox, client: AltaClient) -> None:
    sandbox.fault(path="/api/v1/ongoingAlerts", status=401, count=5)
    with pytest.raises(UpstreamRejectedError) as caught:
        client.ongoing_alerts()
    assert caught.value.status == 401
    assert len(sandbox.journal("/api/v1/ongoingAlerts")) == 2
    assert len(sandbox.journal("/api/v1/dologin")) == 2


def test_wrong_credentials_are_refused_once_without_retrying(
    sandbox: AltaSandbox, cache: fakeredis.FakeRedis
) -> None:
    client = make_client(sandbox, cache, password="wrong-password")
    with pytest.raises(UpstreamRejectedError) as caught:
        client.ongoing_alerts()
    assert caught.value.status == 401
    assert len(sandbox.journal("/api/v1/dologin")) == 1
    assert sandbox.journal("/api/v1/ongoingAlerts") == []
    assert cache.get("test:ab:alta:cookie") is None


def test_the_login_and_every_call_say_alarm_bridge_not_python_requests(
    sandbox: AltaSandbox, client: AltaClient
) -> None:
    """Some Alta cloud hosts answer 401 to requests' default User-Agent (CONTRACTS Part B §1.2)."""
    client.ongoing_alerts()
    [login] = sandbox.journal("/api/v1/dologin")
    [call] = sandbox.journal("/api/v1/ongoingAlerts")
    for entry in (login, call):
        assert entry["headers"]["User-Agent"] == USER_AGENT
    assert USER_AGENT.startswith("alarm-bridge/")


def test_the_client_still_works_when_the_cookie_cache_is_down(sandbox: AltaSandbox) -> None:
    server = fakeredis.FakeServer()
    server.connected = False
    client = make_client(sandbox, fakeredis.FakeRedis(server=server))
    assert client.ongoing_alerts() == []
    assert client.ongoing_alerts() == []
    assert len(sandbox.journal("/api/v1/dologin")) == 2  # no cache: one login per call


# --- ongoing alerts ------------------------------------------------------------------------------------


def test_an_alert_is_found_only_once_alta_lists_it(sandbox: AltaSandbox, client: AltaClient) -> None:
    played = sandbox.detect(DOCK, device_id="dev-2")
    assert client.find_ongoing_alert(DOCK) is None  # late listing: the webhook came first
    sandbox.advance(2)
    alert = client.find_ongoing_alert(DOCK)
    assert alert is not None
    assert alert.guid == played["alert"]["guid"]
    assert alert.alarm_zone_id == DOCK
    assert alert.merged is False
    assert alert.origin_name == "Loading Dock Cam 2"
    assert alert.acknowledgment_code == 101
    assert alert.start_time_ms == played["alert"]["start_time"]
    assert client.find_ongoing_alert(YARD) is None


def test_a_detection_within_the_merge_window_reports_merged(sandbox: AltaSandbox, client: AltaClient) -> None:
    first = sandbox.detect(DOCK, device_id="dev-2")
    sandbox.advance(30)
    sandbox.detect(DOCK, device_id="dev-3")
    alert = client.find_ongoing_alert(DOCK)
    assert alert is not None
    assert alert.guid == first["alert"]["guid"]
    assert alert.merged is True
    assert alert.origin_name == "Loading Dock Cam 2"  # the origin stays the first detection's


def test_the_newest_alert_of_the_zone_wins_when_an_older_one_is_still_open(
    sandbox: AltaSandbox, client: AltaClient
) -> None:
    sandbox.detect(DOCK)
    sandbox.advance(120)  # past the merge window: the next detection opens a second alert
    newer = sandbox.detect(DOCK, device_id="dev-3")
    sandbox.detect(YARD)
    sandbox.advance(2)
    assert len(client.ongoing_alerts()) == 3
    alert = client.find_ongoing_alert(DOCK)
    assert alert is not None
    assert alert.guid == newer["alert"]["guid"]


def test_a_wrapped_alert_list_is_accepted(sandbox: AltaSandbox, client: AltaClient) -> None:
    wrapped = {"alerts": [{"guid": "g-1", "alarm_zone_id": 42, "merged": False, "origin_name": "Cam"}]}
    sandbox.fault(path="/api/v1/ongoingAlerts", status=200, body=wrapped)
    alert = client.find_ongoing_alert("42")
    assert alert is not None
    assert (alert.guid, alert.alarm_zone_id, alert.start_time_ms) == ("g-1", "42", None)


def test_an_unreadable_alert_list_is_refused(sandbox: AltaSandbox, client: AltaClient) -> None:
    sandbox.fault(path="/api/v1/ongoingAlerts", status=200, body={"unexpected": True})
    with pytest.raises(UpstreamRejectedError):
        client.ongoing_alerts()


# --- bookmarks and guest links ---------------------------------------------------------------------------


def test_bookmarks_appear_late_and_become_working_guest_links(
    sandbox: AltaSandbox, client: AltaClient
) -> None:
    played = sandbox.detect(DOCK, device_id="dev-2")
    guid = played["alert"]["guid"]
    sandbox.advance(2)
    assert client.bookmarks(guid) == []
    sandbox.advance(3)  # bookmark_delay_s = 5 after the detection
    [bookmark] = client.bookmarks(guid)
    assert bookmark.guest_token == played["bookmark"]["guest_token"]
    assert bookmark.device_id == "dev-2"
    assert bookmark.start_ms is not None and bookmark.end_ms is not None
    link = client.guest_link(bookmark.guest_token)
    assert link == f"{sandbox.base_url}/cloud?t={bookmark.guest_token}"
    assert requests.get(link, timeout=5).status_code == 200  # noqa: TID251 - the shared link itself


def test_bookmarks_need_the_share_video_permission(sandbox: AltaSandbox, cache: fakeredis.FakeRedis) -> None:
    viewer = make_client(
        sandbox,
        cache,
        username="viewer@sandbox.alta.example",
        password="sandbox-alta-viewer-password",
    )
    guid = sandbox.detect(DOCK)["alert"]["guid"]
    sandbox.advance(6)
    with pytest.raises(UpstreamRejectedError) as caught:
        viewer.bookmarks(guid)
    assert caught.value.status == 403


# --- verify and end --------------------------------------------------------------------------------------


def test_verify_posts_the_documented_body_and_valid_keeps_the_alert_open(
    sandbox: AltaSandbox, client: AltaClient
) -> None:
    guid = sandbox.detect(DOCK, device_id="dev-2")["alert"]["guid"]
    sandbox.advance(2)
    alert = client.verify(guid, 201, False, "Loading Dock Cam 2")
    assert alert is not None and alert.acknowledgment_code == 201
    [call] = sandbox.journal(f"/api/v1/alerts/{guid}", "POST")
    assert call["body"] == {
        "acknowledgment_code": 201,
        "guid": guid,
        "merged": False,
        "origin_name": "Loading Dock Cam 2",
    }
    assert [a.guid for a in client.ongoing_alerts()] == [guid]


def test_verify_false_also_ends_the_alert(sandbox: AltaSandbox, client: AltaClient) -> None:
    guid = sandbox.detect(DOCK)["alert"]["guid"]
    sandbox.advance(2)
    client.verify(guid, 202, False, "Loading Dock Cam 2")
    assert client.ongoing_alerts() == []
    assert sandbox.alerts()[0]["ended_at"] is not None


def test_verify_refuses_an_undocumented_code_without_calling_alta(
    sandbox: AltaSandbox, client: AltaClient
) -> None:
    with pytest.raises(ValueError, match="acknowledgment_code"):
        client.verify("g-1", 200, False, "Cam")
    assert sandbox.journal("/api/v1/alerts") == []


def test_verify_of_an_unknown_alert_is_refused(sandbox: AltaSandbox, client: AltaClient) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        client.verify("00000000-0000-0000-0000-000000000000", 201, False, "Cam")
    assert caught.value.status == 404


def test_end_is_idempotent_and_an_unknown_alert_is_reported_not_raised(
    sandbox: AltaSandbox, client: AltaClient
) -> None:
    guid = sandbox.detect(DOCK)["alert"]["guid"]
    sandbox.advance(2)
    first, again = client.end(guid), client.end(guid)
    assert first.known and again.known
    assert first.alert is not None and first.alert.guid == guid
    assert client.ongoing_alerts() == []
    unknown = client.end("00000000-0000-0000-0000-000000000000")
    assert unknown.known is False and unknown.alert is None


# --- failures --------------------------------------------------------------------------------------------


def test_a_503_is_unavailable(sandbox: AltaSandbox, client: AltaClient) -> None:
    sandbox.fault(path="/api/v1/ongoingAlerts", status=503)
    with pytest.raises(UpstreamUnavailableError):
        client.ongoing_alerts()
    assert client.ongoing_alerts() == []  # the next call goes through


def test_a_429_carries_its_retry_after(sandbox: AltaSandbox, client: AltaClient) -> None:
    sandbox.fault(path="/api/v1/ongoingAlerts", status=429, headers={"Retry-After": "7"})
    with pytest.raises(UpstreamUnavailableError) as caught:
        client.ongoing_alerts()
    assert caught.value.retry_after_s == 7.0


def test_a_login_that_alta_cannot_serve_is_unavailable(sandbox: AltaSandbox, client: AltaClient) -> None:
    sandbox.fault(path="/api/v1/dologin", status=502)
    with pytest.raises(UpstreamUnavailableError):
        client.ongoing_alerts()


def test_a_dropped_connection_is_unavailable(sandbox: AltaSandbox, client: AltaClient) -> None:
    sandbox.detect(DOCK)
    sandbox.advance(2)
    client.ongoing_alerts()  # logged in
    sandbox.fault(path="/api/v1/ongoingAlerts", drop=True)
    with pytest.raises(UpstreamUnavailableError):
        client.ongoing_alerts()


def test_a_verify_whose_answer_is_lost_is_retried_safely(
    sandbox: AltaSandbox, client: AltaClient, cache: fakeredis.FakeRedis
) -> None:
    guid = sandbox.detect(DOCK)["alert"]["guid"]
    sandbox.advance(2)
    client.ongoing_alerts()  # logged in, so the short-timeout client only makes the verify call
    impatient = make_client(sandbox, cache, read_timeout_s=0.3)
    sandbox.fault(path=f"/api/v1/alerts/{guid}", method="POST", timeout_after_commit=True, hold_s=5)
    # Alta applied it, the answer never came: verify sets a status, so "unavailable, try again".
    with pytest.raises(UpstreamUnavailableError):
        impatient.verify(guid, 202, False, "Loading Dock Cam 2")
    assert sandbox.alerts()[0]["acknowledgment_code"] == 202
    again = client.verify(guid, 202, False, "Loading Dock Cam 2")
    assert again is not None and again.acknowledgment_code == 202
    assert len(sandbox.alerts()) == 1


def test_an_end_whose_answer_is_lost_is_retried_safely(
    sandbox: AltaSandbox, client: AltaClient, cache: fakeredis.FakeRedis
) -> None:
    guid = sandbox.detect(DOCK)["alert"]["guid"]
    sandbox.advance(2)
    client.ongoing_alerts()
    impatient = make_client(sandbox, cache, read_timeout_s=0.3)
    sandbox.fault(path=f"/api/v1/alerts/{guid}/end", timeout_after_commit=True, hold_s=5)
    with pytest.raises(UpstreamUnavailableError):
        impatient.end(guid)
    assert client.end(guid).known
    assert client.ongoing_alerts() == []
