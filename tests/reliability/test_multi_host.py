"""Beyond one machine (issue 8, fault suite): a host that drops off the network mid-storm loses no
alarm, and nothing it was doing is done twice.

Three test hosts, made of network namespaces joined by veth pairs to a bridge (tests/reliability/
netns.py):

- ``abS-<tag>`` (services, the bridge's home): a PRIVATE PostgreSQL cluster and a PRIVATE Redis on
  its address, the sandbox (every vendor) and ``beat`` (the dispatcher ticks);
- ``abA-<tag>`` (host A): the Procfile's ``web`` (gunicorn) and a ``worker``;
- ``abB-<tag>`` (host B): a second ``worker``.

The test posts 500 fire alarms (plan: TrackTik alarm + CAD incident) to the web on host A, and once
half of them have been answered and A's worker holds a lease, it takes host A's link down (the
senders stop: their web is gone). A's web and worker lose PostgreSQL,
Redis and the vendors in the middle of whatever they were doing; TrackTik answers slowly, so A's
worker is holding leases on actions whose requests may or may not have reached TrackTik. Then:

- every event intake answered 2xx before the cut is in the ledger (requests in flight at the cut may
  be there too: committed, with the answer lost; either way each event in the ledger is processed);
- the dispatcher re-sends each action A held a lease on as soon as the lease expires, and worker B
  finishes it (adopting a TrackTik alarm A created, by its ref note, rather than creating another);
- every action succeeds; the sandbox holds exactly one TrackTik alarm per create step and exactly
  one CAD incident per alarm, and nothing else (tests/reliability/reconcile.py).

Where namespaces cannot be made (no ``ip``, not root, no CAP_SYS_ADMIN) the test is skipped, saying
why; under CI=true that is a failure. Everything (processes, namespaces, veths, the temporary
directory) is removed in ``finally``, whatever happened.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
import requests
from sqlalchemy import Engine, func, select

from app.ledger.models import TERMINAL_ACTION_STATES, Action, ActionState, Alarm, Event, TimelineEntry
from app.ledger.session import make_engine
from config.celery import QUEUES
from tests.conftest import migrate, service_unavailable
from tests.polling import wait_until
from tests.processes import (
    REPO,
    Proc,
    answers,
    celery_ready,
    deployment_env,
    procfile_argv,
    start,
    stop_all,
    wait_answers,
)
from tests.reliability.netns import Lab, LabUnavailableError, probe_lab
from tests.reliability.reconcile import Posted, reconcile
from tests.sites_fixture import TRACKTIK_FIRE, new_york, site_toml
from vendors.cad import steps as cad_steps
from vendors.tracktik import steps as tracktik_steps

pytestmark = [pytest.mark.faults, pytest.mark.reliability, pytest.mark.timeout(240)]

PG_BIN = Path("/usr/lib/postgresql/15/bin")

ALARMS = 500
CUT_AFTER = ALARMS // 2  # answers received before host A's link goes down
SENDERS = 6  # concurrent HTTP senders
LEASE_S = 8.0
REDRIVE_MARGIN_S = 3.0  # a dispatcher tick (0.2 s), the claim, and the test's own polling (0.2 s)
SETTLE_TIMEOUT_S = 75.0
TRACKTIK_DELAY_S = 0.3  # the guards' system is slow: A's worker is mid-request when its link goes
CUT_DELAY_S = 2.0  # the creates' pace around the cut: under HTTP_READ_TIMEOUT_S and the soft limit
PANEL_TOKEN = "multi-host-panel-token-61d2e0"
OPERATOR_KEY = "multi-host-operator-key-0b7c9a"
# Intake serialises writers per (source, account): spread the storm over several panels.
ACCOUNTS = tuple(f"mh-{n}" for n in range(10))
PORTS = {"postgres": 5432, "redis": 6379, "sandbox": 8100, "web": 8000}

SITES = """
[sources.panels]
kind = "panel"
token_env = "MH_PANELS_TOKEN"

