"""Arbitrary JSON at every intake endpoint: never a 5xx, and never a half-written event.

"Half-written" means any row the sender was not told about: every event in the ledger was answered
2xx with its id, every alarm has an event and an `alarm.opened` line, every action belongs to an
alarm that was answered.

The strategies reach the classes hostile and buggy senders found (issue 16): NaN and the infinities,
lone surrogates and NUL in values and keys, times near year 1 and 9999 with offsets, nesting up to
12,000 deep, integers of hundreds of digits, batches that mix good and odd events, and bodies sent
chunked (no Content-Length), some of them over the size limit, which must be a 413 whatever the
framing.
"""

from __future__ import annotations

import io
import json
import string
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
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

MAX_BODY_BYTES = 65_536  # the fuzzed app's limit: small, so that bodies over it are cheap to make
# Text as odd senders write it: a lone UTF-16 surrogate or a NUL among ordinary characters (random
# surrogates alone would mostly pair up into valid characters).
odd_text = st.builds(
    lambda before, odd, after: before + odd + after,
    st.text(max_size=12),
    st.sampled_from(["\udc00", "\ud800", "\udfff", "\udbff", "\x00"]) | st.characters(categories=["Cs"]),
    st.text(max_size=12),
)
huge_integers = st.integers(min_value=10**300, max_value=10**400) | st.integers(max_value=-(10**300))
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | huge_integers
    | st.floats()  # NaN, Infinity and -Infinity included: json.dumps writes them as such
    | st.text(max_size=30)
    | odd_text
)
json_values = st.recursive(
    scalars,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(odd_text, inner, max_size=4),
    max_leaves=12,
)


def _with_offset(when: datetime, minutes: int) -> str:
    return when.replace(tzinfo=timezone(timedelta(minutes=minutes))).isoformat()


# Times at the ends of what datetime holds, with offsets up to ±14 h: some cannot be put in UTC at all.
extreme_times = st.builds(
    _with_offset,
    st.datetimes(max_value=datetime(1, 1, 2)) | st.datetimes(min_value=datetime(9999, 12, 30)),  # noqa: DTZ001 - naive bounds, zoned by _with_offset
    st.integers(min_value=-14 * 60, max_value=14 * 60),
)
# Values near what the schemas expect reach deeper than pure noise does.
plausible = st.one_of(
    json_values,
    st.sampled_from(
        ["BA", "FA", "BR", "OP", "RX", "ZZ", "ba", "B", MONTREAL_ACCOUNT, ALTA_ZONE, "N/A", "", "3"]
    ),
    st.datetimes(timezones=st.just(UTC)).map(datetime.isoformat),
    st.datetimes().map(datetime.isoformat),  # naive: must be refused, not crash
    extreme_times,
    st.text(alphabet=string.printable, max_size=80),
    st.integers(min_value=-(10**15), max_value=10**15).map(str),
)
FIELDS = [
    "account", "code", "zone", "message", "occurred_at", "event_id", "accountNumber", "eventCode",
    "alarmZoneId", "time", "timeIso", "triggerPhase", "deviceId", "events",
]  # fmt: skip
# An event a panel could really send (it would be recorded), with odd values in places.
good_event = st.fixed_dictionaries(
    {
        "account": st.just(MONTREAL_ACCOUNT),
        "code": st.sampled_from(["BA", "FA", "RX", "BR", "OP", "TA"]),
        "zone": st.sampled_from(["1", "2", "3"]) | odd_text.filter(lambda t: len(t) <= 64),
        "occurred_at": st.just(datetime.now(UTC).isoformat()) | extreme_times,
    },
    optional={
        "message": scalars,
        "event_id": odd_text.filter(bool),
        "extra": json_values,
        "gateway": scalars,
    },
)
events = st.one_of(good_event, st.dictionaries(st.sampled_from(FIELDS), plausible), json_values)
good_alta = st.fixed_dictionaries(
    {"alarmZoneId": st.just(ALTA_ZONE)},
    optional={
        "timeIso": plausible,
        "time": scalars | plausible,
        "description": scalars,
        "eventId": odd_text.filter(bool),
        "extra": json_values,
    },
)
bodies = st.one_of(
    json_values,
    st.dictionaries(st.sampled_from(FIELDS), plausible, max_size=8),
    good_event,
    st.builds(lambda evs: {"events": evs}, st.lists(events, max_size=6)),  # batches, mixed
)
# How deep an extra member nests (0: none); the deepest are far past Python's recursion limit.
nesting = st.just(0) | st.integers(min_value=2, max_value=12_000)
# How much whitespace pads the body (0: none); the larger ones take it over MAX_BODY_BYTES.
padding = st.just(0) | st.integers(min_value=MAX_BODY_BYTES - 200, max_value=MAX_BODY_BYTES + 200)
ENDPOINTS = [
    ("/v1/events", {"Authorization": f"Bearer {PANEL_TOKEN}"}),
    ("/v1/events:batch", {"Authorization": f"Bearer {PANEL_TOKEN}"}),
    ("/v1/webhooks/alta", {"Authorization": f"Bearer {ALTA_TOKEN}"}),
]


