"""The Alta handlers, called directly with a hand-built Job and a real AltaClient on the simulator.

The handlers' own waiting bound runs on ``job.now - alarm.opened_at`` (built here); Alta's late listing
and late bookmarks run on the simulator's clock (advanced through its control API).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import fakeredis
import pytest
import requests

from app.domain.actions import ClaimedAction
from app.domain.alarms import AlarmContext
from config.settings import Settings
from sandbox.alta import create_app
from sandbox.server import serve_in_thread
from vendors.alta import steps as alta_steps
from vendors.alta.client import AltaClient
from vendors.alta.settings import AltaSettings
from vendors.alta.tasks import _collect_video, _end, _find_ongoing_alert, _verify
from workers.clients import Clients
from workers.clients.errors import NotYetError, UpstreamRejectedError, UpstreamUnavailableError
from workers.perform import FollowUp, Job

DOCK = "az-5d1c"
OPENED = datetime(2026, 1, 6, 10, 0, tzinfo=UTC)


class Sim:
    """The Alta simulator's control API."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.http = requests.Session()

    def control(self, method: str, path: str, body: Any = None) -> Any:
        response = self.http.request(method, self.base_url + path, json=body, timeout=5)
        assert response.status_code < 300, response.text
        return response.json() if response.content else None

    def detect(self, zone: str = DOCK, **options: Any) -> dict[str, Any]:
        result: dict[str, Any] = self.control(
            "POST", "/_sandbox/detections", {"alarm_zone_id": zone, "fire_webhook": False, **options}
        )
        return result

    def advance(self, seconds: float) -> None:
        self.control("POST", "/_sandbox/clock", {"advance_s": seconds})

    def time(self) -> float:
        return float(self.control("GET", "/_sandbox/clock")["time"])

    def fault(self, **fault: Any) -> None:
        self.control("POST", "/_sandbox/faults", fault)

    def journal(self, path: str, method: str = "") -> list[dict[str, Any]]:
        entries: list[dict[str, Any]] = self.control("GET", f"/_sandbox/journal?path={path}&method={method}")
        return entries

    def alerts(self) -> list[dict[str, Any]]:
        alerts: list[dict[str, Any]] = self.control("GET", "/_sandbox/alerts")
        return alerts


@pytest.fixture
def sim() -> Iterator[Sim]:
    server = serve_in_thread(create_app(), port=0)
    control = Sim(server.base_url)
    yield control
    control.http.close()
    server.stop()


@pytest.fixture
def settings(sim: Sim) -> Settings:
    return Settings(http_read_timeout_s=5.0, broker_key_prefix="unit:").with_vendor(
        AltaSettings(base_url=sim.base_url, lookup_timeout_s=120.0, video_wait_s=30.0)
    )


@pytest.fixture
def clients(settings: Settings) -> Clients:
    alta = AltaClient.from_settings(settings, fakeredis.FakeRedis())
    return Clients.of(alta)


def alarm(refs: dict[str, Any] | None = None, **fields: Any) -> AlarmContext:
    values: dict[str, Any] = {
        "id": 7,
        "state": "open",
        "site": None,
        "source_kind": "alta",
        "account": DOCK,
        "zone": None,
        "code": None,
        "family": "burglary",
        "priority": "high",
        "description": "Person detected",
        # The simulator's clock is real time (plus what a test advanced): the alarm opened now.
        "opened_at": datetime.now(UTC).replace(microsecond=0),
        "occurred_at": None,
        "message": "Person",
        "payload": {},
        "refs": refs or {},
        "verification": None,
    }
    values.update(fields)
    return AlarmContext(**values)


def job(
    clients: Clients,
    settings: Settings,
    kind: str,
    *,
    context: AlarmContext | None,
    after_s: float = 1.0,
    params: dict[str, Any] | None = None,
) -> Job:
    action = ClaimedAction(
        id=11,
        alarm_id=None if context is None else context.id,
        kind=kind,
        attempts=1,
        max_attempts=5,
        lease_token="lease",
        idempotency_key=f"{kind}:7",
        outcome_unknown=False,
        params=params or {},
    )
    opened = OPENED if context is None else context.opened_at
    return Job(action, context, clients, settings, opened + timedelta(seconds=after_s))


def merged(context: AlarmContext, refs: dict[str, Any]) -> AlarmContext:
    """The alarm as the next step sees it once perform() merged a step's refs."""
    return replace(context, refs={**context.refs, **refs})


# --- alta.find_ongoing_alert ----------------------------------------------------------------------------