[plans.fire]
fire = ["tracktik.create_alarm", "cad.upload_incident"]
default = ["tracktik.create_alarm", "cad.upload_incident"]
""" + site_toml(
    "warehouse",
    name="Multi-host warehouse",
    sources=["panels"],
    accounts=list(ACCOUNTS),
    plan="fire",
    tracktik=TRACKTIK_FIRE,
    location=new_york("Acme warehouse"),
)
EXPECTED_KINDS = {tracktik_steps.CREATE_ALARM, cad_steps.UPLOAD_INCIDENT}
# Settings refuse a sandbox credential aimed anywhere but loopback (a misconfiguration in production),
# and here the vendors are on another host: the sandbox runs with credentials of this test's own.
CREDENTIALS = {  # variable: (the sandbox's default, this test's)
    "ALTA_PASSWORD": ("sandbox-alta-password", "mh-alta-password"),
    "TRACKTIK_CLIENT_SECRET": ("sandbox-tracktik-secret", "mh-tracktik-secret"),
    "TRACKTIK_PASSWORD": ("sandbox-tracktik-password", "mh-tracktik-password"),
    "CALLONALARM_API_KEY": ("coa_sandbox_key_0001", "coa_mh_key_0001"),
    "RAPIDSOS_CLIENT_SECRET": ("sandbox-rapidsos-secret", "mh-rapidsos-secret"),
    "CAD_TOKEN": ("sandbox-cad-token", "mh-cad-token"),
}


@dataclass
class Deployment:
    """The three hosts and what runs on them; ``close()`` removes everything."""

    root: Path
    lab: Lab = field(default_factory=Lab)
    procs: dict[str, Proc] = field(default_factory=dict)
    engine: Engine | None = None
    http: requests.Session = field(default_factory=requests.Session)
    phases: dict[str, float] = field(default_factory=dict)

    @property
    def services_address(self) -> str:
        assert self.lab.services is not None
        return self.lab.services.address

    @property
    def web(self) -> str:
        return f"http://{self.lab.hosts['A'].address}:{PORTS['web']}"

    @property
    def sandbox(self) -> str:
        return f"http://{self.services_address}:{PORTS['sandbox']}"

    @property
    def database_url(self) -> str:
        return f"postgresql+psycopg://postgres@{self.services_address}:{PORTS['postgres']}/ledger"

    def start(self) -> None:
        began = time.monotonic()
        self.lab.open(["A", "B"])
        (self.root / "logs").mkdir()
        services = self.lab.services
        assert services is not None
        self._start_postgres(services.ns)
        self._start_redis(services.ns)
        self._start_sandbox(services.ns)
        self.engine = make_engine(self.database_url)
        env = self._env()
        worker = [*procfile_argv("worker"), "--queues", ",".join(QUEUES), "--concurrency", "3"]
        a, b = self.lab.hosts["A"], self.lab.hosts["B"]
        web_env = {**env, "HOST": a.address, "PORT": str(PORTS["web"])}
        self._run("web", a.ns, procfile_argv("web", PORTS["web"]), web_env)
        self._run("worker-A", a.ns, [*worker, "--hostname", "worker@host-a"], env)
        self._run("worker-B", b.ns, [*worker, "--hostname", "worker@host-b"], env)
        self._run("beat", services.ns, procfile_argv("beat"), env)
        self.phases["services"] = time.monotonic() - began
        self._wait_ready()
        self.phases["ready"] = time.monotonic() - began

    def _run(self, name: str, ns: str, argv: list[str], env: dict[str, str]) -> None:
        """A process of the bridge's, with a var directory of its own."""
        var = self.root / "var" / name
        var.mkdir(parents=True)
        (var / "prometheus").mkdir()
        env = {**env, "VAR_DIR": str(var), "PROMETHEUS_MULTIPROC_DIR": str(var / "prometheus")}
        self._start(name, ns, argv, env)

    def _start(self, name: str, ns: str, argv: list[str], env: Mapping[str, str], cwd: Path = REPO) -> None:
        """Start ``argv`` on the host of namespace ``ns``, its output in logs/<name>.log."""
        log = self.root / "logs" / f"{name}.log"
        self.procs[name] = start(name, self.lab.exec_argv(ns, argv), env, log, cwd=cwd)

    def _start_postgres(self, ns: str) -> None:
        """initdb as ``postgres`` in a directory it owns; the server listens on the services address.

        The server notices a dead client within seconds (TCP keepalives): a host that drops off the
        network mid-transaction must not hold its row locks for the kernel's two hours.
        """
        home = self.root / "pg"
        home.mkdir()
        user = pwd.getpwnam("postgres")
        os.chown(home, user.pw_uid, user.pw_gid)
        data = home / "data"
        subprocess.run(
            ["runuser", "-u", "postgres", "--", str(PG_BIN / "initdb"), "-D", str(data), "-A", "trust",
             "-U", "postgres", "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8"],
            cwd=home, capture_output=True, check=True, timeout=120,
        )  # fmt: skip
        with (data / "pg_hba.conf").open("a") as hba:
            hba.write(f"host all all {self.lab.subnet} trust\n")
        options = " ".join(
            f"-c {setting}"
            for setting in (
                f"listen_addresses={self.services_address}",
                f"port={PORTS['postgres']}",
                f"unix_socket_directories={home}",
                "fsync=off",  # a test cluster: speed; nothing here is about disk durability
                "max_connections=200",
                "tcp_keepalives_idle=2",
                "tcp_keepalives_interval=1",
                "tcp_keepalives_count=3",
                "tcp_user_timeout=5000",  # ms; also when the server's last answer is what went unacknowledged
            )
        )
        pg_ctl = ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data)]
        started = subprocess.run(
            self.lab.exec_argv(
                ns, [*pg_ctl, "-l", str(home / "postgres.log"), "-o", options, "-w", "-t", "60", "start"]
            ),
            cwd=home,
            capture_output=True,
            check=False,
            timeout=90,
        )
        if started.returncode != 0:
            log = (
                (home / "postgres.log").read_text(errors="replace")
                if (home / "postgres.log").exists()
                else ""
            )
            raise RuntimeError(f"PostgreSQL did not start: {started.stderr!r}\n{log[-2000:]}")
        with psycopg.connect(
            host=self.services_address, port=PORTS["postgres"], user="postgres", dbname="postgres",
            autocommit=True, connect_timeout=5,
        ) as conn:  # fmt: skip
            conn.execute("CREATE DATABASE ledger")
        migrate(self.database_url)

    def _stop_postgres(self) -> None:
        data = self.root / "pg" / "data"
        if (data / "postmaster.pid").exists():
            pg_ctl = ["runuser", "-u", "postgres", "--", str(PG_BIN / "pg_ctl"), "-D", str(data)]
            subprocess.run(
                [*pg_ctl, "-m", "immediate", "-w", "-t", "30", "stop"],
                capture_output=True,
                check=False,
                timeout=60,
            )

    def _start_redis(self, ns: str) -> None:
        home = self.root / "redis"
        home.mkdir()
        argv = [
            shutil.which("redis-server") or "redis-server",
            "--bind", self.services_address, "--port", str(PORTS["redis"]),
            "--save", "", "--appendonly", "no", "--protected-mode", "no", "--dir", str(home),
        ]  # fmt: skip
        self._start("redis", ns, argv, os.environ, cwd=home)
        client = redis.Redis(host=self.services_address, port=PORTS["redis"], socket_connect_timeout=1)
        try:
            wait_until(lambda: _answers(client.ping), timeout_s=20, interval_s=0.1)
        finally:
            client.close()

    def _start_sandbox(self, ns: str) -> None:
        config = "\n".join(path.read_text() for path in sorted((REPO / "sandbox").glob("*/default.toml")))
        for default, ours in CREDENTIALS.values():
            assert f'"{default}"' in config, f"no sandbox/<vendor>/default.toml holds {default}"
            config = config.replace(f'"{default}"', f'"{ours}"')
        (self.root / "sandbox.toml").write_text(config)
        argv = [
            sys.executable, "-m", "sandbox", "--host", self.services_address, "--port", str(PORTS["sandbox"]),
            "--config", str(self.root / "sandbox.toml"),
        ]  # fmt: skip
        self._start("sandbox", ns, argv, os.environ)
        wait_answers(self.http, self.sandbox, timeout_s=30)
        self.slow_tracktik(TRACKTIK_DELAY_S)

    def slow_tracktik(self, delay_s: float) -> None:
        """Every TrackTik alarm create from now on is answered after ``delay_s`` (replacing the last)."""
        faults = f"{self.sandbox}/tracktik/_sandbox/faults"
        cleared = self.http.delete(faults, timeout=5)
        assert cleared.ok, cleared.text
        fault = {"method": "POST", "path": "/rest/v1/alarms", "delay_s": delay_s, "count": 100_000}
        answer = self.http.post(faults, json=fault, timeout=5)
        assert answer.status_code == 201, answer.text

    def _env(self) -> dict[str, str]:
        sites = self.root / "sites.toml"
        sites.write_text(SITES)
        return deployment_env(
            database_url=self.database_url,
            redis_url=f"redis://{self.services_address}:{PORTS['redis']}/0",
            sites=sites,
            sandbox=self.sandbox,
            MH_PANELS_TOKEN=PANEL_TOKEN,
            OPERATOR_API_KEYS=OPERATOR_KEY,
            SECRET_KEY="multi-host-secret-key-signing-sessions",
            WEB_CONCURRENCY="2",
            LOG_FORMAT="json",
            LOG_LEVEL="INFO",
            PYTHONUNBUFFERED="1",
            ACTION_LEASE_S=str(LEASE_S),
            TASK_SOFT_TIME_LIMIT_S="4",
            TASK_TIME_LIMIT_S="5",
            DISPATCH_INTERVAL_S="0.2",
            HTTP_CONNECT_TIMEOUT_S="1",
            HTTP_READ_TIMEOUT_S="3",
            TRACKTIK_CREATE_READ_TIMEOUT_S="3",
            **{name: ours for name, (_, ours) in CREDENTIALS.items()},
        )

    def _wait_ready(self) -> None:
        def ready() -> bool:
            for name in ("web", "worker-A", "worker-B", "beat"):
                if not self.procs[name].alive():
                    raise AssertionError(f"{name} exited:\n{self.procs[name].tail()}")
            workers = all(celery_ready(self.procs[n]) for n in ("worker-A", "worker-B"))
            return workers and answers(self.http, f"{self.web}/readyz")

        try:
            wait_until(ready, timeout_s=90, interval_s=0.3)
        except AssertionError as exc:
            raise AssertionError(f"the deployment did not start: {exc}\n{self.logs_tail()}") from None

    def logs_tail(self) -> str:
        return "\n".join(f"--- {name} ---\n{proc.tail(1500)}" for name, proc in self.procs.items())

    def close(self) -> list[str]:
        """Stop everything and remove what was made; returns what could not be removed."""
        self.http.close()
        if self.engine is not None:
            self.engine.dispose()
        stop_all(self.procs.values(), grace_s=5)  # host A is cut off: its processes cannot finish anyway
        self._stop_postgres()
        left = self.lab.close()
        shutil.rmtree(self.root, ignore_errors=True)
        if self.root.exists():
            left.append(f"directory {self.root}")
        return left


