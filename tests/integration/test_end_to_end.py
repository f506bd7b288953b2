"""End to end through the real stack: web over HTTP, a real Celery worker on the real Redis,
PostgreSQL, the dispatcher, and the five simulators over HTTP."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.domain.intake import HOLD_FOR_911
from config.settings import Settings
from tests.polling import wait_until
from tests.stack import OPERATOR, Stack
from vendors.alta.settings import AltaSettings
from vendors.callonalarm.settings import CallOnAlarmSettings

pytestmark = pytest.mark.integration


def event(account: str, code: str, zone: str = "3", **kw: Any) -> dict[str, Any]:
    body = {"account": account, "code": code, "zone": zone, "occurred_at": datetime.now(UTC).isoformat()}
    body["event_id"] = uuid.uuid4().hex
    body.update(kw)
    return body


@pytest.fixture
def stack(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str, tmp_path: Path
) -> Iterator[Stack]:
    settings = make_settings(
        AltaSettings(lookup_timeout_s=30, video_wait_s=20),
        CallOnAlarmSettings(poll_interval_s=2),
        database_url=postgres_url,
        redis_url=redis_url,
        broker_key_prefix=f"abe2e:{uuid.uuid4().hex[:10]}:",
    )
    with Stack(settings, tmp_path).running() as running:
        yield running


def _after(moment: str, seconds: float) -> Callable[[], bool]:
    deadline = datetime.fromisoformat(moment) + timedelta(seconds=seconds)
    return lambda: datetime.now(UTC) > deadline


def test_an_alta_webhook_finds_the_alert_shares_video_creates_tracktik_and_verifies(stack: Stack) -> None:
    played = stack.http.post(
        f"{stack.sandbox.base_url}/alta/_sandbox/detections",
        json={"alarm_zone_id": "az-5d1c", "device_id": "dev-2"},
        timeout=10,
    ).json()
    assert played["webhook"]["status"] == 202, played["webhook"]
    alarm_id = int(json.loads(played["webhook"]["response_body"])["alarm_id"])
    stack.advance(10)  # Alta lists the alert and adds its bookmark a few seconds after the webhook

    alarm = stack.wait_for(alarm_id, "tracktik.create_alarm")
    links = alarm["refs"]["video_links"]
    assert links and all("/cloud?t=" in link for link in links)
    assert alarm["refs"]["alta_alert_guid"] == played["alert"]["guid"]
    [created] = stack.sandbox_get("/tracktik/_sandbox/alarms")
    notes = " ".join(note["comment"] for note in created["notes"])
    assert all(link in notes for link in links)

    stack.command(f"/v1/alarms/{alarm_id}/verify", {"verdict": "valid"})
    stack.wait_for(alarm_id, "alta.verify")
    [alert] = [a for a in stack.sandbox_get("/alta/_sandbox/alerts") if a["guid"] == played["alert"]["guid"]]
    assert alert["acknowledgment_code"] == 201


def test_a_cancel_in_time_after_a_guard_was_dispatched_stands_down_and_asks_a_person(stack: Stack) -> None:
    # Burglary: TrackTik now, a call after 3 s (cancellable); the window is 90 s.
    alarm_id = stack.post_event(event("ab-95367", "BA", zone="3"))["alarm_id"]
    alarm = stack.wait_for(alarm_id, "tracktik.create_alarm")
    [dispatch] = stack.sandbox_get("/tracktik/_sandbox/alarms")
    assert str(alarm["refs"]["tracktik_alarm_id"]) == str(dispatch["id"])

    stack.post_event(event("ab-95367", "BC", zone="12"))  # the zone of a cancel is the user number

    alarm = stack.alarm(alarm_id)
    assert alarm["state"] == "needs_person" and alarm["panel_cancelled_at"] is not None
    assert alarm["needs_person_reason"] == (
        f"cancelled at the panel — TrackTik dispatch {dispatch['id']} is active: cancel it there"
    )
    assert stack.actions(alarm_id)["callonalarm.trigger"] == "cancelled"
    flagged = stack.http.get(
        f"{stack.web.base_url}/v1/alarms", params={"needs_person": "true"}, headers=OPERATOR, timeout=10
    ).json()["alarms"]
    assert [a["id"] for a in flagged] == [alarm_id]
    wait_until(_after(alarm["opened_at"], 5), timeout_s=15)  # well past the 3 s the call waited
    assert stack.sandbox_get("/callonalarm/_sandbox/alerts") == []

    ended = stack.command(f"/v1/alarms/{alarm_id}/acknowledge")  # the operator recalled the guard
    assert (ended["state"], ended["outcome"]) == ("ended", "cancelled")


def test_a_cancel_before_anything_left_ends_the_alarm_as_cancelled(stack: Stack) -> None:
    stack.stop_worker()  # nothing runs: the cancel finds every step still waiting
    alarm_id = stack.post_event(event("ab-95367", "BA", zone="5"))["alarm_id"]
    stack.post_event(event("ab-95367", "OP", zone="2"))
    alarm = stack.alarm(alarm_id)
    assert (alarm["state"], alarm["outcome"]) == ("ended", "cancelled")
    assert set(stack.actions(alarm_id).values()) == {"cancelled"}


def test_a_restore_does_not_stop_the_delayed_call(stack: Stack) -> None:
    alarm_id = stack.post_event(event("ab-95367", "BA", zone="4"))["alarm_id"]
    stack.post_event(event("ab-95367", "BR", zone="4"))
    stack.wait_for(alarm_id, "callonalarm.trigger", timeout_s=30)
    calls = stack.sandbox_get("/callonalarm/_sandbox/alerts")
    assert [(c["accountNumber"], c["eventCode"]) for c in calls] == [("1001", "BA")]
    assert stack.alarm(alarm_id)["restored_at"] is not None


def test_a_fire_reaches_rapidsos_first_then_tracktik_and_the_cad_without_delay(stack: Stack) -> None:
    alarm_id = stack.post_event(event("ny-1", "FA"))["alarm_id"]
    for kind in ("rapidsos.create_alert", "tracktik.create_alarm", "cad.upload_incident"):
        alarm = stack.wait_for(alarm_id, kind)
    opened = datetime.fromisoformat(alarm["opened_at"])
    # Never held for a cancel window; the guard and the CAD only wait for the 911 request to leave.
    assert all(datetime.fromisoformat(a["due_at"]) - opened < HOLD_FOR_911 for a in alarm["actions"])
    sent = {
        vendor: min(datetime.fromisoformat(e["at"]) for e in stack.sandbox_get(f"/{vendor}/_sandbox/journal")
                    if e["method"] in ("POST", "PUT") and e["path"].startswith(path))
        for vendor, path in (("rapidsos", "/v1/alerts"), ("tracktik", "/rest/v1/alarms"),
                             ("cad", "/api/v1/external/incident"))
    }  # fmt: skip
    assert sent["rapidsos"] <= sent["tracktik"] and sent["rapidsos"] <= sent["cad"]
    assert all(a["queue"] == "life_safety" for a in alarm["actions"])
    assert alarm["refs"]["rapidsos_alert_id"]
    assert len(stack.sandbox_get("/rapidsos/_sandbox/alerts")) == 1
    assert len(stack.sandbox_get("/tracktik/_sandbox/alarms")) == 1
    assert len(stack.sandbox_get("/cad/_sandbox/incidents")) == 1


def test_a_216_from_rapidsos_falls_back_to_a_phone_call(stack: Stack) -> None:
    alarm_id = stack.post_event(event("fl-1", "FA"))["alarm_id"]  # Florida: no PSAP in the sandbox's map
    alarm = stack.wait_for(alarm_id, "callonalarm.trigger", timeout_s=30)
    assert alarm["needs_person"] is True
    assert "PSAP" in (alarm["needs_person_reason"] or "")
    calls = stack.sandbox_get("/callonalarm/_sandbox/alerts")
    assert [(c["accountNumber"], c["eventCode"]) for c in calls] == [("1005", "FA")]
    assert any(line["kind"].startswith("fallback") for line in alarm["timeline"])