def test_find_then_collect_follows_the_late_listing_and_the_late_bookmarks(
    sim: Sim, clients: Clients, settings: Settings
) -> None:
    played = sim.detect(DOCK, device_id="dev-2")
    context = alarm()
    find = job(
        clients,
        settings,
        alta_steps.FIND_ONGOING_ALERT,
        context=context,
        params={"then": "alta.collect_video"},
    )
    with pytest.raises(NotYetError) as waiting:
        _find_ongoing_alert(find)
    assert waiting.value.retry_after_s == 2
    assert "az-5d1c is not listed yet" in waiting.value.reason

    sim.advance(2)
    found = _find_ongoing_alert(replace(find, now=find.now + timedelta(seconds=2)))
    guid = played["alert"]["guid"]
    assert found.external_id == guid
    assert found.refs == {
        "alta_alert_guid": guid,
        "alta_merged": False,
        "alta_origin_name": "Loading Dock Cam 2",
    }
    assert found.follow_ups == (FollowUp(alta_steps.COLLECT_VIDEO),)
    assert found.needs_person is None

    context = merged(context, found.refs)
    collect = job(clients, settings, alta_steps.COLLECT_VIDEO, context=context, after_s=4)
    with pytest.raises(NotYetError) as no_video:
        _collect_video(collect)
    assert no_video.value.retry_after_s == 2

    sim.advance(3)  # the bookmark shows 5 s after the detection
    collected = _collect_video(replace(collect, now=collect.now + timedelta(seconds=3)))
    token = played["bookmark"]["guest_token"]
    assert collected.refs == {"video_links": [f"{sim.base_url}/cloud?t={token}"]}
    assert collected.external_id == guid
    assert "1 video link" in (collected.message or "")


def test_find_plans_no_follow_up_unless_asked(sim: Sim, clients: Clients, settings: Settings) -> None:
    sim.detect(DOCK)
    sim.advance(2)
    found = _find_ongoing_alert(job(clients, settings, alta_steps.FIND_ONGOING_ALERT, context=alarm()))
    assert found.follow_ups == ()
    assert found.refs["alta_alert_guid"]


def test_find_reports_a_merged_alert(sim: Sim, clients: Clients, settings: Settings) -> None:
    sim.detect(DOCK, device_id="dev-2")
    sim.advance(20)
    sim.detect(DOCK, device_id="dev-3")
    found = _find_ongoing_alert(job(clients, settings, alta_steps.FIND_ONGOING_ALERT, context=alarm()))
    assert found.refs["alta_merged"] is True
    assert found.refs["alta_origin_name"] == "Loading Dock Cam 2"


def test_find_gives_up_to_a_person_after_the_lookup_timeout(
    sim: Sim, clients: Clients, settings: Settings
) -> None:
    late = job(clients, settings, alta_steps.FIND_ONGOING_ALERT, context=alarm(), after_s=121)
    outcome = _find_ongoing_alert(late)
    assert outcome.needs_person == "no ongoing Alta alert for zone az-5d1c after 121 s"
    assert outcome.refs == {}
    assert outcome.follow_ups == ()


def test_find_waits_for_the_alarms_own_alert_rather_than_an_older_open_one(
    sim: Sim, clients: Clients, settings: Settings
) -> None:
    sim.detect(DOCK)  # an older alert of the zone, never ended
    sim.advance(600)
    newer = sim.detect(DOCK, device_id="dev-3")  # a new alert: listed only 2 s from now
    opened = datetime.fromtimestamp(sim.time(), tz=UTC)
    find = job(clients, settings, alta_steps.FIND_ONGOING_ALERT, context=alarm(opened_at=opened))
    with pytest.raises(NotYetError):
        _find_ongoing_alert(find)
    sim.advance(2)
    assert _find_ongoing_alert(find).external_id == newer["alert"]["guid"]


def _now(sim: Sim) -> datetime:
    return datetime.fromtimestamp(sim.time(), tz=UTC)


def test_find_matches_the_zone_however_the_sites_file_spells_it(
    sim: Sim, clients: Clients, settings: Settings
) -> None:
    """Routing ignores case, so the alarm may carry the zone as the sites file spells it."""
    played = sim.detect(DOCK, listing_delay_s=0)
    found = _find_ongoing_alert(
        job(
            clients,
            settings,
            alta_steps.FIND_ONGOING_ALERT,
            context=alarm(account=" AZ-5D1C", opened_at=_now(sim)),
        )
    )
    assert found.external_id == played["alert"]["guid"]