def _answers(probe: Any) -> bool:
    try:
        return bool(probe())
    except (OSError, redis.RedisError, requests.RequestException):
        return False


@pytest.fixture
def deployment() -> Iterator[Deployment]:
    reason = probe_lab()
    if reason is not None:
        service_unavailable("network namespaces", reason)
    for tool in ("runuser", "redis-server"):
        if shutil.which(tool) is None:
            service_unavailable(tool, "not installed")
    if not (PG_BIN / "initdb").exists():
        service_unavailable("PostgreSQL 15", f"{PG_BIN}/initdb not found")
    root = Path(tempfile.mkdtemp(prefix="ab-multihost-"))
    root.chmod(0o755)  # the postgres user must reach its data directory below
    found = Deployment(root)
    try:
        try:
            found.start()
        except LabUnavailableError as exc:
            service_unavailable("network namespaces", str(exc))
        yield found
    finally:
        left = found.close()
        assert not left, f"left behind: {left}"


# -- the storm ------------------------------------------------------------------------------------------


@dataclass
class Storm:
    """SENDERS threads posting alarms to host A until told to stop; each answer is kept in ``posted``."""

    web: str
    posted: list[Posted] = field(default_factory=list)
    answered: int = 0
    stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next: int = 0
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for n in range(SENDERS):
            thread = threading.Thread(target=self._send, name=f"sender-{n}", daemon=True)
            self._threads.append(thread)
            thread.start()

    def _take(self) -> int | None:
        with self._lock:
            if self.stop.is_set() or self._next >= ALARMS:
                return None
            self._next += 1
            return self._next - 1

    def _send(self) -> None:
        with requests.Session() as http:
            while (n := self._take()) is not None:
                body = {
                    "account": ACCOUNTS[n % len(ACCOUNTS)],
                    "code": "FA",
                    "zone": f"z{n}",
                    "event_id": uuid.uuid4().hex,
                    "occurred_at": datetime.now(UTC).isoformat(),
                }
                item = Posted(body)
                try:
                    answer = http.post(
                        f"{self.web}/v1/events",
                        json=body,
                        headers={"Authorization": f"Bearer {PANEL_TOKEN}"},
                        timeout=(1, 4),
                    )
                except requests.RequestException as exc:
                    item.error = type(exc).__name__  # in flight at the cut: committed or not, unknown
                else:
                    item.status = answer.status_code
                    if item.accepted:
                        item.alarm_id = answer.json()["alarm_id"]
                item.answers.append(item.status)
                with self._lock:
                    self.posted.append(item)
                    self.answered += item.accepted

    def finished(self) -> bool:
        return bool(self._threads) and not any(thread.is_alive() for thread in self._threads)

    def join(self) -> None:
        for thread in self._threads:
            thread.join(timeout=30)


