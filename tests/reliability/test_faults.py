"""Faults injected in the sandbox (and a worker that dies mid-action): each ends with exactly the
expected upstream effects, none twice."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from app.domain import actions
from app.domain.alarms import load_context
from app.ledger.models import Action, utcnow
from config.settings import Settings
from tests.polling import wait_until
from tests.stack import Stack
from vendors.callonalarm.settings import CallOnAlarmSettings
from vendors.tracktik.settings import TrackTikSettings
from workers.perform import Job

pytestmark = pytest.mark.reliability


def event(account: str, code: str, zone: str = "3") -> dict[str, Any]:
    return {
        "account": account,
        "code": code,
        "zone": zone,
        "occurred_at": datetime.now(UTC).isoformat(),
        "event_id": uuid.uuid4().hex,
    }


@pytest.fixture
def make_stack(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str, tmp_path: Path
) -> Iterator[Callable[..., Stack]]:
    contexts: list[Any] = []

    def start(**overrides: Any) -> Stack:
        values: dict[str, Any] = {
            "database_url": postgres_url,
            "redis_url": redis_url,
            "broker_key_prefix": f"abrel:{uuid.uuid4().hex[:10]}:",
            "http_read_timeout_s": 2.0,
        }
        values.update(overrides)
        context = Stack(
            make_settings(
                CallOnAlarmSettings(poll_interval_s=2), TrackTikSettings(create_read_timeout_s=2.0), **values
            ),
            tmp_path,
        ).running()
        contexts.append(context)
        return context.__enter__()

    yield start
    for context in contexts:
        context.__exit__(None, None, None)


def fault(stack: Stack, vendor: str, **spec: Any) -> None:
    response = stack.http.post(f"{stack.sandbox.base_url}/{vendor}/_sandbox/faults", json=spec, timeout=5)
    assert response.status_code == 201, response.text


def journal(stack: Stack, vendor: str, method: str, path: str) -> list[dict[str, Any]]:
    entries = stack.sandbox_get(f"/{vendor}/_sandbox/journal?method={method}&path={path}")
    return [e for e in entries if e.get("simulator") == vendor]


def test_a_5xx_then_success_creates_one_tracktik_alarm(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    fault(stack, "tracktik", method="POST", path="/rest/v1/alarms", status=503, count=1)
    alarm_id = stack.post_event(event("ny-1", "BA"))["alarm_id"]  # the default plan: TrackTik only
    alarm = stack.wait_for(alarm_id, "tracktik.create_alarm", timeout_s=30)
    [action] = [a for a in alarm["actions"] if a["kind"] == "tracktik.create_alarm"]
    assert action["attempts"] == 2
    assert len(journal(stack, "tracktik", "POST", "/rest/v1/alarms")) == 2
    assert len(stack.sandbox_get("/tracktik/_sandbox/alarms")) == 1


def test_a_429_with_retry_after_is_honoured(make_stack: Callable[..., Stack]) -> None:
    stack = make_stack()
    fault(
        stack, "cad", method="PUT", path="/api/v1/external/incident", status=429, headers={"Retry-After": "3"}
    )
    alarm_id = stack.post_event(event("ny-1", "FA"))["alarm_id"]
    stack.wait_for(alarm_id, "cad.upload_incident", timeout_s=30)
    puts = journal(stack, "cad", "PUT", "/api/v1/external/incident")
    assert len(puts) == 2
    first, second = (datetime.fromisoformat(p["at"]) for p in puts)
    assert second - first >= timedelta(seconds=3)
    assert len(stack.sandbox_get("/cad/_sandbox/incidents")) == 1


def test_a_lost_answer_after_tracktik_created_the_alarm_does_not_create_a_second(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack()
    fault(stack, "tracktik", method="POST", path="/rest/v1/alarms", timeout_after_commit=True, hold_s=5)
    alarm_id = stack.post_event(event("ny-1", "BA"))["alarm_id"]
    stack.wait_for(alarm_id, "tracktik.create_alarm", timeout_s=40)
    assert len(stack.sandbox_get("/tracktik/_sandbox/alarms")) == 1
    alarm = stack.alarm(alarm_id)
    assert alarm["refs"]["tracktik_dispatch_task_id"]


def test_a_worker_killed_after_sending_is_re_driven_once_its_lease_expires(
    make_settings: Callable[..., Settings], postgres_url: str, redis_url: str, tmp_path: Path
) -> None:
    from vendors.tracktik.tasks import _create_alarm  # the handler the killed worker was running
    from workers.runtime import build_runtime

    # A lease of 4 s (the hard time limit must be shorter), so the re-drive comes soon.
    settings = make_settings(
        database_url=postgres_url,
        redis_url=redis_url,
        broker_key_prefix=f"abrel:{uuid.uuid4().hex[:10]}:",
        action_lease_s=4,
        task_time_limit_s=3,
        task_soft_time_limit_s=2,
    )
    stack = Stack(settings, tmp_path)
    # Before any worker runs: the doomed worker claims the action, TrackTik applies its request,
    # and it dies without recording anything.
    alarm_id = stack.post_event(event("ny-1", "BA"))["alarm_id"]
    rt = build_runtime(stack.settings)  # the doomed worker's
    try:
        with rt.sessions.begin() as session:
            action = session.query(Action).filter_by(alarm_id=alarm_id, kind="tracktik.create_alarm").one()
            claimed = actions.claim(session, action.id, now=utcnow(), lease=timedelta(seconds=4))
            assert claimed is not None
        with rt.sessions() as session:
            context = load_context(session, alarm_id, rt.sites)
        _create_alarm(Job(claimed, context, rt.clients, rt.settings, utcnow()))
    finally:
        rt.engine.dispose()
    assert len(stack.sandbox_get("/tracktik/_sandbox/alarms")) == 1

    with stack.running():  # the surviving worker gets the message, finds the lease live, waits for expiry
        alarm = stack.wait_for(alarm_id, "tracktik.create_alarm", timeout_s=40)
        [redriven] = [a for a in alarm["actions"] if a["kind"] == "tracktik.create_alarm"]
        assert redriven["attempts"] == 2
        assert len(stack.sandbox_get("/tracktik/_sandbox/alarms")) == 1  # adopted, not created again


def test_a_delay_longer_than_the_broker_visibility_timeout_runs_once(
    make_stack: Callable[..., Stack],
) -> None:
    stack = make_stack(broker_visibility_timeout_s=1)
    alarm_id = stack.post_event(event("ab-95367", "BA", zone="8"))["alarm_id"]  # call after 3 s
    stack.wait_for(alarm_id, "callonalarm.trigger", timeout_s=30)
    opened = datetime.fromisoformat(stack.alarm(alarm_id)["opened_at"])
    wait_until(lambda: datetime.now(UTC) > opened + timedelta(seconds=8), timeout_s=15)
    calls = [c for c in stack.sandbox_get("/callonalarm/_sandbox/alerts") if c["eventCode"] == "BA"]
    assert len(calls) == 1
    assert len(stack.sandbox_get("/tracktik/_sandbox/alarms")) == 1