def test_a_late_lookup_never_adopts_a_later_alarms_alert(
    sim: Sim, clients: Clients, settings: Settings
) -> None:
    """Alarm A's lookup was held back (a backlog, a 429) past a second detection that opened another
    alert: A must not take it (its verdict and End would go to B's alert)."""
    first = sim.detect(DOCK, listing_delay_s=0)
    opened = _now(sim)
    sim.advance(70)
    sim.detect(DOCK, device_id="dev-3", listing_delay_s=0)  # past the merge window: a new alert
    late = job(clients, settings, alta_steps.FIND_ONGOING_ALERT, context=alarm(opened_at=opened), after_s=70)
    assert _find_ongoing_alert(late).external_id == first["alert"]["guid"]


def test_the_alarms_own_alert_listed_late_wins_over_an_older_open_one(
    sim: Sim, clients: Clients, settings: Settings
) -> None:
    """An older alert of the zone (110 s old, unmerged, never ended) is listed; the alarm's own is not
    yet. The lookup waits for its own; only after OLDER_ALERT_AFTER_S does it take the older one (a
    detection merged into it under a zone's longer merge window)."""
    sim.detect(DOCK, listing_delay_s=0)
    sim.advance(110)
    own = sim.detect(DOCK, device_id="dev-3", listing_delay_s=3)
    opened = _now(sim)
    with pytest.raises(NotYetError):
        _find_ongoing_alert(
            job(clients, settings, alta_steps.FIND_ONGOING_ALERT, context=alarm(opened_at=opened))
        )
    sim.advance(3)
    found = _find_ongoing_alert(
        job(clients, settings, alta_steps.FIND_ONGOING_ALERT, context=alarm(opened_at=opened), after_s=3)
    )
    assert found.external_id == own["alert"]["guid"]


def test_an_older_open_alert_is_taken_once_the_alarms_own_had_time_to_be_listed(
    sim: Sim, clients: Clients, settings: Settings
) -> None:
    older = sim.detect(DOCK, listing_delay_s=0)
    sim.advance(110)
    opened = _now(sim)  # no alert of its own comes (merged into the older one upstream)
    found = _find_ongoing_alert(
        job(clients, settings, alta_steps.FIND_ONGOING_ALERT, context=alarm(opened_at=opened), after_s=11)
    )
    assert found.external_id == older["alert"]["guid"]


def test_find_without_its_alarm_or_zone_is_permanent(clients: Clients, settings: Settings) -> None:
    with pytest.raises(UpstreamRejectedError):
        _find_ongoing_alert(job(clients, settings, alta_steps.FIND_ONGOING_ALERT, context=None))
    with pytest.raises(UpstreamRejectedError):
        _find_ongoing_alert(
            job(clients, settings, alta_steps.FIND_ONGOING_ALERT, context=alarm(account=None))
        )


def test_find_lets_an_upstream_failure_through_for_perform_to_classify(
    sim: Sim, clients: Clients, settings: Settings
) -> None:
    sim.fault(path="/api/v1/ongoingAlerts", status=503)
    with pytest.raises(UpstreamUnavailableError):
        _find_ongoing_alert(job(clients, settings, alta_steps.FIND_ONGOING_ALERT, context=alarm()))


# --- alta.collect_video ---------------------------------------------------------------------------------


def test_collect_waits_for_the_guid_then_gives_up_with_no_links(clients: Clients, settings: Settings) -> None:
    with pytest.raises(NotYetError):
        _collect_video(job(clients, settings, alta_steps.COLLECT_VIDEO, context=alarm(), after_s=10))
    outcome = _collect_video(job(clients, settings, alta_steps.COLLECT_VIDEO, context=alarm(), after_s=120))
    assert outcome.refs == {"video_links": []}
    assert "no Alta alert" in (outcome.message or "")


def test_collect_with_no_bookmark_after_the_wait_succeeds_with_no_links(
    sim: Sim, clients: Clients, settings: Settings
) -> None:
    guid = sim.detect(DOCK)["alert"]["guid"]
    sim.advance(2)  # listed, bookmark not visible yet
    context = alarm({"alta_alert_guid": guid})
    outcome = _collect_video(job(clients, settings, alta_steps.COLLECT_VIDEO, context=context, after_s=31))
    assert outcome.refs == {"video_links": []}
    assert outcome.needs_person is None
    assert "no Alta bookmark" in (outcome.message or "")


def test_collect_keeps_bookmark_order_and_drops_duplicate_tokens(
    sim: Sim, clients: Clients, settings: Settings
) -> None:
    marks = [
        {"id": "1", "guest_token": "tok-b"},
        {"id": "2", "guest_token": "tok-a"},
        {"id": "3", "guest_token": "tok-b"},
    ]
    sim.fault(path="/api/v1/alerts/g-1/bookmarks", status=200, body=marks)
    context = alarm({"alta_alert_guid": "g-1"})
    outcome = _collect_video(job(clients, settings, alta_steps.COLLECT_VIDEO, context=context))
    assert outcome.refs == {"video_links": [f"{sim.base_url}/cloud?t=tok-b", f"{sim.base_url}/cloud?t=tok-a"]}


