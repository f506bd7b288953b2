"""The fault suite (issue 8): the real deployment — the Procfile's gunicorn web, Celery worker, urgent
and beat processes, the sandbox as a process, a private Redis — is broken while alarms pour in, and
each case ends by reconciling the ledger against what the sandbox upstreams hold (reconcile.py):
every accepted event has its alarm, every planned step reached its end, and no upstream received a
second create for one step.

Run alone with ``pytest -m faults`` (about 4.5 minutes on an otherwise idle 2-core machine); part of
``make test``. Every case uses its own Redis server (and the PostgreSQL case its own cluster) on free
loopback ports, its own ledger database and its own key prefix; the shared Redis is never used and
the shared PostgreSQL server only holds the cases' own databases. Random moments are drawn from
seeded generators, so a failing run can be replayed.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import suppress
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import func, select

from app.ledger.models import Action, Alarm, utcnow
from tests.conftest import service_unavailable
from tests.polling import wait_until
from tests.processes import BIN, REPO
from tests.reliability.faultstack import (
    PG_BIN,
    Chaos,
    FaultStack,
    Posted,
    PrivatePostgres,
    Timer,
    alarm_body,
    bulk_bodies,
    child_pids,
    iter_lines,
)
from tests.reliability.reconcile import reconcile
from vendors.tracktik import steps as tracktik_steps

pytestmark = [pytest.mark.faults, pytest.mark.reliability]
BULK = 1000  # alarms in the worker-kill and Redis cases; each creates a TrackTik alarm and a CAD incident
# The senders of the 1000-alarm cases keep at most this many steps waiting (25 alarms at a time):
# the stack is kept busy, not overloaded (FaultStack.post_all says why).
CHUNK, BACKLOG = 25, 60
SEED = 20260806


@pytest.fixture
def make_stack(tmp_path: Path) -> Iterator[Callable[..., FaultStack]]:
    """Start ``FaultStack``s for the case; every process is stopped at teardown, pass or fail."""
    stacks: list[FaultStack] = []

    if shutil.which("redis-server") is None:
        service_unavailable("redis-server", "the fault suite starts Redis servers of its own")

    def start(database_url: str, **options: Any) -> FaultStack:
        stack = FaultStack(tmp_path / f"stack{len(stacks)}", database_url, **options)
        stacks.append(stack)
        return stack.start()

    yield start
    for stack in stacks:
        stack.close()


@pytest.fixture
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL cluster of the case's own, which it may stop and start."""
    if not (PG_BIN / "initdb").exists():
        service_unavailable("PostgreSQL server binaries", f"no {PG_BIN / 'initdb'}")
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        service_unavailable("runuser", "initdb refuses root and there is no runuser to drop to postgres")
    cluster = PrivatePostgres()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.close()


def settle_and_reconcile(stack: FaultStack, posted: list[Posted], actions: int, timeout_s: float) -> Any:
    """Wait until every step has ended, reconcile, and check the web process never died on its own."""
    stack.wait_settled(actions, timeout_s=timeout_s)
    report = reconcile(stack.engine, stack.sandbox, posted, http=stack.http)
    assert not stack.crashes("web"), stack.crashes("web")
    return report


# -- 1. the worker SIGKILLed ten times --------------------------------------------------------------------


