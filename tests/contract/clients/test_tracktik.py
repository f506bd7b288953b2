"""TrackTikClient against the TrackTik simulator over real loopback HTTP (seed 000; CONTRACTS Part A
items 6-9).

Seed 000's payload as sent and as stored; the token shared through Redis, renewed before expiry, on
a 401 (the sandbox clock expires it) and by the password grant when the refresh token is refused;
bad credentials refused once and not retried; each error class; and the reconcile path after a
timeout-after-commit that adopts the alarm the first attempt created.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
import requests

from config.settings import Settings
from sandbox.alta.webhook import THUMBNAIL_B64
from sandbox.server import RunningServer, serve_in_thread
from sandbox.tracktik import create_app
from vendors.tracktik.client import (
    ALARMS_PATH,
    TOKEN_PATH,
    CreatedAlarm,
    TrackTikAlarm,
    TrackTikAttachment,
    TrackTikClient,
    TrackTikLocation,
    ref_note,
)
from vendors.tracktik.settings import TrackTikSettings
from workers.clients.cache import cache_key
from workers.clients.errors import OutcomeUnknownError, UpstreamRejectedError, UpstreamUnavailableError

pytestmark = pytest.mark.contract

TRIGGERED_ON = datetime(2026, 5, 26, 14, 36, 37, 250_000, tzinfo=UTC)  # fraction dropped on the wire
REGISTERED_ON = datetime(2026, 5, 26, 14, 36, 39, tzinfo=UTC)


class Sandbox:
    """The running simulator and its control API."""

    def __init__(self, server: RunningServer) -> None:
        self.server = server
        self.base_url = server.base_url
        self.http = requests.Session()

    def journal(self, path: str) -> list[dict[str, Any]]:
        response = self.http.get(self.base_url + "/_sandbox/journal", params={"path": path}, timeout=5)
        response.raise_for_status()
        entries: list[dict[str, Any]] = response.json()
        return entries

    def grants(self) -> list[str]:
        """The grant_type of every token request, in order (secrets are masked in the journal)."""
        return [entry["body"].split("grant_type=")[1].split("&")[0] for entry in self.journal(TOKEN_PATH)]

    def add_fault(self, **fault: Any) -> None:
        response = self.http.post(self.base_url + "/_sandbox/faults", json=fault, timeout=5)
        assert response.status_code == 201, response.text

    def advance(self, seconds: float) -> None:
        self.http.post(self.base_url + "/_sandbox/clock", json={"advance_s": seconds}, timeout=5)

    def stored_alarms(self) -> list[dict[str, Any]]:
        alarms: list[dict[str, Any]] = self.http.get(self.base_url + "/_sandbox/alarms", timeout=5).json()
        return alarms


@pytest.fixture
def sandbox() -> Iterator[Sandbox]:
    server = serve_in_thread(create_app(), port=0)
    box = Sandbox(server)
    yield box
    box.http.close()
    server.stop()


@pytest.fixture
def cache() -> fakeredis.FakeRedis:
    return fakeredis.FakeRedis()


@pytest.fixture
def settings(make_settings: Callable[..., Settings], sandbox: Sandbox) -> Settings:
    # A short read timeout: the timeout-after-commit fault holds the answer until the client gives up.
    return make_settings(
        TrackTikSettings(base_url=sandbox.base_url, create_read_timeout_s=1.0), http_read_timeout_s=1.0
    )


@pytest.fixture
def client(settings: Settings, cache: fakeredis.FakeRedis) -> TrackTikClient:
    return TrackTikClient.from_settings(settings, cache)


def seed_alarm(ref: str = "act-1-key", **overrides: Any) -> TrackTikAlarm:
    """Seed 000's example alarm for organization 687, marked with `ref`."""
    values: dict[str, Any] = {
        "alarm_type_code": "11111",
        "alarm_organization": 687,
        "alarm_connection_custom_id": "alarm-bridge",
        "location": TrackTikLocation(
            address_line1="4200 Blvd Saint-Laurent",
            city="Montréal",
            state="QC",
            country="CA",
            postal_code="H2W 2R2",
            latitude=45.518336643702625,
            longitude=-73.58218751610286,
        ),
        "triggered_on": TRIGGERED_ON,
        "registered_on": REGISTERED_ON,
        "instructions": "Follow the instructions",
        "notes": (ref_note(ref), "Burglary — SIA BA — zone 3"),
        "attachments": (TrackTikAttachment("data:image/jpeg;base64," + THUMBNAIL_B64),),
    }
    values.update(overrides)
    return TrackTikAlarm(**values)


