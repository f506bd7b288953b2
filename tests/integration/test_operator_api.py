"""The operator commands on both ledgers: verify, acknowledge, end, retry; their errors and auth."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select

from app.domain.outbox import RecordingOutbox
from app.ledger.models import Action, ActionState, Alarm
from app.web import create_app
from config.settings import Settings
from tests.sites_fixture import (
    ALTA_TOKEN,
    ALTA_ZONE,
    EXAMPLE_SITES,
    MONTREAL_ACCOUNT,
    PANEL_TOKEN,
    SOURCE_ENV,
)

pytestmark = pytest.mark.integration
OPERATOR_KEY = "op-key-for-the-tests"  # the settings refuse a key under 16 characters
OP = {"Authorization": f"Bearer {OPERATOR_KEY}"}


class Console:
    def __init__(self, settings: Settings) -> None:
        self.outbox = RecordingOutbox()
        self.app = create_app(settings, outbox=self.outbox, ping_broker=lambda: None)
        self.client: FlaskClient = self.app.test_client()
        self.sessions = self.app.extensions["alarm_bridge"].sessions

    def panel(self, code: str, **kw: Any) -> int:
        body = {
            "account": MONTREAL_ACCOUNT,
            "code": code,
            "zone": "3",
            "occurred_at": datetime.now(UTC).isoformat(),
        }
        body.update(kw)
        response = self.client.post(
            "/v1/events", json=body, headers={"Authorization": f"Bearer {PANEL_TOKEN}"}
        )
        assert response.status_code == 202
        return int(response.json["alarm_id"])

    def alta(self) -> int:
        response = self.client.post(
            "/v1/webhooks/alta",
            json={"alarmZoneId": ALTA_ZONE},
            headers={"Authorization": f"Bearer {ALTA_TOKEN}"},
        )
        assert response.status_code == 202
        return int(response.json["alarm_id"])

    def command(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self.client.post(path, json=body if body is not None else {}, headers=OP)

    def sent(self) -> list[str]:
        return [d.task_name for d in self.outbox.sent]


@pytest.fixture
def console(make_settings: Callable[..., Settings], database_url: str) -> Iterator[Console]:
    console = Console(
        make_settings(
            database_url=database_url,
            sites_file=str(EXAMPLE_SITES),
            environ=SOURCE_ENV,
            operator_api_keys=(OPERATOR_KEY,),
        )
    )
    yield console
    console.app.extensions["alarm_bridge"].engine.dispose()


def test_verifying_an_alta_alarm_records_the_verdict_and_carries_it_to_alta(console: Console) -> None:
    alarm_id = console.alta()
    response = console.command(f"/v1/alarms/{alarm_id}/verify", {"verdict": "valid"})
    assert response.status_code == 200
    assert response.json["verification"] == "valid" and response.json["state"] == "open"
    assert console.sent()[-1] == "alta.verify"
    verify = [a for a in response.json["actions"] if a["kind"] == "alta.verify"]
    assert len(verify) == 1


def test_a_false_verdict_ends_the_alarm_and_stops_what_has_not_started(console: Console) -> None:
    alarm_id = console.alta()
    body = console.command(f"/v1/alarms/{alarm_id}/verify", {"verdict": "false"}).json
    assert (body["state"], body["outcome"]) == ("ended", "false_alarm")
    states = {a["kind"]: a["state"] for a in body["actions"]}
    assert states["callonalarm.trigger"] == "cancelled"  # the delayed call will not ring
    assert states["alta.verify"] in ("queued", "pending")  # Alta ends a false alert itself
    assert "alta.end" not in states


def test_ending_an_alarm_ends_the_alta_alert_and_refuses_further_commands(console: Console) -> None:
    alarm_id = console.alta()
    body = console.command(f"/v1/alarms/{alarm_id}/end", {"outcome": "verified"}).json
    assert (body["state"], body["outcome"]) == ("ended", "verified")
    assert "alta.end" in console.sent()
    again = console.command(f"/v1/alarms/{alarm_id}/end")
    assert again.status_code == 409 and again.json["error"] == "conflict"


def test_ending_without_an_outcome_chooses_cancelled_when_nothing_was_dispatched(console: Console) -> None:
    alarm_id = console.panel("BA")
    assert console.command(f"/v1/alarms/{alarm_id}/end").json["outcome"] == "cancelled"


def test_acknowledging_takes_the_alarm_off_the_needs_a_person_list(console: Console) -> None:
    alarm_id = console.panel("BA", account="nobody-knows-me")  # unrouted: needs a person
    listed = console.client.get("/v1/alarms?needs_person=true", headers=OP).json["alarms"]
    assert [a["id"] for a in listed] == [alarm_id]
    body = console.command(f"/v1/alarms/{alarm_id}/acknowledge").json
    assert body["state"] == "open" and body["acknowledged_at"] is not None
    assert console.client.get("/v1/alarms?needs_person=true", headers=OP).json["alarms"] == []


def test_a_failed_action_can_be_retried_and_nothing_else_can(console: Console) -> None:
    alarm_id = console.panel("BA")
    with console.sessions.begin() as session:
        action = (
            session.execute(select(Action).where(Action.alarm_id == alarm_id).order_by(Action.id))
            .scalars()
            .first()
        )
        assert action is not None
        action.state = ActionState.FAILED
        action.attempts = 8
        action_id = action.id
    dead = console.client.get("/v1/actions?state=failed", headers=OP).json["actions"]
    assert [(a["id"], a["alarm_id"]) for a in dead] == [(action_id, alarm_id)]
    response = console.command(f"/v1/actions/{action_id}/retry")
    assert response.status_code == 202 and response.json["state"] == "queued"
    assert console.sent()[-1] == "tracktik.create_alarm"
    with console.sessions() as session:
        assert session.get_one(Action, action_id).max_attempts > 8
    assert console.command(f"/v1/actions/{action_id}/retry").status_code == 409
    assert console.client.get("/v1/actions?state=failed", headers=OP).json["actions"] == []


@pytest.mark.parametrize(
    ("path", "body", "status"),
    [
        ("/v1/alarms/999999/verify", {"verdict": "valid"}, 404),
        ("/v1/alarms/999999/end", {}, 404),
        ("/v1/actions/999999/retry", {}, 404),
        ("/v1/alarms/{id}/verify", {"verdict": "maybe"}, 422),
        ("/v1/alarms/{id}/verify", {}, 422),
        ("/v1/alarms/{id}/end", {"outcome": "whatever"}, 422),
        ("/v1/alarms/{id}/acknowledge", {"extra": 1}, 422),
    ],
)
def test_bad_commands_get_a_clear_4xx(console: Console, path: str, body: dict[str, Any], status: int) -> None:
    alarm_id = console.panel("BA")
    response = console.command(path.format(id=alarm_id), body)
    assert response.status_code == status
    with console.sessions() as session:
        assert session.get_one(Alarm, alarm_id).state == "open"


def test_commands_need_an_operator_key(console: Console) -> None:
    alarm_id = console.panel("BA")
    for path in (f"/v1/alarms/{alarm_id}/verify", f"/v1/alarms/{alarm_id}/end", "/v1/actions/1/retry"):
        assert console.client.post(path, json={"verdict": "valid"}).status_code == 401


def test_the_queue_filters_by_site_priority_time_and_pages(console: Console) -> None:
    first = console.panel("BA")
    fire = console.panel("FA", zone="9")
    listed = console.client.get("/v1/alarms?priority=life_safety", headers=OP).json["alarms"]
    assert [a["id"] for a in listed] == [fire]
    assert [
        a["id"]
        for a in console.client.get("/v1/alarms?site=montreal-hq&limit=1&offset=1", headers=OP).json["alarms"]
    ] == [first]
    future = "2999-01-01T00:00:00Z"
    assert console.client.get(f"/v1/alarms?opened_after={future}", headers=OP).json["alarms"] == []
    assert console.client.get("/v1/alarms?state=ended", headers=OP).json["alarms"] == []


# -- parameters at and beyond their bounds (issue 16, finding 6) ------------------------------------


@pytest.mark.parametrize("path", ["/v1/alarms", "/v1/actions"])
@pytest.mark.parametrize(
    ("query", "field"),
    [
        (f"offset={10**30}", "offset"),  # was OverflowError (SQLite), bigint out of range (PostgreSQL)
        (f"offset={2**63}", "offset"),
        (f"offset={2**31}", "offset"),
        ("offset=-1", "offset"),
        ("limit=0", "limit"),
        ("limit=1001", "limit"),
        (f"limit={10**30}", "limit"),
    ],
)
def test_a_page_beyond_its_bounds_is_a_422_naming_the_parameter(
    console: Console, path: str, query: str, field: str
) -> None:
    response = console.client.get(f"{path}?{query}", headers=OP)
    assert response.status_code == 422, response.text
    assert response.json["error"] == "invalid_request"
    assert list(response.json["fields"]) == [field]


@pytest.mark.parametrize("path", ["/v1/alarms", "/v1/actions"])
def test_the_largest_offset_and_limit_are_answered_by_both_ledgers(console: Console, path: str) -> None:
    console.panel("BA")
    response = console.client.get(path, query_string={"limit": 1000, "offset": 2**31 - 1}, headers=OP)
    assert response.status_code == 200, response.text
    assert response.json["offset"] == 2**31 - 1
    assert response.json["alarms" if path == "/v1/alarms" else "actions"] == []


@pytest.mark.parametrize("field", ["opened_after", "opened_before"])
@pytest.mark.parametrize(
    "moment",
    [
        "0001-01-01T00:00:00+14:00",  # year 0 in UTC: was an OverflowError, a 500
        "9999-12-31T23:59:59-14:00",  # year 10000 in UTC
    ],
)
def test_a_time_outside_the_utc_calendar_is_a_422_naming_the_field(
    console: Console, field: str, moment: str
) -> None:
    response = console.client.get("/v1/alarms", query_string={field: moment}, headers=OP)
    assert response.status_code == 422, response.text
    assert list(response.json["fields"]) == [field]
    assert "UTC" in response.json["fields"][field][0]


def test_times_at_the_calendars_ends_in_utc_or_any_offset_are_answered(console: Console) -> None:
    alarm_id = console.panel("BA")
    for query in (
        {"opened_after": "0001-01-01T00:00:00Z", "opened_before": "9999-12-31T23:59:59Z"},
        {"opened_after": "0001-01-01T00:00:00-14:00", "opened_before": "9999-12-31T23:59:59+14:00"},
    ):
        response = console.client.get("/v1/alarms", query_string=query, headers=OP)
        assert response.status_code == 200, response.text
        assert [a["id"] for a in response.json["alarms"]] == [alarm_id]
    # An offset is honoured: the alarm opened a moment ago is after "now minus an hour" in any zone.
    an_hour_ago = (datetime.now(UTC) - timedelta(hours=1)).astimezone(timezone(timedelta(hours=-9)))
    listed = console.client.get(
        "/v1/alarms", query_string={"opened_after": an_hour_ago.isoformat()}, headers=OP
    ).json["alarms"]
    assert [a["id"] for a in listed] == [alarm_id]


@pytest.mark.parametrize("site", ["\x00", "montreal-hq\x00", "x" * 65, "Montreal HQ", "../etc"])
def test_a_site_that_is_no_site_key_is_a_422_naming_it(console: Console, site: str) -> None:
    response = console.client.get("/v1/alarms", query_string={"site": site}, headers=OP)
    assert response.status_code == 422, response.text  # a NUL was a 500 on PostgreSQL
    assert list(response.json["fields"]) == ["site"]