@pytest.mark.timeout(300)
def test_1000_alarms_while_the_worker_is_sigkilled_ten_times(
    make_stack: Callable[..., FaultStack], postgres_url: str
) -> None:
    """The ``worker`` process (the queues these alarms use) is SIGKILLed at ten seeded random moments:
    the whole process with every step its threads hold (under a prefork pool, sometimes one child
    mid-task), which is then started again as a platform would. Steps held by a dead worker are
    re-driven once their lease expires."""
    timer = Timer()
    stack = make_stack(postgres_url)
    timer.mark("started")
    rng = random.Random(SEED)
    moments = sorted(rng.uniform(1.0, 40.0) for _ in range(10))
    modes = [rng.choice(("child", "child", "group")) for _ in moments]
    modes[rng.randrange(10)] = "group"  # at least one whole worker dies
    killed: list[str] = []

    def kill(index: int) -> None:
        # A worker that is still starting is not yet the fault under test: strike one that consumes,
        # while a step is in flight when there is one (bounded: otherwise strike anyway).
        stack.wait_worker_ready("worker")
        with suppress(AssertionError):
            wait_until(lambda: stack.running() > 0, timeout_s=3, interval_s=0.05)
        worker = stack.procs["worker"]
        children = child_pids(worker.pid)
        if modes[index] == "child" and children:
            os.kill(rng.choice(children), signal.SIGKILL)  # the pool replaces it; its message is rejected
            killed.append("child")
            return
        # Main process and pool together: prefetched and running messages are stranded. The platform
        # starts the process again (FaultStack's supervisor).
        stack.kill_group("worker")
        killed.append("group")

    chaos = Chaos(moments, kill).start()
    try:
        posted = stack.post_all(bulk_bodies(BULK, "kill"), chunk=CHUNK, backlog_limit=BACKLOG)
        timer.mark("posted")
        chaos.join(timeout_s=120)
    finally:
        chaos.stop()
    assert len(killed) == 10, killed
    assert {p.status for p in posted} == {202}, {p.error for p in posted if p.status != 202}
    stack.wait_worker_ready("worker")
    report = settle_and_reconcile(stack, posted, 2 * BULK, timeout_s=150)
    timer.mark("reconciled")
    print(  # noqa: T201
        f"kills {killed} at {[round(m, 1) for m in moments]}s; platform restarts {stack.restarts}; "
        f"phases {timer.marks}"
    )
    assert report.actions[(tracktik_steps.CREATE_ALARM, "succeeded")] == BULK
    assert report.upstream["tracktik"] == BULK and report.upstream["cad"] == BULK
    # The kills were felt: some steps needed another attempt (a lease expired, a message came back).
    assert sum(report.attempts.values()) > 0
    assert "group" in killed


# -- 2. Redis restarted twice --------------------------------------------------------------------------


DURING_OUTAGE = 20  # alarms sent while Redis is down, each time


@pytest.mark.timeout(300)
def test_1000_alarms_while_redis_is_restarted_twice(
    make_stack: Callable[..., FaultStack], postgres_url: str
) -> None:
    """The broker (a private redis-server without persistence) crashes twice at seeded random moments
    and comes back empty on the same port: queued messages, cached tokens and locks vanish. Alarms
    sent while it is down are still answered 202 (the ledger committed; the outbox marks their steps
    unsent); the dispatcher sends them, and re-sends the lost ones, once it is back. Every process
    reconnects by itself, except that a Celery worker sometimes exits instead (see the note below):
    the platform starts it again, as the Procfile's platforms do."""
    timer = Timer()
    stack = make_stack(postgres_url)
    timer.mark("started")
    rng = random.Random(SEED + 1)
    moments = sorted(rng.uniform(4.0, 30.0) for _ in range(2))
    outages: list[float] = []
    during: list[Posted] = []

    def restart(index: int) -> None:
        began = time.monotonic()
        stack.redis.crash()
        sent = stack.post_all(bulk_bodies(DURING_OUTAGE, f"redis-down-{index}"), threads=4)
        during.extend(sent)
        remaining = 2.0 - (time.monotonic() - began)
        if remaining > 0:
            time.sleep(remaining)  # the outage lasts at least 2 s
        stack.redis.start()
        outages.append(round(time.monotonic() - began, 1))

    chaos = Chaos(moments, restart).start()
    try:
        bodies = bulk_bodies(BULK - 2 * DURING_OUTAGE, "redis")
        posted = stack.post_all(bodies, chunk=CHUNK, backlog_limit=BACKLOG)
        timer.mark("posted")
        chaos.join(timeout_s=120)
    finally:
        chaos.stop()
    assert len(outages) == 2
    assert {p.status for p in during} == {202}, {(p.status, p.error) for p in during if p.status != 202}
    posted += during
    assert {p.status for p in posted} == {202}, {(p.status, p.error) for p in posted if p.status != 202}
    report = settle_and_reconcile(stack, posted, 2 * BULK, timeout_s=150)
    timer.mark("reconciled")
    unsent = "\n".join(iter_lines(stack.procs["web"].log)).count('"outbox.broker_unavailable"')
    # Celery 5.7 / kombu 5.7 sometimes exit ("Unrecoverable error: AttributeError: 'NoneType' object
    # has no attribute 'hostname'") instead of reconnecting, when Redis goes away while they hold an
    # unacknowledged message; the platform starts them again, and the ledger loses nothing.
    print(  # noqa: T201
        f"redis down at {[round(m, 1) for m in moments]}s for {outages}s; intake left {unsent} steps "
        f"unsent for the dispatcher; processes that exited and were restarted: {stack.crashes()}; "
        f"phases {timer.marks}"
    )
    assert unsent >= 2 * DURING_OUTAGE  # two steps per alarm sent during the outages
    assert report.upstream["tracktik"] == BULK and report.upstream["cad"] == BULK
    assert stack.ready()  # web, ledger and broker all answer again