# -- the case -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lease:
    action_id: int
    attempts: int
    token: str
    until: datetime


def _running(engine: Engine) -> list[Lease]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Action.id, Action.attempts, Action.lease_token, Action.lease_until).where(
                Action.state == ActionState.RUNNING
            )
        ).all()
    return [Lease(r.id, r.attempts, str(r.lease_token), r.lease_until) for r in rows]


class _ClaimsLog:
    """The claims a worker's log shows, read incrementally: each look parses only the lines written
    since the last, so looking costs milliseconds however long the log has grown."""

    def __init__(self, proc: Proc) -> None:
        self.path = proc.log
        self.offset = 0
        self.claims: set[tuple[int, int]] = set()

    def update(self) -> set[tuple[int, int]]:
        with self.path.open("rb") as log:
            log.seek(self.offset)
            chunk = log.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits for next time
        self.offset += len(complete)
        self.claims |= _claims(complete.decode(errors="replace"))
        return self.claims


def _held_by_a(engine: Engine, claims_a: _ClaimsLog, ignore: set[tuple[int, int]]) -> bool:
    """True when an action runs now under a lease whose claim A's log shows (and not among ``ignore``):
    A is mid-step.

    Positive evidence, read before the leases: a claim A logged and still running at the read is A's
    (B's log could lag behind its claims, and parsing all of it took long enough for A's step to end
    before the cut)."""
    known_a = claims_a.update() - ignore
    return any((lease.action_id, lease.attempts) in known_a for lease in _running(engine))


