"""`make soak` (not part of `make test`): 10,000 alarms against vendors that answer in 0.3-1 s, with
20 SIGKILLs spread over `worker`, `urgent` and `bulk`, 2 Redis restarts and a storm of 5xx, 429 and lost
answers; then every alarm is reconciled against the sandbox: nothing lost, nothing sent twice.

The deployment is the fault suite's (``FaultStack``): the Procfile's processes with their thread
pools, a private Redis, the sandbox in a process of its own, on a PostgreSQL database of its own.
Bounded: at most 15 minutes (``SOAK_TIMEOUT_S``), loopback only. ``SOAK_ALARMS`` changes the count.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from app.ledger.models import Action, Alarm, Event
from tests.reliability.faultstack import FaultStack, Posted, alarm_body, bulk_bodies
from tests.reliability.reconcile import reconcile
from tests.reliability.test_fault_suite import Chaos, Timer
from vendors.rapidsos import steps as rapidsos_steps
from vendors.tracktik import steps as tracktik_steps

pytestmark = [pytest.mark.reliability, pytest.mark.soak]
ALARMS = int(os.environ.get("SOAK_ALARMS", "10000"))
# One alarm in forty is a fire (RapidSOS, TrackTik, CAD on `urgent`): the sandbox's RapidSOS takes 60
# alerts a minute, as RapidSOS does, and a 429 storm there would only measure its own limit.
LIFE_SHARE = 40
# One alarm in five of the rest is a trouble (SIA BT: the bulk queue, worked by `bulk`, which yields
# to the fire alarms while they are being worked: its steps wait their turn, then run as the others).
TROUBLE_SHARE = 5
KINDS = {"FA": "fire", "BA": "burglary", "BT": "trouble"}
KILLS, REDIS_RESTARTS = 20, 2
SEED = 20261206
SOAK_TIMEOUT_S = 900
# Leases that a killed worker's steps outlive quickly, and a step deadline above the slowest vendor.
SOAK_ENV = {
    "ACTION_LEASE_S": "15",
    "TASK_TIME_LIMIT_S": "12",
    "TASK_SOFT_TIME_LIMIT_S": "10",
    "HTTP_READ_TIMEOUT_S": "4",
    "TRACKTIK_CREATE_READ_TIMEOUT_S": "4",
    "ACTION_MAX_ATTEMPTS": "30",
}


@pytest.fixture
def soak_stack(tmp_path: Path, postgres_url: str) -> Iterator[FaultStack]:
    stack = FaultStack(tmp_path / "soak", postgres_url, env=SOAK_ENV)
    try:
        yield stack.start()
    finally:
        stack.close()


def _latency_and_storm(stack: FaultStack, seed: int) -> None:
    """Every create answers in 0.3-1 s; about 5 % 503 and 3 % 429 (Retry-After 1), and about 1 % of
    TrackTik and CAD creates applied and never answered (reconciled by ref note and sysId)."""
    forever = 10 * ALARMS
    creates = {
        "tracktik": ("POST", "/rest/v1/alarms"),
        "cad": ("PUT", "/api/v1/external/incident"),
        "rapidsos": ("POST", "/v1/alerts"),
    }
    for index, (vendor, (method, path)) in enumerate(creates.items()):
        base = seed + 10 * index
        later = {"Retry-After": "1"}
        stack.fault(vendor, status=503, headers=later, probability=0.05, count=forever, seed=base)
        stack.fault(vendor, status=429, headers=later, probability=0.03, count=forever, seed=base + 1)
        if vendor != "rapidsos":  # no dedupe there: a lost answer is sent again, by design
            stack.fault(vendor, method=method, path=path, timeout_after_commit=True, hold_s=5,
                        probability=0.01, count=forever, seed=base + 2)  # fmt: skip
        stack.fault(
            vendor, method=method, path=path, delay_s=0.3, delay_max_s=1.0, count=forever, seed=base + 3
        )


def _bodies(count: int) -> list[dict[str, Any]]:
    rest = count - count // LIFE_SHARE
    burglaries = bulk_bodies(rest - rest // TROUBLE_SHARE, "soak")
    troubles = bulk_bodies(rest // TROUBLE_SHARE, "soak-trouble", code="BT")
    bodies = _interleave(burglaries, troubles, TROUBLE_SHARE, after=TROUBLE_SHARE - 2)
    fires = [alarm_body("fs-life", f"soak-fire-{n}", code="FA") for n in range(count // LIFE_SHARE)]
    return _interleave(bodies, fires, LIFE_SHARE, after=0)


def _interleave(
    many: list[dict[str, Any]], few: list[dict[str, Any]], every: int, *, after: int
) -> list[dict[str, Any]]:
    """``many`` with one of ``few`` (from its end) after each of ``many``'s ``after``-th of every
    ``every - 1``, and whatever is left of ``few`` at the end."""
    few = list(few)
    mixed: list[dict[str, Any]] = []
    for index, body in enumerate(many):
        mixed.append(body)
        if index % (every - 1) == after and few:
            mixed.append(few.pop())
    return mixed + few


@pytest.mark.timeout(SOAK_TIMEOUT_S + 60)
def test_soak_10000_alarms_through_kills_restarts_and_a_slow_stormy_vendor(soak_stack: FaultStack) -> None:
    stack, timer = soak_stack, Timer()
    began = time.monotonic()
    rng = random.Random(SEED)
    _latency_and_storm(stack, SEED)
    bodies = _bodies(ALARMS)
    posting_s = max(60.0, ALARMS / 25)  # about 25 alarms/s offered: about 35 steps in flight per pool
    pools = ("worker", "urgent", "bulk")
    kills = sorted((rng.uniform(5.0, posting_s), rng.choice(pools)) for _ in range(KILLS))
    restarts = sorted(rng.uniform(10.0, posting_s) for _ in range(REDIS_RESTARTS))
    events = sorted([(t, f"kill {name}") for t, name in kills] + [(t, "redis") for t in restarts])
    done: list[str] = []

    def act(index: int) -> None:
        what = events[index][1]
        if what == "redis":
            stack.redis.crash()
            time.sleep(2.0)  # an outage of 2 s; intake keeps answering (the outbox leaves steps unsent)
            stack.redis.start()
        else:
            name = what.split()[1]
            stack.wait_worker_ready(name)
            stack.kill_group(name)  # the whole process and every step its threads held
        done.append(what)

    chaos = Chaos([t for t, _ in events], act).start()
    posted: list[Posted] = []
    try:
        chunk = 30
        for start in range(0, len(bodies), chunk):
            due = began + posting_s * start / len(bodies)
            time.sleep(max(0.0, due - time.monotonic()))
            for body in bodies[start : start + chunk]:  # a panel stamps its own time as it sends
                body["occurred_at"] = datetime.now(UTC).isoformat()
            posted += stack.post_all(bodies[start : start + chunk], threads=8)
        timer.mark("posted")
        chaos.join(timeout_s=300)
    finally:
        chaos.stop()
    stack.resend_until_accepted(posted, timeout_s=120)  # a 503 during an outage is the sender's to retry
    steps = sum(3 if p.body["account"] == "fs-life" else 2 for p in posted)
    left = SOAK_TIMEOUT_S - (time.monotonic() - began)
    stack.wait_settled(steps, timeout_s=max(60.0, left - 60))
    timer.mark("settled")
    report = reconcile(stack.engine, stack.sandbox, posted, http=stack.http)
    timer.mark("reconciled")
    latencies = _signal_to_guard_dispatched(stack)
    print(  # noqa: T201
        f"soak: {len(posted)} alarms in {time.monotonic() - began:.0f}s; {done.count('redis')} Redis "
        f"restarts; kills: worker {done.count('kill worker')}, urgent {done.count('kill urgent')}, "
        f"bulk {done.count('kill bulk')}; troubles {sum(1 for p in posted if p.body['code'] == 'BT')}; "
        f"platform restarts {len(stack.restarts)}; {report.unknown_outcomes} unknown outcomes, "
        f"{report.adopted} TrackTik alarms adopted, {report.resent_without_dedupe} deliberate "
        f"RapidSOS re-sends; extra attempts {dict(report.attempts)}; signal to TrackTik alarm created "
        f"p50/p99 {_figures(latencies)}; phases {timer.marks}"
    )
    assert len(done) == KILLS + REDIS_RESTARTS
    assert report.upstream["tracktik"] == len(posted)  # one guard dispatch per alarm, never two
    assert report.upstream["cad"] == len(posted)
    assert report.actions[(rapidsos_steps.CREATE_ALERT, "succeeded")] == ALARMS // LIFE_SHARE


def _signal_to_guard_dispatched(stack: FaultStack) -> dict[str, tuple[float, float]]:
    """p50 and p99, in seconds, from each alarm's event to its TrackTik alarm's creation recorded
    (kills, outages and the storm included), for all alarms and by kind (fire, burglary, trouble)."""
    with stack.engine.connect() as conn:
        rows = conn.execute(
            select(Event.received_at, Action.completed_at, Event.code)
            .join(Alarm, Alarm.id == Event.alarm_id)
            .join(Action, Action.alarm_id == Alarm.id)
            .where(Action.kind == tracktik_steps.CREATE_ALARM, Action.completed_at.is_not(None))
        ).all()
    by_code: dict[str, list[float]] = {"all": []}
    for received, done, code in rows:
        wait = (done - received).total_seconds()
        by_code["all"].append(wait)
        by_code.setdefault(KINDS.get(code, code), []).append(wait)
    return {kind: _p50_p99(waits) for kind, waits in by_code.items()}


def _figures(latencies: dict[str, tuple[float, float]]) -> str:
    return ", ".join(f"{kind} {p50:.2f}s/{p99:.2f}s" for kind, (p50, p99) in latencies.items())


def _p50_p99(waits: list[float]) -> tuple[float, float]:
    waits = sorted(waits)
    if not waits:
        return (float("nan"), float("nan"))
    return waits[len(waits) // 2], waits[min(len(waits) - 1, int(0.99 * len(waits)))]