def test_collect_links_every_merged_detection(sim: Sim, clients: Clients, settings: Settings) -> None:
    first = sim.detect(DOCK, device_id="dev-2")
    sim.advance(10)
    second = sim.detect(DOCK, device_id="dev-3")
    sim.advance(5)
    context = alarm({"alta_alert_guid": first["alert"]["guid"]})
    outcome = _collect_video(job(clients, settings, alta_steps.COLLECT_VIDEO, context=context))
    tokens = [first["bookmark"]["guest_token"], second["bookmark"]["guest_token"]]
    assert outcome.refs["video_links"] == [f"{sim.base_url}/cloud?t={token}" for token in tokens]


# --- alta.verify ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("verdict", "code"), [("valid", 201), ("false", 202), ("none", 101)])
def test_verify_sends_the_verdicts_code_with_the_alerts_refs(
    sim: Sim, clients: Clients, settings: Settings, verdict: str, code: int
) -> None:
    guid = sim.detect(DOCK)["alert"]["guid"]
    sim.advance(2)
    context = alarm({"alta_alert_guid": guid, "alta_merged": False, "alta_origin_name": "Loading Dock Cam 2"})
    outcome = _verify(
        job(
            clients,
            settings,
            alta_steps.VERIFY,
            context=context,
            after_s=300,
            params={"verdict": verdict},
        )
    )
    [call] = sim.journal(f"/api/v1/alerts/{guid}", "POST")
    assert call["body"] == {
        "acknowledgment_code": code,
        "guid": guid,
        "merged": False,
        "origin_name": "Loading Dock Cam 2",
    }
    assert outcome.external_id == guid
    assert outcome.refs["alta_verification"] == {
        "verdict": verdict,
        "acknowledgment_code": code,
        "ended": code == 202,
    }
    assert outcome.refs.get("alta_ended") is (True if code == 202 else None)
    assert (sim.alerts()[0]["ended_at"] is not None) is (code == 202)


def test_verify_refuses_an_unknown_verdict(clients: Clients, settings: Settings) -> None:
    context = alarm({"alta_alert_guid": "g-1"})
    with pytest.raises(UpstreamRejectedError):
        _verify(job(clients, settings, alta_steps.VERIFY, context=context, params={"verdict": "maybe"}))


def test_verify_waits_for_the_guid_then_hands_over_to_a_person(clients: Clients, settings: Settings) -> None:
    params = {"verdict": "valid"}
    with pytest.raises(NotYetError):
        _verify(job(clients, settings, alta_steps.VERIFY, context=alarm(), after_s=5, params=params))
    outcome = _verify(job(clients, settings, alta_steps.VERIFY, context=alarm(), after_s=200, params=params))
    assert outcome.needs_person is not None and "not sent to Alta" in outcome.needs_person


# --- alta.end -------------------------------------------------------------------------------------------


def test_end_ends_the_alert_and_may_run_twice(sim: Sim, clients: Clients, settings: Settings) -> None:
    guid = sim.detect(DOCK)["alert"]["guid"]
    sim.advance(2)
    step = job(clients, settings, alta_steps.END, context=alarm({"alta_alert_guid": guid}))
    first, again = _end(step), _end(step)
    assert first.message == again.message == f"Alta alert {guid} ended"
    assert first.refs == {"alta_ended": True}
    assert sim.alerts()[0]["ended_at"] is not None


def test_end_of_an_alert_alta_no_longer_knows_succeeds(clients: Clients, settings: Settings) -> None:
    step = job(clients, settings, alta_steps.END, context=alarm({"alta_alert_guid": "gone-guid"}))
    outcome = _end(step)
    assert "already gone" in (outcome.message or "")
    assert outcome.needs_person is None


def test_end_waits_for_the_lookup_then_asks_a_person(sim: Sim, clients: Clients, settings: Settings) -> None:
    with pytest.raises(NotYetError):
        _end(job(clients, settings, alta_steps.END, context=alarm(), after_s=1.0))
    late = settings.vendor(AltaSettings).lookup_timeout_s + 1
    outcome = _end(job(clients, settings, alta_steps.END, context=alarm(), after_s=late))
    assert outcome.needs_person and "by hand" in outcome.needs_person
    assert sim.journal("/api/v1") == []
