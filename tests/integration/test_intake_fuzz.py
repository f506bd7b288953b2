"""Arbitrary JSON at every intake endpoint: never a 5xx, and never a half-written event.

"Half-written" means any row the sender was not told about: every event in the ledger was answered
2xx with its id, every alarm has an event and an `alarm.opened` line, every action belongs to an
alarm that was answered.
"""

from __future__ import annotations

import json
import string
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from app.domain.outbox import RecordingOutbox
from app.ledger.models import Action, Alarm, TimelineEntry
from app.ledger.models import Event as EventRow
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

scalars = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=12,
)
# Values near what the schemas expect reach deeper than pure noise does.
plausible = st.one_of(
    json_values,
    st.sampled_from(["BA", "FA", "BR", "OP", "ZZ", "ba", "B", MONTREAL_ACCOUNT, ALTA_ZONE, "N/A", "", "3"]),
    st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),  # naive: must be refused, not crash
    st.text(alphabet=string.printable, max_size=80),
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
)
FIELDS = [
    "account", "code", "zone", "message", "occurred_at", "event_id", "accountNumber", "eventCode",
    "alarmZoneId", "time", "timeIso", "triggerPhase", "deviceId", "events",
]  # fmt: skip
bodies = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), plausible, max_size=8),
    st.builds(
        lambda evs: {"events": evs}, st.lists(st.dictionaries(st.sampled_from(FIELDS), plausible), max_size=5)
    ),
)
ENDPOINTS = [
    ("/v1/events", {"Authorization": f"Bearer {PANEL_TOKEN}"}),
    ("/v1/events:batch", {"Authorization": f"Bearer {PANEL_TOKEN}"}),
    ("/v1/webhooks/alta", {"Authorization": f"Bearer {ALTA_TOKEN}"}),
]


@pytest.fixture(scope="module")
def fuzz_client(pg_template: str) -> Iterator[tuple[FlaskClient, Callable[[], Any]]]:
    from tests.conftest import RUN_ID, _pg_connect, _pg_url

    name = f"ab_fuzz_{RUN_ID}"
    with _pg_connect() as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE "{pg_template}"')
    app = create_app(
        Settings(
            database_url=_pg_url(name),
            sites_file=str(EXAMPLE_SITES),
            environ=SOURCE_ENV,
            log_level="ERROR",
            log_format="console",
        ),
        outbox=RecordingOutbox(),
        ping_broker=lambda: None,
    )
    yield app.test_client(), app.extensions["alarm_bridge"].sessions
    app.extensions["alarm_bridge"].engine.dispose()
    with _pg_connect() as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


answered_events: set[int] = set()
answered_alarms: set[int] = set()


def _remember(body: Any) -> None:
    for result in body.get("results", [body]) if isinstance(body, dict) else []:
        if isinstance(result, dict) and "event_id" in result:
            answered_events.add(result["event_id"])
            if result.get("alarm_id") is not None:
                answered_alarms.add(result["alarm_id"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(endpoint=st.sampled_from(ENDPOINTS), body=bodies, raw=st.booleans())
def test_any_json_gets_a_non_5xx_answer_and_leaves_no_half_written_rows(
    fuzz_client: tuple[FlaskClient, Callable[[], Any]],
    endpoint: tuple[str, dict[str, str]],
    body: Any,
    raw: bool,
) -> None:
    client, sessions = fuzz_client
    path, headers = endpoint
    data = json.dumps(body)
    if raw:  # also throw bytes that are not quite JSON
        data = data[: max(1, len(data) // 2)]
    response = client.post(path, data=data, headers={**headers, "Content-Type": "application/json"})
    assert response.status_code < 500, response.get_data(as_text=True)
    assert response.is_json
    if response.status_code < 300:
        _remember(response.get_json())

    with sessions() as session:
        event_ids = set(session.execute(select(EventRow.id)).scalars())
        assert event_ids == answered_events, "an event was stored that no answer reported"
        alarm_ids = set(session.execute(select(Alarm.id)).scalars())
        assert alarm_ids <= answered_alarms
        for alarm_id in alarm_ids:
            events = session.execute(select(func.count()).where(EventRow.alarm_id == alarm_id)).scalar_one()
            opened = session.execute(
                select(func.count()).where(
                    TimelineEntry.alarm_id == alarm_id, TimelineEntry.kind == "alarm.opened"
                )
            ).scalar_one()
            assert events >= 1 and opened == 1
        orphans = session.execute(
            select(func.count()).select_from(Action).where(Action.alarm_id.not_in(alarm_ids or {-1}))
        ).scalar_one()
        assert orphans == 0