def _claims(log: str) -> set[tuple[int, int]]:
    """(action id, attempt) of every ``action.claimed`` line of a worker's JSON log."""
    found = set()
    for line in log.splitlines():
        if '"action.claimed"' not in line:
            continue
        try:
            entry = json.loads(line[line.index("{") :])
        except ValueError:
            continue
        if entry.get("action_id") is not None and entry.get("attempt") is not None:
            found.add((int(entry["action_id"]), int(entry["attempt"])))
    return found


def _watch_redrives(engine: Engine, leases: list[Lease], timeout_s: float) -> dict[int, datetime]:
    """When each leased action was seen taken over: re-sent by the dispatcher, claimed again or done."""
    seen: dict[int, datetime] = {}
    wanted = {lease.action_id: lease for lease in leases}
    deadline = time.monotonic() + timeout_s
    while len(seen) < len(wanted) and time.monotonic() < deadline:
        with engine.connect() as conn:
            rows = conn.execute(
                select(
                    Action.id, Action.state, Action.attempts, Action.lease_token, Action.enqueued_at
                ).where(Action.id.in_(list(wanted)))
            ).all()
        now = datetime.now(UTC)
        for row in rows:
            lease = wanted[row.id]
            resent = row.enqueued_at is not None and row.enqueued_at >= lease.until
            if row.id not in seen and (
                resent or row.lease_token != lease.token or row.attempts > lease.attempts
            ):
                seen[row.id] = now
        time.sleep(0.2)
    return seen