def stored_pair(cache: fakeredis.FakeRedis, settings: Settings) -> dict[str, Any]:
    raw = cache.get(cache_key(settings, "tracktik", "token"))
    assert isinstance(raw, bytes)
    pair: dict[str, Any] = json.loads(raw)
    return pair


def rewrite_pair(cache: fakeredis.FakeRedis, settings: Settings, **changes: Any) -> None:
    pair = stored_pair(cache, settings) | changes
    cache.set(cache_key(settings, "tracktik", "token"), json.dumps(pair))


def test_create_alarm_posts_seed_000_payload_and_returns_ids_and_dispatch_task(
    client: TrackTikClient, sandbox: Sandbox
) -> None:
    created = client.create_alarm(seed_alarm())

    assert created.id == 22
    assert created.dispatch_task_id == 683
    assert created.custom_id
    (post,) = sandbox.journal(ALARMS_PATH)
    assert post["method"] == "POST"
    assert post["status"] == 201
    assert post["headers"]["Authorization"].startswith("Bearer ")
    body = post["body"]
    assert body["triggeredOn"] == "2026-05-26T14:36:37+00:00"
    assert body["registeredOn"] == "2026-05-26T14:36:39+00:00"
    assert body["alarmOrganization"] == 687
    assert body["location"]["addressLine1"] == "4200 Blvd Saint-Laurent"
    assert body["location"]["postalCode"] == "H2W 2R2"
    assert body["onSiteInformation"]["instructions"] == "Follow the instructions"
    assert body["notes"][0] == {"comment": "alarm-bridge ref act-1-key"}
    assert body["attachments"][0]["mimeType"] == "image/jpeg"


def test_get_alarm_reads_back_notes_in_order_and_the_image_attachment(client: TrackTikClient) -> None:
    created = client.create_alarm(seed_alarm())

    detail = client.get_alarm(created.id)

    assert detail.alarm == created
    assert detail.status == "ACTIVE"
    assert detail.triggered_on == "2026-05-26T14:36:37+00:00"
    assert [note.comment for note in detail.notes] == [
        "alarm-bridge ref act-1-key",
        "Burglary — SIA BA — zone 3",
    ]
    (attachment,) = detail.attachments
    assert attachment.format == "jpeg"
    assert attachment.url


def test_one_password_grant_serves_every_client_sharing_the_redis(
    settings: Settings, cache: fakeredis.FakeRedis, sandbox: Sandbox
) -> None:
    first = TrackTikClient.from_settings(settings, cache)
    second = TrackTikClient.from_settings(settings, cache)

    first.create_alarm(seed_alarm("a"))
    second.create_alarm(seed_alarm("b"))

    assert sandbox.grants() == ["password"]


def test_token_expired_on_the_sandbox_clock_is_renewed_with_the_refresh_token_after_the_401(
    client: TrackTikClient, sandbox: Sandbox
) -> None:
    created = client.create_alarm(seed_alarm())
    sandbox.advance(3700)  # the access token dies upstream; our own clock still thinks it is fresh

    assert client.get_alarm(created.id).alarm.id == created.id

    assert sandbox.grants() == ["password", "refresh_token"]
    statuses = [entry["status"] for entry in sandbox.journal(f"{ALARMS_PATH}/{created.id}")]
    assert statuses == [401, 200]


