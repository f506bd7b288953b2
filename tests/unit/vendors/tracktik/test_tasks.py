"""The tracktik.create_alarm handler, called directly with a hand-built Job and a real TrackTikClient
pointed at the TrackTik simulator (seed 000; CONTRACTS Part A items 7-8).

The payload built from the alarm and the Montréal example site (organization 687, which the sandbox
configures), the type code per family and kind, the Alta wait for video links and its bound, the
thumbnail attachment, the refs and external id of the Outcome, the permanent rejections, and the
reconcile after a timeout-after-commit that adopts the alarm instead of creating a second one.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
import requests

from app.domain.actions import ClaimedAction
from app.domain.alarms import AlarmContext
from app.domain.sites import Site
from config.settings import Settings
from sandbox.alta.webhook import THUMBNAIL_B64
from sandbox.server import RunningServer, serve_in_thread
from sandbox.tracktik.app import ALARMS_PATH, create_app
from tests.sites_fixture import example_sites
from vendors.alta.settings import AltaSettings
from vendors.tracktik import steps as tracktik_steps
from vendors.tracktik.client import TrackTikClient
from vendors.tracktik.settings import TrackTikSettings
from vendors.tracktik.site import TrackTikSite
from vendors.tracktik.tasks import _create_alarm
from workers.clients import Clients
from workers.clients.errors import NotYetError, OutcomeUnknownError, PreconditionError, UpstreamRejectedError
from workers.perform import Job, Outcome

pytestmark = pytest.mark.unit

OPENED_AT = datetime(2026, 5, 26, 14, 36, 39, 512_000, tzinfo=UTC)
OCCURRED_AT = datetime(2026, 5, 26, 14, 36, 37, tzinfo=UTC)
IDEMPOTENCY_KEY = "alarm-7-tracktik.create_alarm-1"
VIDEO_LINK = "https://acme.ca1.alta.avigilon.com/cloud?t=guest-token-1"


@pytest.fixture
def server() -> Iterator[RunningServer]:
    running = serve_in_thread(create_app(), port=0)
    yield running
    running.stop()


@pytest.fixture
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        yield session


@pytest.fixture
def settings(make_settings: Callable[..., Settings], server: RunningServer) -> Settings:
    return make_settings(
        TrackTikSettings(base_url=server.base_url, create_read_timeout_s=1.0),
        AltaSettings(video_wait_s=30.0),
        http_read_timeout_s=1.0,
    )


@pytest.fixture
def clients(settings: Settings) -> Clients:
    tracktik = TrackTikClient.from_settings(settings, fakeredis.FakeRedis())
    return Clients.of(tracktik)


@pytest.fixture
def site() -> Site:
    found = example_sites().site("montreal-hq")
    assert found is not None and found.table(TrackTikSite) is not None
    return found


def stored_alarms(http: requests.Session, server: RunningServer) -> list[dict[str, Any]]:
    alarms: list[dict[str, Any]] = http.get(server.base_url + "/_sandbox/alarms", timeout=5).json()
    return alarms


def posts(http: requests.Session, server: RunningServer) -> list[dict[str, Any]]:
    entries = http.get(
        server.base_url + "/_sandbox/journal", params={"path": ALARMS_PATH, "method": "POST"}, timeout=5
    ).json()
    return [entry["body"] for entry in entries]


def panel_alarm(site: Site | None, **overrides: Any) -> AlarmContext:
    values: dict[str, Any] = {
        "id": 7,
        "state": "open",
        "site": site,
        "source_kind": "panel",
        "account": "ab-95367",
        "zone": "3",
        "code": "BA",
        "family": "burglary",
        "priority": "property",
        "description": "Burglary alarm",
        "opened_at": OPENED_AT,
        "occurred_at": OCCURRED_AT,
        "message": "Rear door contact",
        "payload": {"account": "ab-95367", "code": "BA", "zone": "3"},
        "refs": {},
        "verification": None,
    }
    values.update(overrides)
    return AlarmContext(**values)


def alta_alarm(site: Site, **overrides: Any) -> AlarmContext:
    values: dict[str, Any] = {
        "source_kind": "alta",
        "action_kinds": ("alta.find_ongoing_alert", "tracktik.create_alarm"),
        "account": None,
        "zone": "az-5d1c",
        "code": None,
        "description": "Person detected at Loading Dock",
        "message": "Person",
        "payload": {"alarmZoneId": "az-5d1c", "detection": "Person", "jpg": THUMBNAIL_B64},
    }
    values.update(overrides)
    return panel_alarm(site, **values)


def job(
    clients: Clients,
    settings: Settings,
    alarm: AlarmContext | None,
    *,
    now: datetime = OPENED_AT + timedelta(seconds=1),
    attempts: int = 1,
    outcome_unknown: bool = False,
) -> Job:
    action = ClaimedAction(
        id=11,
        alarm_id=alarm.id if alarm else None,
        kind=tracktik_steps.CREATE_ALARM,
        attempts=attempts,
        max_attempts=5,
        lease_token="lease",
        idempotency_key=IDEMPOTENCY_KEY,
        outcome_unknown=outcome_unknown,
        params={},
    )
    return Job(action=action, alarm=alarm, clients=clients, settings=settings, now=now)


def test_panel_alarm_creates_seed_000_alarm_and_records_the_dispatch_task(
    clients: Clients, settings: Settings, site: Site, http: requests.Session, server: RunningServer
) -> None:
    outcome = _create_alarm(job(clients, settings, panel_alarm(site)))

    (stored,) = stored_alarms(http, server)
    assert outcome.external_id == "683"
    assert outcome.refs == {
        "tracktik_alarm_id": 22,
        "tracktik_custom_id": stored["customId"],
        "tracktik_dispatch_task_id": 683,
    }
    assert outcome.follow_ups == ()
    assert outcome.fallback is None
    assert outcome.result["adopted"] is False
    (body,) = posts(http, server)
    assert body["alarmTypeCode"] == "11111"  # the site's burglary code
    assert body["alarmOrganization"] == 687
    assert body["alarmConnectionCustomId"] == "ab-95367"
    assert body["triggeredOn"] == "2026-05-26T14:36:37+00:00"  # the event's own time
    assert body["registeredOn"] == "2026-05-26T14:36:39+00:00"  # opened_at, no microseconds
    assert body["location"] == {
        "name": "Acme Montréal HQ",
        "addressLine1": "4200 Blvd Saint-Laurent",
        "addressLine2": None,
        "city": "Montréal",
        "state": "QC",
        "country": "CA",
        "postalCode": "H2W 2R2",
        "latitude": 45.5183,
        "longitude": -73.5822,
    }
    assert body["onSiteInformation"]["instructions"] == site.instructions
    assert body["notes"] == [
        {"comment": f"alarm-bridge ref {IDEMPOTENCY_KEY}"},
        # 14:36:37 UTC on 2026-05-26 is 10:36:37 in Montréal (EDT): the site's timezone.
        {
            "comment": "Burglary alarm — SIA BA — zone 3 — account ab-95367 — Rear door contact"
            " — at 2026-05-26 10:36:37 EDT site time"
        },
    ]
    assert body["attachments"] == []
    assert stored["notes"][0]["comment"] == f"alarm-bridge ref {IDEMPOTENCY_KEY}"


@pytest.mark.parametrize(
    ("code", "family", "type_code"),
    [("FA", "fire", "FIRE"), ("AT", "power", "TECHNICAL"), ("PA", "panic", "INTRUSION")],
    ids=["fire-uses-its-family", "trouble-uses-trouble", "unnamed-family-uses-default"],
)
def test_type_code_follows_family_and_kind(
    clients: Clients,
    settings: Settings,
    site: Site,
    http: requests.Session,
    server: RunningServer,
    code: str,
    family: str,
    type_code: str,
) -> None:
    _create_alarm(job(clients, settings, panel_alarm(site, code=code, family=family)))

    assert posts(http, server)[0]["alarmTypeCode"] == type_code


def test_triggered_on_falls_back_to_opened_at_without_an_event_time(
    clients: Clients, settings: Settings, site: Site, http: requests.Session, server: RunningServer
) -> None:
    _create_alarm(job(clients, settings, panel_alarm(site, occurred_at=None)))

    assert posts(http, server)[0]["triggeredOn"] == "2026-05-26T14:36:39+00:00"


def test_alta_alarm_waits_for_video_links_without_calling_tracktik(
    clients: Clients, settings: Settings, site: Site, http: requests.Session, server: RunningServer
) -> None:
    with pytest.raises(NotYetError) as caught:
        _create_alarm(job(clients, settings, alta_alarm(site), now=OPENED_AT + timedelta(seconds=29)))

    assert caught.value.retry_after_s == 2
    assert "video" in caught.value.reason
    assert posts(http, server) == []


def test_alta_alarm_with_video_links_sends_them_in_a_note_and_the_thumbnail_as_attachment(
    clients: Clients, settings: Settings, site: Site, http: requests.Session, server: RunningServer
) -> None:
    alarm = alta_alarm(site, refs={"video_links": [VIDEO_LINK]})

    outcome = _create_alarm(job(clients, settings, alarm))

    (body,) = posts(http, server)
    assert body["alarmTypeCode"] == "11111"
    assert body["notes"][0] == {"comment": f"alarm-bridge ref {IDEMPOTENCY_KEY}"}
    assert body["notes"][2] == {"comment": f"Video: {VIDEO_LINK}"}
    assert body["attachments"] == [
        {"base64EncodedData": "data:image/jpeg;base64," + THUMBNAIL_B64, "mimeType": "image/jpeg"}
    ]
    (stored,) = stored_alarms(http, server)
    assert stored["attachments"][0]["format"] == "jpeg"
    assert outcome.result["video_links"] == 1


def test_alta_alarm_after_the_wait_goes_without_links_and_says_so(
    clients: Clients, settings: Settings, site: Site, http: requests.Session, server: RunningServer
) -> None:
    _create_alarm(job(clients, settings, alta_alarm(site), now=OPENED_AT + timedelta(seconds=30)))

    (body,) = posts(http, server)
    assert "No video links from Alta within 30 s" in body["notes"][-1]["comment"]
    assert len(body["attachments"]) == 1


def test_alta_thumbnail_that_is_not_a_jpeg_is_left_out(
    clients: Clients, settings: Settings, site: Site, http: requests.Session, server: RunningServer
) -> None:
    alarm = alta_alarm(site, refs={"video_links": []}, payload={"jpg": "N/A"})
    _create_alarm(job(clients, settings, alarm))
    broken = alta_alarm(site, refs={"video_links": []}, payload={"jpg": "bm90IGEganBlZw=="})
    _create_alarm(job(clients, settings, broken))

    assert [body["attachments"] for body in posts(http, server)] == [[], []]


def test_site_without_tracktik_table_is_a_permanent_rejection(
    clients: Clients, settings: Settings, site: Site, http: requests.Session, server: RunningServer
) -> None:
    no_tracktik = site.without(TrackTikSite)

    with pytest.raises(PreconditionError, match="tracktik: not sent: site has no tracktik table"):
        _create_alarm(job(clients, settings, panel_alarm(no_tracktik)))
    with pytest.raises(UpstreamRejectedError):
        _create_alarm(job(clients, settings, None))

    assert posts(http, server) == []


def test_timeout_after_commit_then_the_retry_adopts_the_alarm_instead_of_creating_another(
    clients: Clients, settings: Settings, site: Site, http: requests.Session, server: RunningServer
) -> None:
    fault = {"method": "POST", "path": ALARMS_PATH, "timeout_after_commit": True, "hold_s": 30}
    assert http.post(server.base_url + "/_sandbox/faults", json=fault, timeout=5).status_code == 201
    alarm = panel_alarm(site)

    with pytest.raises(OutcomeUnknownError):
        _create_alarm(job(clients, settings, alarm))
    outcome: Outcome = _create_alarm(job(clients, settings, alarm, attempts=2, outcome_unknown=True))

    (stored,) = stored_alarms(http, server)
    assert outcome.result["adopted"] is True
    assert outcome.external_id == str(stored["dispatchTask"])
    assert outcome.refs["tracktik_alarm_id"] == stored["id"]
    assert len(posts(http, server)) == 1


def test_retry_after_a_failure_that_created_nothing_creates_the_alarm(
    clients: Clients, settings: Settings, site: Site, http: requests.Session, server: RunningServer
) -> None:
    outcome = _create_alarm(job(clients, settings, panel_alarm(site), attempts=2))

    assert outcome.result["adopted"] is False
    assert len(stored_alarms(http, server)) == 1


def test_an_alta_alarm_whose_plan_does_not_look_for_the_alert_does_not_wait_for_video(
    site: Site, clients: Clients, settings: Settings
) -> None:
    outcome = _create_alarm(
        job(clients, settings, alta_alarm(site, action_kinds=("tracktik.create_alarm",)), now=OPENED_AT)
    )
    assert outcome.refs["tracktik_alarm_id"]
