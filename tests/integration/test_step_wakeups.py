"""Steps start when what they wait for happens, not at their next poll; the 911 request leaves first.

perform() runs real handlers' outcomes against a real ledger and the real Redis broker (a private
key prefix): what it publishes is read back from the broker's queues.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import select

from app.domain.events import Event
from app.domain.intake import IntakeRules, record_event
from app.ledger.models import WAITING_FOR_REFS, Action, ActionState, utcnow
from tests.sites_fixture import ALTA_ZONE, NEWTON_ACCOUNT
from workers.clients.errors import NotYetError, UpstreamUnavailableError
from workers.perform import Job, Outcome, perform
from workers.runtime import Runtime

pytestmark = pytest.mark.integration
RULES = IntakeRules(grouping_window=timedelta(minutes=5), dedupe_window_s=300)


def _published(rt: Runtime, queue: str) -> list[int]:
    """The action ids of the messages waiting in ``queue`` (kombu's Redis list, protocol 2 bodies)."""
    client = redis.Redis.from_url(rt.settings.redis_url or "")
    ids = []
    for raw in client.lrange(f"{rt.settings.broker_key_prefix}{queue}", 0, -1):
        _args, kwargs, _embed = json.loads(base64.b64decode(json.loads(raw)["body"]))
        ids.append(kwargs["action_id"])
    return sorted(ids)


def _alarm(rt: Runtime, code: str | None, account: str, zone: str = "1") -> dict[str, int]:
    """Record a panel event (or, with no code, an Alta zone webhook); its plan's step ids by kind."""
    now = utcnow()
    if code is None:  # Alta: the plan's video step looks for the ongoing alert first
        event = Event(
            source_key="alta-main", source_kind="alta", received_at=now, account=account, zone=account,
            occurred_at=now, payload={"alarm_zone_id": account},
        )  # fmt: skip
    else:
        event = Event(
            source_key="acme-panels", source_kind="panel", received_at=now, account=account, code=code,
            zone=zone, occurred_at=now, payload={"code": code},
        )  # fmt: skip
    with rt.sessions.begin() as session:
        receipt = record_event(session, event, sites=rt.sites, rules=RULES)
    with rt.sessions() as session:
        rows = session.execute(select(Action).where(Action.alarm_id == receipt.alarm_id)).scalars()
        steps = {a.kind: a.id for a in rows}
    return {"alarm": receipt.alarm_id or 0, **steps}


def _state(rt: Runtime, action_id: int) -> tuple[str, str | None]:
    with rt.sessions() as session:
        action = session.get_one(Action, action_id)
        return action.state, action.waiting_on


def _raise(exc: Exception) -> Callable[[Job], Outcome]:
    def handler(job: Job) -> Outcome:
        raise exc

    return handler


def test_a_step_waiting_for_a_ref_starts_as_soon_as_another_step_records_it(rt: Any) -> None:
    steps = _alarm(rt, None, ALTA_ZONE)  # commercial burglary: Alta video, TrackTik, a held call
    tracktik, finder = steps["tracktik.create_alarm"], steps["alta.find_ongoing_alert"]
    waiting = NotYetError("waiting for the Alta video links", retry_after_s=60, wake_on_refs=True)
    assert perform(rt, tracktik, _raise(waiting)) == ActionState.PENDING
    assert _state(rt, tracktik) == (ActionState.PENDING, WAITING_FOR_REFS)
    assert tracktik not in _published(rt, "default")

    perform(rt, finder, lambda job: Outcome(refs={"video_links": ["https://alta.example/v/1"]}))

    assert _state(rt, tracktik) == (ActionState.QUEUED, None)  # not in 60 s: now
    assert tracktik in _published(rt, "default")


def test_a_ref_recorded_while_the_step_looked_is_not_missed(rt: Any) -> None:
    steps = _alarm(rt, None, ALTA_ZONE)
    tracktik, finder = steps["tracktik.create_alarm"], steps["alta.find_ongoing_alert"]

    def looks_then_waits(job: Job) -> Outcome:
        # Another worker records the links after this step read the alarm, before it defers.
        perform(rt, finder, lambda _: Outcome(refs={"video_links": ["https://alta.example/v/2"]}))
        raise NotYetError("waiting for the Alta video links", retry_after_s=60, wake_on_refs=True)

    perform(rt, tracktik, looks_then_waits)
    assert _state(rt, tracktik) == (ActionState.QUEUED, None)
    assert tracktik in _published(rt, "default")


def test_a_backoff_is_not_cut_short_by_a_ref(rt: Any) -> None:
    steps = _alarm(rt, None, ALTA_ZONE)
    tracktik, finder = steps["tracktik.create_alarm"], steps["alta.find_ongoing_alert"]
    perform(rt, tracktik, _raise(UpstreamUnavailableError("tracktik", "HTTP 503", retry_after_s=30)))
    perform(rt, finder, lambda job: Outcome(refs={"video_links": ["https://alta.example/v/3"]}))
    assert _state(rt, tracktik) == (ActionState.PENDING, None)  # Retry-After is honoured


def test_the_911_request_leaves_before_the_alarm_s_other_steps(rt: Any) -> None:
    steps = _alarm(rt, "FA", NEWTON_ACCOUNT)  # residential fire: RapidSOS, then the call and the CAD
    held = [steps["callonalarm.trigger"], steps["cad.upload_incident"]]
    seen: dict[str, Any] = {}

    def create_alert(job: Job) -> Outcome:
        seen["before"] = [_state(rt, a) for a in held]
        job.release_911()  # what the RapidSOS task does once its request has left
        seen["after"] = [_state(rt, a)[0] for a in held]
        seen["published"] = _published(rt, "life_safety")
        return Outcome(external_id="rapidsos-1", refs={"rapidsos_alert_id": "rapidsos-1"})

    perform(rt, steps["rapidsos.create_alert"], create_alert)
    assert seen["before"] == [(ActionState.PENDING, "911")] * 2
    assert seen["after"] == [ActionState.QUEUED] * 2
    assert set(held) <= set(seen["published"])


def test_a_911_request_that_cannot_be_sent_does_not_keep_the_guard_waiting(rt: Any) -> None:
    steps = _alarm(rt, "FA", NEWTON_ACCOUNT)
    held = [steps["callonalarm.trigger"], steps["cad.upload_incident"]]
    perform(
        rt,
        steps["rapidsos.create_alert"],
        _raise(UpstreamUnavailableError("rapidsos", "token: HTTP 503", retry_after_s=5)),
    )
    assert [_state(rt, a) for a in held] == [(ActionState.QUEUED, None)] * 2
    assert set(held) <= set(_published(rt, "life_safety"))