def test_a_host_cut_off_mid_storm_loses_nothing_and_its_leases_are_re_driven_once(
    deployment: Deployment,
) -> None:
    engine = deployment.engine
    assert engine is not None
    worker_a, worker_b = deployment.procs["worker-A"], deployment.procs["worker-B"]
    storm = Storm(deployment.web)
    started = time.monotonic()
    storm.start()
    wait_until(lambda: storm.answered >= CUT_AFTER or storm.finished(), timeout_s=90, interval_s=0.02)
    # Cut while A's worker holds a lease (a claim in A's own log, still running), so that the case
    # always has something of A's to re-drive. A step of 0.3 s could end between that look and the cut
    # on a busy machine (seen: all leases at the cut were B's), so from here the creates take
    # CUT_DELAY_S, and only a claim A logs after that change counts: its step is still in its upstream
    # call long after the look.
    deployment.slow_tracktik(CUT_DELAY_S)
    claims_a_log = _ClaimsLog(worker_a)
    before = set(claims_a_log.update())
    try:
        wait_until(lambda: _held_by_a(engine, claims_a_log, before), timeout_s=20, interval_s=0.02)
    except AssertionError:
        raise AssertionError(
            "host A's worker held no lease for 20 s after half the storm\n" + deployment.logs_tail()
        ) from None
    deployment.lab.cut("A")
    cut_at, cut_s = datetime.now(UTC), time.monotonic()
    storm.stop.set()
    leases = _running(engine)  # held at the cut, by A or by B
    deployment.slow_tracktik(TRACKTIK_DELAY_S)  # B alone drains the rest at the storm's pace
    storm.join()
    posted_s = time.monotonic() - started

    # Which leases were A's: B's log shows every claim B made (B stays connected; its log is local).
    redriven = _watch_redrives(engine, leases, timeout_s=LEASE_S + REDRIVE_MARGIN_S + 10)
    _wait_settled(engine, deployment)
    settled_s = time.monotonic() - cut_s
    claims_b = _claims(worker_b.tail(10_000_000))
    claims_a = _claims(worker_a.tail(10_000_000))
    held_by_a = [lease for lease in leases if (lease.action_id, lease.attempts) not in claims_b]
    assert held_by_a, (
        f"no action was leased by host A's worker at the cut ({len(leases)} running, all B's): "
        "the case proved nothing\n" + deployment.logs_tail()
    )

    with engine.connect() as conn:
        actions = {
            row.id: row
            for row in conn.execute(select(Action.id, Action.state, Action.attempts, Action.alarm_id))
        }
        orphans = conn.execute(
            select(func.count()).select_from(Event).where(Event.alarm_id.is_(None))
        ).scalar()
        kinds = conn.execute(select(Action.alarm_id, Action.kind)).all()
        alarms = conn.execute(select(func.count()).select_from(Alarm)).scalar_one()
    for lease in held_by_a:
        final = actions[lease.action_id]
        assert final.state == ActionState.SUCCEEDED and final.attempts > lease.attempts, (
            f"action {lease.action_id}, leased by A at attempt {lease.attempts}: {final.state}, "
            f"{final.attempts} attempts"
        )
        assert (lease.action_id, final.attempts) in claims_b, f"action {lease.action_id} not finished by B"
    assert orphans == 0, f"{orphans} events without an alarm"
    per_alarm: dict[int, set[str]] = {}
    for alarm_id, kind in kinds:
        per_alarm.setdefault(alarm_id, set()).add(kind)
    assert len(per_alarm) == alarms and all(k == EXPECTED_KINDS for k in per_alarm.values())

    report = reconcile(engine, deployment.sandbox, storm.posted, http=deployment.http)
    no_answer = sum(1 for p in storm.posted if p.status is None)
    print(  # noqa: T201 - the case's own numbers, shown with -s
        f"multi-host: {len(storm.posted)} posted in {posted_s:.1f}s, {report.accepted} accepted before "
        f"the cut, {no_answer} without an answer, {report.events} events in the ledger; "
        f"{len(leases)} leases at the cut, "
        f"{len(held_by_a)} of them A's ({len(claims_a)} claims by A, {len(claims_b)} by B), "
        f"re-driven {_redrive_delays(held_by_a, redriven)}; settled {settled_s:.1f}s after the cut; "
        f"cut at {cut_at.isoformat()}; start-up {deployment.phases}",
        flush=True,
    )
    assert report.accepted >= CUT_AFTER

    # Last, so that a late re-drive never hides a loss or a double: A's leases were taken over as
    # soon as they expired (the dispatcher's next tick), not whenever the queues happened to drain.
    late = []
    for lease in held_by_a:
        taken_at = redriven.get(lease.action_id)
        if taken_at is None or taken_at > lease.until + timedelta(seconds=REDRIVE_MARGIN_S):
            late.append(
                (lease.action_id, lease.until.isoformat(), taken_at.isoformat() if taken_at else None)
            )
    if late:
        discarded = worker_b.tail(10_000_000).count("Discarding revoked task: dispatcher.send_due_actions")
        raise AssertionError(
            f"leases of host A not re-driven within lease + {REDRIVE_MARGIN_S:g} s (action, lease until, "
            f"taken over at): {late}; worker B discarded {discarded} expired dispatcher ticks meanwhile"
        )