@pytest.fixture(scope="module")
def fuzz_client(pg_template: str) -> Iterator[tuple[FlaskClient, Callable[[], Any]]]:
    from tests.conftest import RUN_ID, SECRET_KEY, _pg_connect, _pg_url

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
            max_body_bytes=MAX_BODY_BYTES,
            secret_key=SECRET_KEY,
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


def _encode(body: Any, depth: int, pad: int, raw: bool) -> bytes:
    """The body as a sender would write it: NaN and surrogate escapes as json.dumps writes them, an
    extra member nested ``depth`` deep, padding, or cut in half (not quite JSON)."""
    if depth and isinstance(body, dict):
        data = json.dumps({**body, "pad": "<deep>"}).replace('"<deep>"', "[" * depth + "]" * depth)
    else:
        data = json.dumps(body)
    if raw:
        data = data[: max(1, len(data) // 2)]
    return data.encode() + b" " * pad


def _post(client: FlaskClient, path: str, data: bytes, headers: dict[str, str], chunked: bool) -> Any:
    headers = {**headers, "Content-Type": "application/json"}
    if not chunked:
        return client.post(path, data=data, headers=headers)
    # Chunked framing, as a WSGI server hands it over: no Content-Length, a stream the server ends.
    return client.post(
        path,
        input_stream=io.BytesIO(data),
        headers={**headers, "Transfer-Encoding": "chunked"},
        environ_overrides={"wsgi.input_terminated": True},
    )


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    endpoint=st.sampled_from(ENDPOINTS),
    body=bodies,
    raw=st.booleans(),
    depth=nesting,
    pad=padding,
    chunked=st.booleans(),
)
def test_any_json_gets_a_non_5xx_answer_and_leaves_no_half_written_rows(
    fuzz_client: tuple[FlaskClient, Callable[[], Any]],
    endpoint: tuple[str, dict[str, str]],
    body: Any,
    raw: bool,
    depth: int,
    pad: int,
    chunked: bool,
) -> None:
    client, sessions = fuzz_client
    path, headers = endpoint
    data = _encode(body, depth, pad, raw)
    response = _post(client, path, data, headers, chunked)
    assert response.is_json
    if len(data) > MAX_BODY_BYTES:  # however it is framed
        assert response.status_code == 413, response.get_data(as_text=True)
    _assert_answered_without_a_5xx(response, sessions)


# Bodies each endpoint would record, with the odd values where a sender puts them: most reach the
# ledger, which is where NaN, surrogates and impossible times used to become 500s.
recordable = st.one_of(
    st.tuples(st.just(ENDPOINTS[0]), good_event),
    st.tuples(
        st.just(ENDPOINTS[1]),
        st.builds(lambda evs: {"events": evs}, st.lists(good_event | events, min_size=1, max_size=6)),
    ),
    st.tuples(st.just(ENDPOINTS[2]), good_alta),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(request=recordable, depth=nesting, chunked=st.booleans())
def test_odd_values_in_events_a_sender_could_send_never_get_a_5xx(
    fuzz_client: tuple[FlaskClient, Callable[[], Any]],
    request: tuple[tuple[str, dict[str, str]], dict[str, Any]],
    depth: int,
    chunked: bool,
) -> None:
    client, sessions = fuzz_client
    (path, headers), body = request
    response = _post(client, path, _encode(body, depth, 0, False), headers, chunked)
    _assert_answered_without_a_5xx(response, sessions)


def _assert_answered_without_a_5xx(response: Any, sessions: Callable[[], Any]) -> None:
    """No 5xx for the request nor for any event of a batch, and nothing half-written."""
    assert response.status_code < 500, response.get_data(as_text=True)
    if response.status_code < 300:
        answer = response.get_json()
        for result in answer.get("results", []):
            assert result["status"] < 500, result
        _remember(answer)
    _assert_no_half_written_rows(sessions)


def _assert_no_half_written_rows(sessions: Callable[[], Any]) -> None:
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