def test_token_close_to_expiry_is_refreshed_before_the_call(
    client: TrackTikClient, sandbox: Sandbox, settings: Settings, cache: fakeredis.FakeRedis
) -> None:
    created = client.create_alarm(seed_alarm())
    old = stored_pair(cache, settings)
    rewrite_pair(cache, settings, expires_at=time.time() + 10)

    client.get_alarm(created.id)

    assert sandbox.grants() == ["password", "refresh_token"]
    assert [entry["status"] for entry in sandbox.journal(f"{ALARMS_PATH}/{created.id}")] == [200]
    new = stored_pair(cache, settings)
    assert new["access_token"] != old["access_token"]
    assert new["refresh_token"] != old["refresh_token"]  # the single-use one was replaced


def test_refused_refresh_token_falls_back_to_one_password_grant(
    client: TrackTikClient, sandbox: Sandbox, settings: Settings, cache: fakeredis.FakeRedis
) -> None:
    client.create_alarm(seed_alarm())
    rewrite_pair(cache, settings, expires_at=0, refresh_token="def502-already-spent")

    client.create_alarm(seed_alarm("second"))

    assert sandbox.grants() == ["password", "refresh_token", "password"]
    assert [entry["status"] for entry in sandbox.journal(TOKEN_PATH)] == [200, 400, 200]


def test_renewal_uses_the_token_another_worker_already_stored(
    client: TrackTikClient, sandbox: Sandbox, settings: Settings, cache: fakeredis.FakeRedis
) -> None:
    client.create_alarm(seed_alarm())
    current = stored_pair(cache, settings)["access_token"]

    # This worker saw "stale-token" refused, but another worker renewed meanwhile: nothing is spent.
    assert client.tokens.renew(stale="stale-token") == current
    assert sandbox.grants() == ["password"]


def test_bad_credentials_are_permanent_and_not_tried_again(
    make_settings: Callable[..., Settings], sandbox: Sandbox, cache: fakeredis.FakeRedis
) -> None:
    bad = make_settings(TrackTikSettings(base_url=sandbox.base_url, password="wrong-password"))
    client = TrackTikClient.from_settings(bad, cache)

    with pytest.raises(UpstreamRejectedError) as first:
        client.create_alarm(seed_alarm())
    with pytest.raises(UpstreamRejectedError):
        TrackTikClient.from_settings(bad, cache).create_alarm(seed_alarm())

    assert first.value.status == 400
    assert [entry["status"] for entry in sandbox.journal(TOKEN_PATH)] == [400]  # one failed login only
    assert sandbox.journal(ALARMS_PATH) == []


def test_corrected_credentials_log_in_despite_a_remembered_refusal(
    make_settings: Callable[..., Settings], sandbox: Sandbox, cache: fakeredis.FakeRedis
) -> None:
    bad = make_settings(TrackTikSettings(base_url=sandbox.base_url, password="wrong-password"))
    with pytest.raises(UpstreamRejectedError):
        TrackTikClient.from_settings(bad, cache).create_alarm(seed_alarm())

    good = make_settings(TrackTikSettings(base_url=sandbox.base_url))
    assert TrackTikClient.from_settings(good, cache).create_alarm(seed_alarm()).id == 22


def test_token_endpoint_429_while_blocked_is_retryable_with_its_retry_after(
    client: TrackTikClient, sandbox: Sandbox
) -> None:
    sandbox.add_fault(method="POST", path=TOKEN_PATH, status=429, headers={"Retry-After": "7200"})

    with pytest.raises(UpstreamUnavailableError) as caught:
        client.create_alarm(seed_alarm())

    assert caught.value.retry_after_s == 3600.0  # capped by the base client
    assert sandbox.journal(ALARMS_PATH) == []


def test_503_on_create_is_unavailable(client: TrackTikClient, sandbox: Sandbox) -> None:
    sandbox.add_fault(method="POST", path=ALARMS_PATH, status=503)

    with pytest.raises(UpstreamUnavailableError):
        client.create_alarm(seed_alarm())

    assert sandbox.stored_alarms() == []


