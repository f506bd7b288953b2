"""CallOnAlarmClient's reading of the status answer's times (CONTRACTS Part A item 12).

Part A 12 names ``createdAt``, ``callsStartAt``, ``acknowledgedAt`` and ``cancelledAt`` but gives no
format, and the bridge needs only ``alertId`` and ``status``. A stand-in host answers the status poll
with whatever body a test sets, so each time form is read over real HTTP as the vendor would send it.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import fakeredis
import pytest
from flask import Flask, Response, jsonify

from sandbox.server import RunningServer, serve_in_thread
from tests.logs import capture_logs
from vendors.callonalarm.budget import HourlyBudget
from vendors.callonalarm.client import CallOnAlarmClient, status_time

pytestmark = pytest.mark.unit

AT = datetime(2026, 1, 6, 10, 25, 30, tzinfo=UTC)
EPOCH_S = int(AT.timestamp())


def make_host(body: dict[str, Any]) -> Flask:
    app = Flask("callonalarm-status")

    @app.get("/v1/alert/<alert_id>/status")
    def status(alert_id: str) -> Response:
        return jsonify(body)

    return app


@pytest.fixture
def answer() -> dict[str, Any]:
    """The body the stand-in answers with; a test fills it before polling."""
    return {}


@pytest.fixture
def host(answer: dict[str, Any]) -> Iterator[RunningServer]:
    server = serve_in_thread(make_host(answer), port=0)
    yield server
    server.stop()


@pytest.fixture
def client(host: RunningServer) -> Iterator[CallOnAlarmClient]:
    budget = HourlyBudget.from_redis(fakeredis.FakeRedis(), "test:callonalarm:budget", 100)
    made = CallOnAlarmClient(host.base_url, (2.0, 5.0), api_key="coa_test", budget=budget)
    yield made
    made.session.close()


def status_body(**times: object) -> dict[str, Any]:
    return {"alertId": "alt_1", "accountNumber": "1001", "status": "acknowledged", "callsMade": 2, **times}


@pytest.mark.parametrize(
    "written",
    [
        "2026-01-06T10:25:30Z",
        "2026-01-06T10:25:30+00:00",
        "2026-01-06T11:25:30+01:00",
        "2026-01-06T05:25:30-05:00",
        "2026-01-06T10:25:30",  # no offset: the vendor's UTC
        EPOCH_S,
        EPOCH_S * 1000,
        float(EPOCH_S),
        str(EPOCH_S),
        str(EPOCH_S * 1000),
    ],
    ids=["z", "utc-offset", "plus-one", "minus-five", "naive", "s", "ms", "s-float", "s-text", "ms-text"],
)
def test_each_time_form_is_read_as_the_same_utc_instant(
    client: CallOnAlarmClient, answer: dict[str, Any], written: object
) -> None:
    fields = ("createdAt", "callsStartAt", "acknowledgedAt", "cancelledAt")
    answer.update(status_body(**dict.fromkeys(fields, written)))

    with capture_logs() as logs:
        status = client.status("alt_1")

    for when in (status.created_at, status.calls_start_at, status.acknowledged_at, status.cancelled_at):
        assert when == AT
        assert when is not None and when.utcoffset() is not None
    assert [line for line in logs if line["log_level"] == "warning"] == []


def test_unreadable_times_are_none_with_one_warning_and_the_poll_still_answers(
    client: CallOnAlarmClient, answer: dict[str, Any]
) -> None:
    answer.update(
        status_body(
            createdAt="Tuesday morning",
            callsStartAt={"seconds": 5},
            acknowledgedAt="2026-01-06T10:25:30Z",
            cancelledAt=-5,
        )
    )

    with capture_logs() as logs:
        status = client.status("alt_1")

    assert (status.alert_id, status.status, status.is_final) == ("alt_1", "acknowledged", True)
    assert (status.created_at, status.calls_start_at, status.cancelled_at) == (None, None, None)
    assert status.acknowledged_at == AT
    [warning] = [line for line in logs if line["log_level"] == "warning"]
    assert warning["event"] == "callonalarm.status_time_unreadable"
    assert warning["fields"] == ["createdAt", "callsStartAt", "cancelledAt"]


def test_absent_null_and_empty_times_are_none_without_a_warning(
    client: CallOnAlarmClient, answer: dict[str, Any]
) -> None:
    answer.update(status_body(createdAt=EPOCH_S, callsStartAt=None, acknowledgedAt="", cancelledAt=0))

    with capture_logs() as logs:
        status = client.status("alt_1")

    assert status.created_at == AT
    assert (status.calls_start_at, status.acknowledged_at, status.cancelled_at) == (None, None, None)
    assert [line for line in logs if line["log_level"] == "warning"] == []


@pytest.mark.parametrize(
    "value",
    ["yesterday", "1e9", True, [EPOCH_S], -1, 10**30, float("nan"), "0001-01-01T00:00:00+14:00", 10**400],
)
def test_what_is_no_time_is_refused_by_the_reader(value: object) -> None:
    with pytest.raises(ValueError, match=r"."):
        status_time(value)
