"""DESIGN.md: "Every inbound endpoint authenticates its caller", on both ledgers, over Flask's test client.

A source's credential proves which source is calling, and a source may post only through the door of
its kind: an Alta token cannot post panel events, nor a panel token Alta webhooks. The refusal must
not depend on whether some site lists the identifier: for an account or zone nobody lists, a
credential of the wrong kind would otherwise record an unrouted alarm in front of a person (anyone
holding a camera platform's token could fill the operators' queue with panel alarms).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from app.domain.outbox import RecordingOutbox
from app.ledger.models import Alarm
from app.ledger.models import Event as EventRow
from app.web import create_app
from config.settings import Settings
from tests.sites_fixture import ALTA_TOKEN, EXAMPLE_SITES, PANEL_TOKEN, SOURCE_ENV

pytestmark = pytest.mark.integration
ALTA = {"Authorization": f"Bearer {ALTA_TOKEN}", "Content-Type": "application/json"}
PANEL = {"Authorization": f"Bearer {PANEL_TOKEN}", "Content-Type": "application/json"}
UNLISTED = "zz-unlisted-9"  # no site lists it: through the right door it is an unrouted alarm


@contextmanager
def intake_app(
    database_url: str, tmp_path: Path, *, more_sites: str = "", environ: dict[str, str] | None = None
) -> Iterator[tuple[FlaskClient, sessionmaker[Session]]]:
    """The web app on the example sites file (plus ``more_sites``), with a recording outbox."""
    sites = tmp_path / "sites.toml"
    sites.write_text(EXAMPLE_SITES.read_text(encoding="utf-8") + more_sites, encoding="utf-8")
    app = create_app(
        Settings(
            database_url=database_url,
            sites_file=str(sites),
            environ={**SOURCE_ENV, **(environ or {})},
            operator_api_keys=("op-key-0123456789abcdef",),
            secret_key="s" * 32,
            var_dir=str(tmp_path / "var"),
            log_level="ERROR",
            log_format="console",
        ),
        outbox=RecordingOutbox(),
        ping_broker=lambda: None,
    )
    services = app.extensions["alarm_bridge"]
    yield app.test_client(), services.sessions
    services.engine.dispose()


@pytest.fixture
def web(database_url: str, tmp_path: Path) -> Iterator[tuple[FlaskClient, sessionmaker[Session]]]:
    with intake_app(database_url, tmp_path) as client_and_sessions:
        yield client_and_sessions


def panel_event(account: str = UNLISTED) -> dict[str, Any]:
    return {
        "account": account,
        "code": "BA",
        "zone": "3",
        "occurred_at": datetime.now(UTC).isoformat(),
        "event_id": uuid.uuid4().hex,
    }


def recorded(sessions: sessionmaker[Session]) -> tuple[int, int]:
    with sessions() as session:
        events = session.execute(select(func.count()).select_from(EventRow)).scalar_one()
        alarms = session.execute(select(func.count()).select_from(Alarm)).scalar_one()
    return int(events), int(alarms)


def test_the_right_door_records_an_unlisted_account_for_a_person(
    web: tuple[FlaskClient, sessionmaker[Session]],
) -> None:
    """The baseline the refusals below are measured against: the panel source's own door."""
    client, sessions = web
    response = client.post("/v1/events", data=json.dumps(panel_event()), headers=PANEL)
    assert response.status_code == 202
    assert recorded(sessions) == (1, 1)


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/events", panel_event()),
        ("/v1/events:batch", {"events": [panel_event()]}),
    ],
    ids=["event", "batch"],
)
def test_an_alta_credential_cannot_post_panel_events_for_any_account(
    web: tuple[FlaskClient, sessionmaker[Session]], path: str, body: dict[str, Any]
) -> None:
    client, sessions = web
    response = client.post(path, data=json.dumps(body), headers=ALTA)

    assert response.status_code == 403
    assert response.get_json()["error"] == "forbidden"
    assert "alta source" in response.get_json()["message"]
    assert recorded(sessions) == (0, 0)


def test_a_panel_credential_cannot_post_alta_webhooks_for_any_zone(
    web: tuple[FlaskClient, sessionmaker[Session]],
) -> None:
    client, sessions = web
    body = {"source": "alta", "alarmZoneId": UNLISTED, "timeIso": "2026-11-23T12:00:00Z"}
    response = client.post("/v1/webhooks/alta", data=json.dumps(body), headers=PANEL)

    assert response.status_code == 403
    assert "panel source" in response.get_json()["message"]
    assert recorded(sessions) == (0, 0)