def test_429_on_create_carries_retry_after(client: TrackTikClient, sandbox: Sandbox) -> None:
    sandbox.add_fault(method="POST", path=ALARMS_PATH, status=429, headers={"Retry-After": "17"})

    with pytest.raises(UpstreamUnavailableError) as caught:
        client.create_alarm(seed_alarm())

    assert caught.value.retry_after_s == 17.0


def test_type_code_not_configured_for_the_organization_is_rejected(client: TrackTikClient) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        client.create_alarm(seed_alarm(alarm_organization=688, alarm_type_code="FIRE"))

    assert caught.value.status == 422
    assert "alarmTypeCode" in str(caught.value)


def test_unknown_alarm_id_is_rejected(client: TrackTikClient) -> None:
    with pytest.raises(UpstreamRejectedError) as caught:
        client.get_alarm(999)

    assert caught.value.status == 404


def test_timeout_after_commit_is_outcome_unknown_and_the_ref_search_adopts_the_alarm(
    client: TrackTikClient, sandbox: Sandbox
) -> None:
    sandbox.add_fault(method="POST", path=ALARMS_PATH, timeout_after_commit=True, hold_s=30)

    with pytest.raises(OutcomeUnknownError):
        client.create_alarm(seed_alarm("act-7-key"))

    found = client.find_alarm_by_ref(687, TRIGGERED_ON, "act-7-key")
    (stored,) = sandbox.stored_alarms()
    assert found == CreatedAlarm(id=22, custom_id=stored["customId"], dispatch_task_id=683)
    (search,) = sandbox.journal(ALARMS_PATH)[1:]
    assert search["method"] == "GET"
    assert search["query"]["triggeredOn"] == ["2026-05-26T14:36:37+00:00"]
    assert search["query"]["alarmOrganization"] == ["687"]


def test_a_slow_create_is_waited_for_and_never_made_twice(
    make_settings: Callable[..., Settings], sandbox: Sandbox, cache: fakeredis.FakeRedis
) -> None:
    # TrackTik answers 504 only after 30 s. A create given up at the general read timeout would be
    # an unknown outcome whose search, a second later, finds nothing yet: a second alarm, a second
    # guard. The create waits longer than every other call (scaled down here: 0.5 s against 3 s).
    settings = make_settings(
        TrackTikSettings(base_url=sandbox.base_url, create_read_timeout_s=3.0), http_read_timeout_s=0.5
    )
    client = TrackTikClient.from_settings(settings, cache)
    sandbox.add_fault(method="POST", path=ALARMS_PATH, delay_s=1.5)

    created = client.create_alarm(seed_alarm("act-9-key"))

    (stored,) = sandbox.stored_alarms()
    assert created.id == stored["id"]
    sandbox.add_fault(method="GET", path=ALARMS_PATH, delay_s=1.5)
    with pytest.raises(UpstreamUnavailableError):  # every other call keeps the general timeout
        client.find_alarm_by_ref(687, TRIGGERED_ON, "act-9-key")
    client.session.close()


def test_ref_search_ignores_alarms_of_the_same_second_with_another_ref(client: TrackTikClient) -> None:
    client.create_alarm(seed_alarm("someone-else"))

    assert client.find_alarm_by_ref(687, TRIGGERED_ON, "act-7-key") is None
    assert client.find_alarm_by_ref(687, TRIGGERED_ON, "someone-else") is not None


def test_create_accepts_a_data_envelope(client: TrackTikClient, sandbox: Sandbox) -> None:
    sandbox.add_fault(
        method="POST",
        path=ALARMS_PATH,
        status=201,
        body={"data": {"id": 5, "customId": "019e-x", "dispatchTask": 900, "status": "ACTIVE"}},
    )

    assert client.create_alarm(seed_alarm()) == CreatedAlarm(id=5, custom_id="019e-x", dispatch_task_id=900)


def test_unreadable_create_answer_is_outcome_unknown(client: TrackTikClient, sandbox: Sandbox) -> None:
    sandbox.add_fault(method="POST", path=ALARMS_PATH, status=201, body={"status": "ACTIVE"})

    with pytest.raises(OutcomeUnknownError):
        client.create_alarm(seed_alarm())