def _redrive_delays(leases: list[Lease], seen: dict[int, datetime]) -> str:
    delays = [
        (seen[lease.action_id] - lease.until).total_seconds() for lease in leases if lease.action_id in seen
    ]
    return f"{min(delays):+.1f}..{max(delays):+.1f}s after lease expiry" if delays else "never"


def _wait_settled(engine: Engine, deployment: Deployment) -> None:
    """Until every action in the ledger is terminal."""
    terminal = [state.value for state in TERMINAL_ACTION_STATES]

    def open_actions() -> int:
        with engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(Action).where(Action.state.not_in(terminal))
                ).scalar_one()
            )

    try:
        wait_until(lambda: open_actions() == 0, timeout_s=SETTLE_TIMEOUT_S, interval_s=0.5)
    except AssertionError:
        with engine.connect() as conn:
            stuck = (
                conn.execute(select(Action).where(Action.state.not_in(terminal)).limit(10)).mappings().all()
            )
            lines = conn.execute(
                select(TimelineEntry.action_id, TimelineEntry.at, TimelineEntry.kind, TimelineEntry.message)
                .where(TimelineEntry.action_id.in_([row["id"] for row in stuck]))
                .order_by(TimelineEntry.id)
            ).all()  # fmt: skip
        rows = "\n".join(
            f"  action {a['id']} {a['kind']} {a['state']} attempts {a['attempts']} due {a['due_at']} "
            f"enqueued {a['enqueued_at']} lease until {a['lease_until']} last error {a['last_error']!r}"
            for a in stuck
        )
        timeline = "\n".join(f"  {line.action_id} {line.at} {line.kind}: {line.message}" for line in lines)
        raise AssertionError(
            f"{open_actions()} actions still not terminal {SETTLE_TIMEOUT_S:g}s later "
            f"(now {datetime.now(UTC)}):\n"
            f"{rows}\n{timeline}\n{deployment.logs_tail()}"
        ) from None