# -- 3. an upstream storm: 5xx, 429 + Retry-After, and lost answers ---------------------------------------

STORM_BULK = 200
STORM_LIFE = 8  # RapidSOS + TrackTik + CAD: RapidSOS has no dedupe (60 requests per minute)
STORM_PHONE = 8  # TrackTik + CallOnAlarm: CallOnAlarm has no dedupe (100 requests per hour)


def storm(stack: FaultStack, vendor: str, creates: tuple[str, str], seed: int, lost_answers: bool) -> None:
    """On every request the vendor gets: about 30 % 5xx (15 % 503 + Retry-After, 10 % 500 without,
    5 % 502 "from a gateway", which a create must treat as an unknown outcome) and about 10 % 429 +
    Retry-After; for the vendors that can be reconciled, about 6 % of the creates are also applied
    and never answered. Each fault's count is about what one pass over the case's steps draws, so the
    storm passes (a step that kept failing for longer would wait minutes in exponential backoff)."""
    method, path = creates
    if lost_answers:
        stack.fault(vendor, method=method, path=path, timeout_after_commit=True, hold_s=4,
                    probability=0.06, count=8, seed=seed)  # fmt: skip
    later = {"Retry-After": "1"}
    stack.fault(vendor, status=503, headers=later, probability=0.15, count=STORM_BULK // 5, seed=seed + 1)
    stack.fault(vendor, status=500, probability=0.1 / 0.85, count=STORM_BULK // 8, seed=seed + 2)
    stack.fault(vendor, status=502, probability=0.05 / 0.75, count=STORM_BULK // 16, seed=seed + 3)
    stack.fault(
        vendor, status=429, headers=later, probability=0.1 / 0.7, count=STORM_BULK // 8, seed=seed + 4
    )


@pytest.mark.timeout(240)
def test_an_upstream_storm_of_5xx_429_and_lost_answers(
    make_stack: Callable[..., FaultStack], postgres_url: str
) -> None:
    """Every vendor answers about 30 % 5xx and 10 % 429 for a while; TrackTik and the CAD also apply
    some creates and never answer. TrackTik's retries find and adopt what they created (the ref note),
    the CAD dedupes on sysId; RapidSOS and CallOnAlarm are sent again only after an unknown outcome."""
    timer = Timer()
    # No process dies here: a long lease, so a burst of steps waiting in line is never taken for lost.
    stack = make_stack(
        postgres_url,
        env={"ACTION_LEASE_S": "60", "TASK_TIME_LIMIT_S": "10", "TASK_SOFT_TIME_LIMIT_S": "8"},
    )
    timer.mark("started")
    storm(stack, "tracktik", ("POST", "/rest/v1/alarms"), seed=SEED + 10, lost_answers=True)
    storm(stack, "cad", ("PUT", "/api/v1/external/incident"), seed=SEED + 20, lost_answers=True)
    storm(stack, "rapidsos", ("POST", "/v1/alerts"), seed=SEED + 30, lost_answers=False)
    storm(stack, "callonalarm", ("POST", "/v1/alert/trigger"), seed=SEED + 40, lost_answers=False)
    bodies = bulk_bodies(STORM_BULK, "storm")
    bodies += [alarm_body("fs-life", f"storm-life-{n}", "FA") for n in range(STORM_LIFE)]
    bodies += [alarm_body("fs-phone", f"storm-phone-{n}") for n in range(STORM_PHONE)]
    posted = stack.post_all(bodies)
    timer.mark("posted")
    assert {p.status for p in posted} == {202}
    actions = 2 * STORM_BULK + 3 * STORM_LIFE + 2 * STORM_PHONE
    report = settle_and_reconcile(stack, posted, actions, timeout_s=180)
    timer.mark("reconciled")

    faulted: dict[str, int] = {}
    for vendor in ("tracktik", "cad", "rapidsos", "callonalarm"):
        for entry in stack.sandbox_get(f"/{vendor}/_sandbox/journal"):
            if entry["fault"]:
                key = f"{vendor}:{entry['fault']}:{entry['status']}"
                faulted[key] = faulted.get(key, 0) + 1
    print(f"faults applied {dict(sorted(faulted.items()))}; phases {timer.marks}")  # noqa: T201
    assert sum(n for k, n in faulted.items() if k.startswith("tracktik:timeout_after_commit")) > 0
    assert sum(n for k, n in faulted.items() if k.startswith("cad:timeout_after_commit")) > 0
    assert any(":status:429" in k for k in faulted) and any(":status:503" in k for k in faulted)
    assert report.adopted > 0  # a lost TrackTik answer was reconciled by its ref, not created twice


# -- 4. a delayed step longer than the broker's visibility timeout ---------------------------------------

DELAYED = 12


@pytest.mark.timeout(180)
def test_a_delayed_step_longer_than_the_visibility_timeout_runs_once(
    make_stack: Callable[..., FaultStack], postgres_url: str
) -> None:
    """BROKER_VISIBILITY_TIMEOUT_S=3 and steps planned 6 s after the alarm: the delay waits in the
    ledger, not in the broker, so no message of it sits unacknowledged long enough to be redelivered.
    And a step that RUNS longer than the visibility timeout (TrackTik answering in 25 s) is redelivered
    by Redis (kombu restores old unacknowledged messages when a consumer starts, and every ~100 s
    after): the second worker started meanwhile restores them, and that delivery finds the step's
    lease and does nothing. Each step runs once: one TrackTik alarm, one CAD upload and one phone call
    per alarm, each in one attempt. The answer takes 25 s so that the second worker is up while the
    steps still run even on a host three times slower than usual (its start took 12 s on one)."""
    timer = Timer()
    stack = make_stack(
        postgres_url,
        env={
            "BROKER_VISIBILITY_TIMEOUT_S": "3",
            "TASK_SOFT_TIME_LIMIT_S": "30",
            "TASK_TIME_LIMIT_S": "32",
            "ACTION_LEASE_S": "40",
            "HTTP_READ_TIMEOUT_S": "30",
            "TRACKTIK_CREATE_READ_TIMEOUT_S": "30",
        },
    )
    timer.mark("started")
    stack.fault("tracktik", method="POST", path="/rest/v1/alarms", delay_s=25, count=2)
    posted = stack.post_all([alarm_body("fs-delay", f"delay-{n}") for n in range(DELAYED)], threads=4)
    assert {p.status for p in posted} == {202}

    def held_past_visibility() -> bool:
        with stack.engine.connect() as conn:
            started = conn.execute(
                select(func.min(Action.updated_at)).where(
                    Action.kind == tracktik_steps.CREATE_ALARM, Action.state == "running"
                )
            ).scalar()
        return started is not None and utcnow() - started > timedelta(seconds=3.5)

    wait_until(held_past_visibility, timeout_s=30, interval_s=0.1)
    stack.start_process("worker2", "worker", ["--hostname", "worker2@%h"])
    stack.wait_worker_ready("worker2")
    timer.mark("second worker up")
    with stack.engine.connect() as conn:
        still_running = conn.execute(
            select(func.count()).where(Action.kind == tracktik_steps.CREATE_ALARM, Action.state == "running")
        ).scalar()
    assert still_running, f"the second worker started after the slow steps ended; phases {timer.marks}"
    settle_and_reconcile(stack, posted, 3 * DELAYED, timeout_s=90)
    timer.mark("reconciled")

    triggers = stack.sandbox_get("/callonalarm/_sandbox/journal", method="POST", path="/v1/alert/trigger")
    puts = stack.sandbox_get("/cad/_sandbox/journal", method="PUT", path="/api/v1/external/incident")
    creates = stack.sandbox_get("/tracktik/_sandbox/journal", method="POST", path="/rest/v1/alarms")
    assert len(triggers) == DELAYED  # one request each: never re-sent, so no second call was possible
    assert len(puts) == DELAYED
    assert len(creates) == DELAYED
    with stack.engine.connect() as conn:
        rows = conn.execute(
            select(Action.kind, Action.attempts, Action.completed_at, Alarm.opened_at).join(
                Alarm, Alarm.id == Action.alarm_id
            )
        ).all()
    assert len(rows) == 3 * DELAYED
    assert {row.attempts for row in rows} == {1}
    delayed = [row for row in rows if row.kind != tracktik_steps.CREATE_ALARM]
    assert all(row.completed_at - row.opened_at >= timedelta(seconds=6) for row in delayed)
    # Whichever worker polls first gets the redelivery: with a thread pool the first worker has free
    # threads and restores it to itself as often as the second one does.
    redelivered = sum(
        "\n".join(iter_lines(stack.procs[name].log)).count('"action.skipped"')
        for name in ("worker", "worker2")
    )
    print(f"redeliveries the lease turned away: {redelivered}; phases {timer.marks}")  # noqa: T201
    assert redelivered >= 1


# -- 5. PostgreSQL restarted during intake ----------------------------------------------------------------


def migrate_with_cli(database_url: str) -> None:
    """``alarm-bridge db upgrade``, as the Procfile's release phase runs it."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("DATABASE_")}
    result = subprocess.run(
        [str(BIN / "alarm-bridge"), "db", "upgrade"],
        cwd=REPO,
        env={**env, "DATABASE_URL": database_url},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


OUTAGE_S = 3.0
RETRY_AFTER_S = 1.0  # what the 503 answers ask for


class SteadySender:
    """Posts alarms from several threads, back to back, until told to stop (or ``limit`` is sent);
    like ``post_all``, it holds back while more than ``backlog_limit`` steps wait in the ledger."""

    def __init__(
        self, stack: FaultStack, threads: int = 6, limit: int = 1500, backlog_limit: int = 80
    ) -> None:
        self.stack = stack
        self.sent: list[Posted] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._limit = limit
        self._backlog_limit = backlog_limit
        self._backlog = (0.0, 0)  # (when read, value)
        self._threads = [
            threading.Thread(target=self._run, args=(n,), name=f"sender-{n}", daemon=True)
            for n in range(threads)
        ]

    def _busy(self) -> bool:
        """Whether the ledger has a backlog (read at most every 0.3 s; unknown while it is down: no)."""
        with self._lock:
            read_at, value = self._backlog
            if time.monotonic() - read_at > 0.3:
                try:
                    value = self.stack.unsettled()
                except Exception:  # the ledger is down: that is the case under test, keep sending
                    value = 0
                self._backlog = (time.monotonic(), value)
            return value >= self._backlog_limit

    def _run(self, thread_no: int) -> None:
        n = 0
        while not self._stop.is_set():
            if self._busy():
                self._stop.wait(0.1)
                continue
            with self._lock:
                if len(self.sent) >= self._limit:
                    return
                body = bulk_bodies(1, f"pg-{thread_no}-{n}")[0]
                body["account"] = f"fs-{thread_no % 10}"
                item = Posted(body)
                self.sent.append(item)
            n += 1
            self.stack.send(item, timeout_s=20)
            # Like a well-behaved sender: after a 503, wait what Retry-After says, send the same event again.
            while item.status == 503 and not self._stop.wait(RETRY_AFTER_S):
                self.stack.send(item, timeout_s=20)

    def count(self, status: int | None) -> int:
        """Events whose latest answer is ``status``."""
        with self._lock:
            return sum(1 for p in self.sent if p.status == status)

    def answered(self, status: int) -> int:
        """How many answers (first sends and retries) were ``status``."""
        with self._lock:
            return sum(p.answers.count(status) for p in self.sent)

    def start(self) -> SteadySender:
        for thread in self._threads:
            thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        assert not any(thread.is_alive() for thread in self._threads)


@pytest.mark.timeout(240)
def test_postgresql_restarted_during_intake_answers_503_and_recovers_by_itself(
    make_stack: Callable[..., FaultStack], private_postgres: PrivatePostgres
) -> None:
    """A private PostgreSQL is stopped (``pg_ctl stop -m fast``: open transactions aborted) while
    alarms pour in, then started again. During the outage intake answers 503 + Retry-After (never a
    2xx that was not committed, never a 500) and /readyz says the ledger is down; afterwards every
    process reconnects on its own and the senders' retries (same event ids) are accepted."""
    timer = Timer()
    database_url = private_postgres.create_database(f"ab_faults_{uuid.uuid4().hex[:8]}")
    migrate_with_cli(database_url)
    stack = make_stack(database_url)
    timer.mark("started")
    sender = SteadySender(stack).start()
    try:
        wait_until(lambda: sender.count(202) >= 80, timeout_s=60, interval_s=0.1)
        private_postgres.stop("fast")
        stopped = time.monotonic()
        timer.mark("postgres stopped")
        wait_until(lambda: sender.answered(503) >= 10, timeout_s=30, interval_s=0.1)
        ready = stack.http.get(f"{stack.web}/readyz", timeout=10)
        assert ready.status_code == 503
        assert ready.json()["checks"]["ledger"].startswith("down"), ready.json()
        time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))  # the outage lasts OUTAGE_S
        private_postgres.start()
        timer.mark("postgres started")
        accepted_before = sender.count(202)
        wait_until(lambda: sender.count(202) >= accepted_before + 60, timeout_s=60, interval_s=0.1)
        timer.mark("intake recovered")
    finally:
        sender.stop()
    posted = sender.sent
    answers = [status for p in posted for status in p.answers]
    # 200: a retry of an event whose transaction committed although its answer was a 503.
    assert set(answers) <= {200, 202, 503}, sorted(
        {(p.status, p.error) for p in posted if p.status not in (200, 202, 503)}
    )
    refused = [p for p in posted if 503 in p.answers]
    assert answers.count(503) >= 10 and len(refused) >= 3
    wait_until(stack.ready, timeout_s=30, interval_s=0.2)  # /readyz: the ledger answers again

    # Events whose sender was stopped while it waited to retry: retried now, with the same event ids.
    stack.resend_until_accepted(posted, timeout_s=60)
    committed_anyway = sum(1 for p in refused if 200 in p.answers)
    timer.mark("resent")
    report = settle_and_reconcile(stack, posted, 2 * len(posted), timeout_s=150)
    timer.mark("reconciled")
    print(  # noqa: T201
        f"{len(posted)} events; {len(refused)} were answered 503 ({answers.count(503)} answers) and "
        f"accepted on a later try ({committed_anyway} had committed after all: 200 on retry); "
        f"phases {timer.marks}"
    )
    assert report.accepted == len(posted)
