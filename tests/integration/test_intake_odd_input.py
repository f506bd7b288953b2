"""Odd values at every intake endpoint, on both ledgers (issue 16): never a 5xx, and an alarm is never
refused for an oddity outside what identifies it.

NaN and the infinities (not JSON; PostgreSQL's json refuses them), lone UTF-16 surrogates (in known
fields, in the unknown fields kept in the payload, in keys, and as raw bytes), sender times UTC
cannot hold, nesting 10,000 deep, and integers of 400 digits. Bodies are written as raw text, so each
odd value reaches the server exactly as a hostile or buggy sender writes it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from app.domain.outbox import RecordingOutbox
from app.ledger.models import Event as EventRow
from app.ledger.models import TimelineEntry
from app.web import create_app
from app.web.bodies import MAX_JSON_DEPTH
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
OPERATOR_KEY = "op-key-0123456789abcdef"
PANEL = {"Authorization": f"Bearer {PANEL_TOKEN}", "Content-Type": "application/json"}
ALTA = {"Authorization": f"Bearer {ALTA_TOKEN}", "Content-Type": "application/json"}
BIG = "1" + "0" * 400  # 10**400, as JSON writes it


class Intake:
    """The web app on one ledger, spoken to in raw JSON text."""

    def __init__(self, client: FlaskClient, sessions: sessionmaker[Session]) -> None:
        self.client = client
        self.sessions = sessions

    def post(self, path: str, raw: str | bytes, headers: dict[str, str] = PANEL) -> Any:
        return self.client.post(path, data=raw, headers=headers)

    def event(self, event_id: int) -> EventRow:
        with self.sessions() as session:
            return session.get_one(EventRow, event_id)

    def timeline(self, alarm_id: int) -> list[tuple[str, str]]:
        with self.sessions() as session:
            return [
                (row.kind, row.message)
                for row in session.execute(
                    select(TimelineEntry).where(TimelineEntry.alarm_id == alarm_id).order_by(TimelineEntry.id)
                ).scalars()
            ]

    def alarm_detail(self, alarm_id: int) -> Any:
        return self.client.get(f"/v1/alarms/{alarm_id}", headers={"Authorization": f"Bearer {OPERATOR_KEY}"})


@pytest.fixture
def intake(database_url: str, tmp_path: Any) -> Iterator[Intake]:
    app = create_app(
        Settings(
            database_url=database_url,
            sites_file=str(EXAMPLE_SITES),
            environ=SOURCE_ENV,
            operator_api_keys=(OPERATOR_KEY,),
            secret_key="s" * 32,
            var_dir=str(tmp_path / "var"),
            log_level="ERROR",
            log_format="console",
        ),
        outbox=RecordingOutbox(),
        ping_broker=lambda: None,
    )
    services = app.extensions["alarm_bridge"]
    yield Intake(app.test_client(), services.sessions)
    services.engine.dispose()


def panel(name: str, /, **fields: str) -> str:
    """A panel event as JSON text: each keyword is a field whose value is raw JSON text; a name that
    starts with a quote is itself raw JSON text (a key with a surrogate escape)."""
    known = {
        "account": json.dumps(MONTREAL_ACCOUNT),
        "code": '"BA"',
        "zone": json.dumps(name),
        "occurred_at": json.dumps(datetime.now(UTC).isoformat()),
        "event_id": json.dumps(f"odd-{name}"),
    }
    known.update(fields)
    members = [
        (name if name.startswith('"') else json.dumps(name)) + ": " + raw for name, raw in known.items()
    ]
    return "{" + ", ".join(members) + "}"


# (zone, fields as raw JSON, what the stored payload holds there)
RECORDED = [
    ("nan", {"gateway": '{"rssi": NaN}'}, ("gateway", {"rssi": "NaN"})),
    ("inf", {"message": "Infinity"}, ("message", "Infinity")),
    ("-inf", {"extra": "[-Infinity, 1e400, -1e999]"}, ("extra", ["-Infinity", "1e400", "-1e999"])),
    ("big-int", {"extra": BIG, "message": BIG}, ("extra", 10**400)),
    ("sur-message", {"message": r'"Door \udc00"'}, ("message", "Door \ufffd")),
    ("sur-known", {"event_id": r'"e\ud800"', "zone": r'"z\udfff"'}, ("zone", "z\ufffd")),
    ("sur-account", {"account": r'"acct\udc00"'}, ("account", "acct\ufffd")),
    ("sur-unknown", {r'"pad\udc00"': r'["\ud800", {"\udfff": 1}]'}, ("pad\ufffd", ["\ufffd", {"\ufffd": 1}])),
    ("pair-kept", {"message": r'"ok \ud83d\ude00"'}, ("message", "ok \U0001f600")),
    ("year-1-utc", {"occurred_at": '"0001-01-01T00:00:00Z"'}, ("occurred_at", "0001-01-01T00:00:00Z")),
    ("year-9999-utc", {"occurred_at": '"9999-12-31T23:59:59.999999Z"'}, ("zone", "year-9999-utc")),
]


@pytest.mark.parametrize(("zone", "fields", "stored"), RECORDED, ids=[case[0] for case in RECORDED])
def test_an_odd_value_outside_what_identifies_the_alarm_is_recorded(
    intake: Intake, zone: str, fields: dict[str, str], stored: tuple[str, Any]
) -> None:
    response = intake.post("/v1/events", panel(zone, **fields))
    assert response.status_code == 202, response.get_data(as_text=True)
    key, value = stored
    assert intake.event(response.get_json()["event_id"]).payload[key] == value
    assert intake.alarm_detail(response.get_json()["alarm_id"]).status_code == 200


def test_raw_surrogate_bytes_are_replaced_too(intake: Intake) -> None:
    raw = panel("raw-bytes").encode().replace(b'"BA"', b'"BA", "message": "x\xed\xb0\x80y"')
    response = intake.post("/v1/events", raw)
    assert response.status_code == 202, response.get_data(as_text=True)
    assert intake.event(response.get_json()["event_id"]).payload["message"] == "x\ufffdy"


@pytest.mark.parametrize("sender_time", ["0001-01-01T00:00:00+14:00", "9999-12-31T23:59:59-14:00"])
def test_a_sender_time_utc_cannot_hold_is_dropped_with_a_note(intake: Intake, sender_time: str) -> None:
    response = intake.post("/v1/events", panel("clock", occurred_at=json.dumps(sender_time)))
    assert response.status_code == 202, response.get_data(as_text=True)
    answer = response.get_json()
    row = intake.event(answer["event_id"])
    assert row.occurred_at is None and row.payload["occurred_at"] == sender_time
    notes = [m for kind, m in intake.timeline(answer["alarm_id"]) if kind == "event.sender_time_dropped"]
    assert len(notes) == 1 and sender_time in notes[0]
    again = intake.post("/v1/events", panel("clock", occurred_at=json.dumps(sender_time)))
    assert again.status_code == 200 and again.get_json()["event_id"] == answer["event_id"]


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"zone": BIG}, "zone"),  # 401 characters: over the zone's 64
        ({"account": BIG}, "account"),
        ({"occurred_at": "NaN"}, "occurred_at"),  # malformed, not impossible: the sender must fix it
        ({"event_id": BIG}, "event_id"),
    ],
)
def test_an_odd_value_in_what_identifies_the_event_is_a_422_naming_it(
    intake: Intake, fields: dict[str, str], field: str
) -> None:
    response = intake.post("/v1/events", panel("bad", **fields))
    assert response.status_code == 422, response.get_data(as_text=True)
    assert field in response.get_json()["fields"]


@pytest.mark.parametrize("depth", [10_000, MAX_JSON_DEPTH + 1])
@pytest.mark.parametrize("path", ["/v1/events", "/v1/events:batch", "/v1/webhooks/alta"])
def test_nesting_deeper_than_the_limit_is_a_400_naming_the_depth(
    intake: Intake, path: str, depth: int
) -> None:
    nested = "[" * (depth - 1) + "]" * (depth - 1)
    headers = ALTA if "alta" in path else PANEL
    response = intake.post(path, '{"pad": ' + nested + "}", headers)
    assert response.status_code == 400, response.get_data(as_text=True)
    assert response.get_json() == {
        "error": "malformed_json",
        "message": f"the body is nested deeper than {MAX_JSON_DEPTH} levels",
    }


def test_nesting_up_to_the_limit_is_kept(intake: Intake) -> None:
    nested = "[" * (MAX_JSON_DEPTH - 1) + "]" * (MAX_JSON_DEPTH - 1)
    response = intake.post("/v1/events", panel("deep", pad=nested))
    assert response.status_code == 202, response.get_data(as_text=True)


@pytest.mark.parametrize(
    ("time_fields", "dropped"),
    [
        ({"timeIso": '"0001-01-01T00:00:00+14:00"'}, "0001-01-01T00:00:00+14:00"),
        ({"timeIso": '"9999-12-31T23:59:59-14:00"'}, "9999-12-31T23:59:59-14:00"),
        ({"time": BIG}, BIG[:64]),
        ({"time": "NaN"}, "NaN"),
        ({"time": "true"}, "True"),
        ({"timeIso": '{"nested": [1]}'}, "{'nested': [1]}"),
        ({"timeIso": r'"2026-11-23T12:00:00\udc00Z"'}, "2026-11-23T12:00:00\ufffdZ"),
    ],
)
def test_an_alta_time_that_cannot_be_used_is_dropped_with_a_note(
    intake: Intake, time_fields: dict[str, str], dropped: str
) -> None:
    fields = {"alarmZoneId": json.dumps(ALTA_ZONE), "gateway": "NaN", **time_fields}
    raw = "{" + ", ".join(f'"{k}": {v}' for k, v in fields.items()) + "}"
    response = intake.post("/v1/webhooks/alta", raw, ALTA)
    assert response.status_code == 202, response.get_data(as_text=True)
    answer = response.get_json()
    assert intake.event(answer["event_id"]).occurred_at is None
    notes = [m for kind, m in intake.timeline(answer["alarm_id"]) if kind == "event.sender_time_dropped"]
    assert len(notes) == 1 and repr(dropped) in notes[0]


def test_a_batch_of_odd_events_answers_each_and_never_5xx(intake: Intake) -> None:
    items = [panel(zone, **fields) for zone, fields, _ in RECORDED]
    items += [
        panel("clock", occurred_at='"0001-01-01T00:00:00+14:00"'),
        panel("bad-zone", zone=BIG),
        "NaN",
        "[[[[1]]]]",
    ]
    response = intake.post("/v1/events:batch", '{"events": [' + ", ".join(items) + "]}")
    assert response.status_code == 200, response.get_data(as_text=True)
    statuses = [r["status"] for r in response.get_json()["results"]]
    assert statuses == [202] * (len(RECORDED) + 1) + [422, 422, 422]
    again = intake.post("/v1/events:batch", '{"events": [' + ", ".join(items) + "]}")
    assert [r["status"] for r in again.get_json()["results"]] == [200] * (len(RECORDED) + 1) + [422] * 3
