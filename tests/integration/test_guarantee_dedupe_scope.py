"""DESIGN.md "Record": the unique dedupe key recognises a retried webhook, and nothing else. Over Flask's
test client on both ledgers.

A key that is too wide answers a new alarm "200, already recorded" and records nothing: the sender
forgets it, nobody is sent, and the alarm is lost without a trace. Two ways it could be too wide:

- the sender's event id taken across sources: panels and gateways number their events themselves
  (often from 1), so two tenants' senders use the same ids;
- or across the accounts of one source: the panels behind one gateway number theirs each (a retry of
  an event always comes from its own account, so the account tells the two apart);
- an event without an id but with its own time, keyed without that time: the zone tripping again
  later is a new event, not a retry of the first.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.ledger.models import Alarm
from app.ledger.models import Event as EventRow
from tests.integration.test_guarantee_source_kind import intake_app
from tests.sites_fixture import MONTREAL_ACCOUNT, NEWTON_ACCOUNT, PANEL_TOKEN

pytestmark = pytest.mark.integration
OTHER_TOKEN = "other-panels-token-0123456789"
ACME = {"Authorization": f"Bearer {PANEL_TOKEN}", "Content-Type": "application/json"}
OTHER = {"Authorization": f"Bearer {OTHER_TOKEN}", "Content-Type": "application/json"}
OTHER_TENANT = """
[sources.other-panels]
kind = "panel"
token_env = "OTHER_PANELS_TOKEN"

[plans.calls]
burglary = ["callonalarm.trigger"]

[sites.depot]
name = "Depot"
sources = ["other-panels"]
accounts = ["dp-1"]
timezone = "UTC"
site_type = "COMMERCIAL"
plan = "calls"
callonalarm = { account_number = "1009" }

[sites.depot.location]
address_line1 = "1 Depot Rd"
"""


@pytest.fixture
def web(database_url: str, tmp_path: Path) -> Iterator[tuple[FlaskClient, sessionmaker[Session]]]:
    environ = {"OTHER_PANELS_TOKEN": OTHER_TOKEN}
    with intake_app(database_url, tmp_path, more_sites=OTHER_TENANT, environ=environ) as client_and_sessions:
        yield client_and_sessions


def post(client: FlaskClient, headers: dict[str, str], **body: Any) -> Any:
    body = {"code": "BA", "zone": "3", "message": "Front door", **body}
    return client.post("/v1/events", data=json.dumps(body), headers=headers)


def test_two_sources_may_use_the_same_event_ids(web: tuple[FlaskClient, sessionmaker[Session]]) -> None:
    client, sessions = web
    now = datetime.now(UTC).isoformat()
    acme = post(client, ACME, account=MONTREAL_ACCOUNT, event_id="1", occurred_at=now)
    other = post(client, OTHER, account="dp-1", event_id="1", occurred_at=now)

    assert (acme.status_code, other.status_code) == (202, 202)
    assert other.get_json()["duplicate"] is False
    assert other.get_json()["event_id"] != acme.get_json()["event_id"]
    assert other.get_json()["alarm_id"] != acme.get_json()["alarm_id"]
    with sessions() as session:
        assert session.get_one(Alarm, other.get_json()["alarm_id"]).site_key == "depot"
        assert session.get_one(Alarm, acme.get_json()["alarm_id"]).site_key == "montreal-hq"


def test_two_accounts_of_one_source_may_use_the_same_event_ids(
    web: tuple[FlaskClient, sessionmaker[Session]],
) -> None:
    """Montréal's burglary is event 1 of its panel; Newton's fire, minutes later, is event 1 of its own.
    Each is recorded, and a retry of either is still its own duplicate."""
    client, sessions = web
    now = datetime.now(UTC)
    burglary = dict(account=MONTREAL_ACCOUNT, event_id="1", occurred_at=now.isoformat())
    fire = dict(
        account=NEWTON_ACCOUNT,
        code="FA",
        zone="1",
        event_id="1",
        occurred_at=(now + timedelta(minutes=2)).isoformat(),
    )
    first = post(client, ACME, **burglary)
    second = post(client, ACME, **fire)
    retries = [post(client, ACME, **fire), post(client, ACME, **burglary)]

    assert (first.status_code, second.status_code) == (202, 202)
    assert second.get_json()["duplicate"] is False
    assert second.get_json()["alarm_id"] not in (None, first.get_json()["alarm_id"])
    assert [r.status_code for r in retries] == [200, 200]
    assert [r.get_json()["event_id"] for r in retries] == [
        second.get_json()["event_id"],
        first.get_json()["event_id"],
    ]
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(EventRow)).scalar_one() == 2
        fire_alarm = session.get_one(Alarm, second.get_json()["alarm_id"])
        assert (fire_alarm.site_key, fire_alarm.family) == ("newton-residence", "fire")


def test_the_same_signal_at_a_later_time_of_its_own_is_a_new_event(
    web: tuple[FlaskClient, sessionmaker[Session]],
) -> None:
    """No event id, a time of its own: a retry carries the same time, a new trip of the zone another."""
    client, sessions = web
    first_at = datetime.now(UTC) - timedelta(minutes=2)
    first = post(client, ACME, account=MONTREAL_ACCOUNT, occurred_at=first_at.isoformat())
    retry = post(client, ACME, account=MONTREAL_ACCOUNT, occurred_at=first_at.isoformat())
    again = post(
        client, ACME, account=MONTREAL_ACCOUNT, occurred_at=(first_at + timedelta(minutes=1)).isoformat()
    )

    assert (first.status_code, retry.status_code, again.status_code) == (202, 200, 202)
    assert retry.get_json()["event_id"] == first.get_json()["event_id"]
    assert again.get_json()["duplicate"] is False
    assert again.get_json()["event_id"] != first.get_json()["event_id"]
    with sessions() as session:
        assert session.execute(select(func.count()).select_from(EventRow)).scalar_one() == 2
        # Within the grouping window: the new trip is a repeat of the open alarm, counted on it.
        assert session.get_one(Alarm, first.get_json()["alarm_id"]).event_count == 2
