"""The fault suite's harness: a real deployment on loopback, with services of its own to break.

What a case gets (``FaultStack``):

- the Procfile's processes, started from its lines as a platform would: ``web`` (gunicorn, two
  workers), ``worker`` (the default queue: the bulk site's alarms are burglaries, so this is the pool
  the worker-kill case kills), ``urgent`` (life safety and the dispatcher's ticks), ``bulk`` (the
  troubles, which yield to life safety) and ``beat``, each in its own session (process group) so it
  can be killed whole; like the platform, a supervisor thread starts again any of them that exits
  (``restarts``, ``crashes()``);
- the sandbox as its own process (``alarm-bridge sandbox``), with fault injection over HTTP;
- a PRIVATE ``redis-server`` on a free port, without persistence (``PrivateRedis``), that a case may
  kill and restart, and for the PostgreSQL case a PRIVATE PostgreSQL cluster (``PrivatePostgres``,
  initdb in a temporary directory owned by the ``postgres`` user); the shared Redis and PostgreSQL
  servers are never touched (other cases use a database of their own on the shared server, copied
  from the migrated template);
- helpers to post many alarms at once (a thread pool, one HTTP session per thread), to read the
  ledger, and to wait (bounded) until every action has reached a terminal state.

Everything is stopped in ``close()`` (process groups killed), which the fixtures call in ``finally``.
"""

from __future__ import annotations

import http.client
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests
from sqlalchemy import Engine, func, select

from app.ledger.models import TERMINAL_ACTION_STATES, Action
from app.ledger.session import make_engine
from tests.polling import wait_until
from tests.processes import (
    BIN,
    SERVICE_VARIABLES,
    Proc,
    answers,
    celery_ready,
    deployment_env,
    free_port,
    port_open,
    procfile_argv,
    start,
    stop_all,
    unique_prefix,
)
from tests.sites_fixture import TRACKTIK_FIRE, TRACKTIK_INTRUSION, new_york, site_toml

PG_BIN = Path("/usr/lib/postgresql/15/bin")
PANEL_TOKEN = "fault-suite-panel-token-5e0c1d"
OPERATOR_KEY = "fault-suite-operator-key-77ab20"
# Ten accounts for the bulk site: intake serialises writers per (source, account), as it must.
BULK_ACCOUNTS = tuple(f"fs-{n}" for n in range(10))

FAULT_SITES = (
    """
[sources.panels]
kind = "panel"
token_env = "FAULT_PANELS_TOKEN"

[plans.guard]
default = ["tracktik.create_alarm", "cad.upload_incident"]
# Troubles take no default steps (a low battery must not send a guard); the soak's troubles do.
trouble = ["tracktik.create_alarm", "cad.upload_incident"]

[plans.phone]
default = ["tracktik.create_alarm", "callonalarm.trigger"]

[plans.life]
fire = ["rapidsos.create_alert", "tracktik.create_alarm", "cad.upload_incident"]
default = ["tracktik.create_alarm"]

[plans.delayed]
default = [
    "tracktik.create_alarm",
    { do = "cad.upload_incident", after = "6s" },
    { do = "callonalarm.trigger", after = "6s" },
]
"""
    # Most cases: every alarm creates a TrackTik alarm (adopted by its ref note after an unknown
    # outcome) and uploads a CAD incident (deduplicated upstream by sysId).
    + site_toml(
        "bulk",
        name="Fault suite warehouse",
        sources=["panels"],
        accounts=list(BULK_ACCOUNTS),
        plan="guard",
        tracktik=TRACKTIK_FIRE,
        location=new_york("Acme warehouse"),
    )
    # CallOnAlarm account 1003 (sandbox default) answers "ignored": one request, no polling afterwards.
    + site_toml(
        "phone",
        name="Fault suite phone tree",
        sources=["panels"],
        accounts=["fs-phone"],
        plan="phone",
        tracktik=TRACKTIK_INTRUSION,
        callonalarm={"account_number": "1003"},
        location=new_york("Acme phones", coordinates=False),
    )
    + site_toml(
        "life",
        name="Fault suite life safety",
        sources=["panels"],
        accounts=["fs-life"],
        plan="life",
        tracktik=TRACKTIK_FIRE,
        rapidsos={"callflow": "AcmeMonitoringAlarmFlow"},
        location=new_york("Acme NYC"),
    )
    + site_toml(
        "delayed",
        name="Fault suite delayed steps",
        sources=["panels"],
        accounts=["fs-delay"],
        plan="delayed",
        tracktik=TRACKTIK_INTRUSION,
        callonalarm={"account_number": "1003"},
        location=new_york("Acme delayed"),
    )
)

# Short leases and time limits so that a killed worker's steps are re-driven within seconds
# (Settings: ACTION_LEASE_S > TASK_TIME_LIMIT_S > TASK_SOFT_TIME_LIMIT_S), and a read timeout well
# inside the soft limit, so an upstream that holds its answer is an unknown outcome, not a time limit.
FAST_RECOVERY = {
    "ACTION_LEASE_S": "8",
    "TASK_TIME_LIMIT_S": "5",
    "TASK_SOFT_TIME_LIMIT_S": "4",
    "HTTP_CONNECT_TIMEOUT_S": "1",
    "HTTP_READ_TIMEOUT_S": "2",
    "TRACKTIK_CREATE_READ_TIMEOUT_S": "2",
    "DISPATCH_INTERVAL_S": "0.2",
    "ACTION_MAX_ATTEMPTS": "12",
}


def child_pids(pid: int) -> list[int]:
    """The direct children of a process (read from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with suppress(OSError):
            stat = (entry / "stat").read_text()
            # "pid (comm) state ppid ...": comm may hold spaces, so split after the last ")".
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return sorted(found)


class PrivateRedis:
    """A redis-server of the case's own on a free loopback port, without persistence."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        workdir.mkdir(parents=True, exist_ok=True)
        binary = shutil.which("redis-server") or "redis-server"
        argv = [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", str(workdir), "--loglevel", "warning"]  # fmt: skip
        self.proc = Proc("redis", argv, dict(os.environ), workdir / "redis.log")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc.start()
        wait_until(lambda: port_open(self.port) or not self.proc.alive(), timeout_s=10, interval_s=0.05)
        assert self.proc.alive(), self.proc.tail()

    def crash(self) -> None:
        """SIGKILL: every queued message, lock and cached token vanishes with it."""
        self.proc.kill()

    def restart(self, down_s: float) -> None:
        """Crash, stay down ``down_s``, come back empty on the same port."""
        self.crash()
        time.sleep(down_s)  # the outage itself, not a wait for something
        self.start()

    def close(self) -> None:
        self.proc.stop(timeout_s=5)


class PrivatePostgres:
    """A PostgreSQL 15 cluster of the case's own (initdb as ``postgres`` in a temporary directory)."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="ab-faults-pg-"))
        if os.geteuid() == 0:
            user = pwd.getpwnam("postgres")
            os.chown(self.root, user.pw_uid, user.pw_gid)
        self.data = self.root / "data"
        self.logfile = self.root / "postgres.log"
        self._as_postgres(
            str(PG_BIN / "initdb"), "-D", str(self.data), "-A", "trust", "-U", "postgres",
            "--no-sync", "-E", "UTF8", "--locale", "C.UTF-8",
        )  # fmt: skip

    def _as_postgres(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[bytes]:
        # initdb and pg_ctl refuse to run as root: drop to the postgres user.
        prefix = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        return subprocess.run(
            [*prefix, *argv],
            cwd=self.root,
            capture_output=True,
            check=check,
            timeout=120,
        )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.root}"
        self._as_postgres(
            str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-l", str(self.logfile), "-o", options, "-w",
            "-t", "60", "start",
        )  # fmt: skip

    def stop(self, mode: str = "fast") -> None:
        """``fast``: abort open transactions and disconnect every session, as a restart does."""
        self._as_postgres(str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w", "-t", "60", "stop")

    def create_database(self, name: str) -> str:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            result = self._as_postgres(
                str(PG_BIN / "pg_ctl"), "-D", str(self.data), "-m", "immediate", "-w", "stop", check=False
            )
            if result.returncode != 0 and (self.data / "postmaster.pid").exists():
                with suppress(OSError, ValueError):
                    os.kill(int((self.data / "postmaster.pid").read_text().split()[0]), signal.SIGKILL)
        shutil.rmtree(self.root, ignore_errors=True)


# -- driving it ----------------------------------------------------------------------------------------


@dataclass
class Posted:
    """One alarm sent to intake and what intake answered (None: no answer at all)."""

    body: dict[str, Any]
    status: int | None = None
    alarm_id: int | None = None
    error: str | None = None
    answers: list[int | None] = field(default_factory=list)  # every attempt's status, in order

    @property
    def event_id(self) -> str:
        return str(self.body["event_id"])

    @property
    def accepted(self) -> bool:
        return self.status in (200, 202)


def alarm_body(account: str, zone: str, code: str = "BA") -> dict[str, Any]:
    """A panel event that opens an alarm of its own (each zone is a different alarm)."""
    return {
        "account": account,
        "code": code,
        "zone": zone,
        "event_id": uuid.uuid4().hex,
        "occurred_at": datetime.now(UTC).isoformat(),
    }


def bulk_bodies(count: int, tag: str, code: str = "BA") -> list[dict[str, Any]]:
    """``count`` alarms on the bulk site, spread over its accounts, one zone each."""
    return [alarm_body(BULK_ACCOUNTS[n % len(BULK_ACCOUNTS)], f"{tag}-{n}", code) for n in range(count)]


def _closed_before_answering(exc: requests.RequestException) -> bool:
    """The server closed a reused connection before any answer (a keep-alive race), not a timeout."""
    if not isinstance(exc, requests.ConnectionError):
        return False
    reason: object = exc.args[0] if exc.args else None
    for _ in range(4):  # requests' ConnectionError > urllib3's ProtocolError > the socket's error
        if isinstance(reason, http.client.RemoteDisconnected | ConnectionResetError):
            return True
        if not isinstance(reason, BaseException) or not reason.args:
            return False
        reason = reason.args[-1]
    return False


class FaultStack:
    """The deployment of one case: sandbox, private Redis, the Procfile's processes, on one ledger."""

    def __init__(
        self,
        tmp_path: Path,
        database_url: str,
        *,
        env: dict[str, str] | None = None,
        processes: Sequence[str] = ("web", "worker", "urgent", "bulk", "beat"),
    ) -> None:
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.tmp_path = tmp_path
        self.database_url = database_url
        self.procs: dict[str, Proc] = {}
        self.redis = PrivateRedis(tmp_path / "redis")
        self.http = requests.Session()
        self.engine: Engine = make_engine(database_url, pool_size=2, max_overflow=2)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()
        self.sandbox_port = free_port()
        self.web_port = free_port()
        sites = tmp_path / "fault-sites.toml"
        sites.write_text(FAULT_SITES)
        self.env = deployment_env(
            database_url=database_url,
            redis_url=self.redis.url,
            key_prefix=unique_prefix("abfault"),
            sites=sites,
            var_dir=tmp_path / "var",
            prometheus=tmp_path / "prometheus",
            sandbox=self.sandbox,
            drop=(*SERVICE_VARIABLES, "BROKER_", "ACTION_", "TASK_"),
            OPERATOR_API_KEYS=OPERATOR_KEY,
            SECRET_KEY="fault-suite-session-secret-signing-key",
            FAULT_PANELS_TOKEN=PANEL_TOKEN,
            HOST="127.0.0.1",
            WEB_CONCURRENCY="2",
            LOG_LEVEL="INFO",
            LOG_FORMAT="json",
            SANDBOX_PORT=str(self.sandbox_port),
        )
        self.env.update({**FAST_RECOVERY, **(env or {})})
        self.wanted = tuple(processes)
        # What the platform does for a Procfile: a process that exits is started again.
        self.restarts: list[tuple[str, int | None, float]] = []  # (name, exit status, seconds in)
        self._began = time.monotonic()
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._supervisor = threading.Thread(target=self._supervise, name="platform", daemon=True)

    # -- lifecycle ---------------------------------------------------------------------------------

    def start(self) -> FaultStack:
        self.redis.start()
        self.procs["sandbox"] = start(
            "sandbox",
            [str(BIN / "alarm-bridge"), "sandbox", "--port", str(self.sandbox_port)],
            self.env,
            self.tmp_path / "sandbox.log",
        )
        for name in self.wanted:
            self.start_process(name)
        self._supervisor.start()
        try:
            wait_until(lambda: port_open(self.sandbox_port), timeout_s=30, interval_s=0.1)
            wait_until(self.ready, timeout_s=60, interval_s=0.2)
            if "worker" in self.procs:
                self.wait_worker_ready("worker")
        except AssertionError:
            raise AssertionError("the deployment did not start:\n" + self.logs_tail()) from None
        return self

    def start_process(self, name: str, process_type: str | None = None, extra: Sequence[str] = ()) -> Proc:
        """Start one Procfile process type (as ``name``; a second worker needs its own ``--hostname``)."""
        port = self.web_port if name == "web" else free_port()
        with self._lock:
            self.procs[name] = start(
                name,
                [*procfile_argv(process_type or name, port), *extra],
                {**self.env, "PORT": str(port)},
                self.tmp_path / f"{name}.log",
            )
            return self.procs[name]

    def _supervise(self) -> None:
        """Restart any Procfile process that exits, as Heroku, systemd or Kubernetes would."""
        while not self._stopping.wait(0.2):
            with self._lock:
                for name, proc in self.procs.items():
                    if name == "sandbox" or proc.alive() or self._stopping.is_set():
                        continue
                    status = proc.popen.returncode if proc.popen is not None else None
                    proc.kill()  # whatever is left of its group (orphaned pool children)
                    self.restarts.append((name, status, round(time.monotonic() - self._began, 1)))
                    proc.start()

    def kill_group(self, name: str) -> None:
        """SIGKILL a process and everything it forked; the platform (``_supervise``) restarts it."""
        with self._lock:
            self.procs[name].kill()

    def crashes(self, name: str | None = None) -> list[tuple[str, int | None, float]]:
        """Restarts the platform made, except those after our own SIGKILLs (-9)."""
        return [r for r in self.restarts if r[1] != -signal.SIGKILL and name in (None, r[0])]

    def ready(self) -> bool:
        return answers(self.http, f"{self.web}/readyz")

    def wait_worker_ready(self, name: str, timeout_s: float = 60) -> None:
        """Until the worker logs that it is consuming (its pool is up). A process that died meanwhile
        is restarted by the platform: this waits for that one."""
        wait_until(lambda: celery_ready(self.procs[name]), timeout_s=timeout_s, interval_s=0.1)

    def close(self) -> None:
        """Stop everything this stack started, whatever state it is in."""
        self._stopping.set()
        if self._supervisor.is_alive():
            self._supervisor.join(timeout=10)
        for session in [self.http, *self._sessions]:
            session.close()
        stop_all(self.procs.values(), grace_s=5)  # all at once: a graceful stop each, one deadline
        with suppress(Exception):
            self.redis.close()
        self.engine.dispose()

    def logs_tail(self) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(2000)}" for p in self.procs.values())

    @property
    def web(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def sandbox(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    # -- the sandbox ----------------------------------------------------------------------------------

    def fault(self, vendor: str, **spec: Any) -> dict[str, Any]:
        response = self.http.post(f"{self.sandbox}/{vendor}/_sandbox/faults", json=spec, timeout=10)
        assert response.status_code == 201, response.text
        return dict(response.json())

    def clear_faults(self, vendor: str) -> None:
        assert self.http.delete(f"{self.sandbox}/{vendor}/_sandbox/faults", timeout=10).status_code == 204

    def sandbox_get(self, url_path: str, **params: str) -> Any:
        response = self.http.get(f"{self.sandbox}{url_path}", params=params, timeout=30)
        assert response.status_code == 200, response.text
        return response.json()

    # -- intake -----------------------------------------------------------------------------------------

    def _session(self) -> requests.Session:
        session: requests.Session | None = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def send(self, posted: Posted, timeout_s: float = 15) -> Posted:
        """POST one event; records the answer (a connection error or timeout is recorded as None).

        A kept-alive connection the web process closed for idleness just as the request went out
        (RFC 9112 9.3.1: the client retries on a new connection) is sent again at once, as every
        sender's HTTP stack does: the same event id, so intake records it once. The first try's
        failure stays in ``answers``. The senders idle between chunks longer than the server's
        keep-alive, so this race is part of the test's own traffic, not a fault under test.
        """
        for attempt in (1, 2):
            try:
                response = self._session().post(
                    f"{self.web}/v1/events",
                    json=posted.body,
                    headers={"Authorization": f"Bearer {PANEL_TOKEN}"},
                    timeout=timeout_s,
                )
                break
            except requests.RequestException as exc:
                posted.status, posted.error = None, f"{type(exc).__name__}: {exc}"
                posted.answers.append(None)
                if attempt == 1 and _closed_before_answering(exc):
                    continue
                return posted
        posted.status = response.status_code
        posted.answers.append(response.status_code)
        if posted.accepted:
            posted.alarm_id = int(response.json()["alarm_id"])
            posted.error = None
        else:
            posted.error = response.text[:300]
        return posted

    def post_all(
        self,
        bodies: Iterable[dict[str, Any]],
        threads: int = 8,
        *,
        chunk: int | None = None,
        backlog_limit: int | None = None,
        timeout_s: float = 240,
    ) -> list[Posted]:
        """Send every body concurrently; returns each one's answer (in the order given).

        With ``backlog_limit``, the senders go ``chunk`` events at a time and wait (bounded) while
        more steps than that are waiting in the ledger: a stack kept busy, never an overloaded one.
        Overload is its own subject: a backlog older than ACTION_LEASE_S makes the dispatcher
        re-send every waiting step as if its message were lost, again each ACTION_LEASE_S, so the
        queues grow faster than the workers empty them (see the fault suite's README section).
        """
        items = [Posted(body) for body in bodies]
        size = chunk or len(items) or 1
        deadline = time.monotonic() + timeout_s
        with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="poster") as pool:
            for start in range(0, len(items), size):
                if backlog_limit is not None:
                    wait_until(
                        lambda: self.unsettled() < backlog_limit,
                        timeout_s=max(1.0, deadline - time.monotonic()),
                        interval_s=0.1,
                    )
                list(pool.map(self.send, items[start : start + size]))
        return items

    def resend_until_accepted(self, items: Iterable[Posted], timeout_s: float = 60) -> None:
        """A sender's retry: repeat every event not yet answered 2xx (same event id) until it is."""
        pending = [p for p in items if not p.accepted]
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="resender") as pool:
                list(pool.map(self.send, pending))
            pending = [p for p in pending if not p.accepted]
            if pending:
                time.sleep(0.5)  # the Retry-After the 503 asked for, roughly
        assert not pending, [(p.event_id, p.answers, p.error) for p in pending[:5]]

    # -- the ledger ------------------------------------------------------------------------------------

    def unsettled(self) -> int:
        """How many actions are not in a terminal state yet."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count())
                    .select_from(Action)
                    .where(Action.state.not_in(TERMINAL_ACTION_STATES))
                ).scalar_one()
            )

    def running(self) -> int:
        """How many actions a worker holds right now."""
        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    select(func.count()).select_from(Action).where(Action.state == "running")
                ).scalar_one()
            )

    def action_count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(Action)).scalar_one())

    def wait_settled(self, expected_actions: int, timeout_s: float) -> float:
        """Until the ledger holds ``expected_actions`` actions, all terminal; returns the seconds waited."""
        started = time.monotonic()
        progress: list[tuple[int, int]] = []

        def settled() -> bool:
            total, open_ = self.action_count(), self.unsettled()
            progress.append((total, open_))
            return total >= expected_actions and open_ == 0

        try:
            wait_until(settled, timeout_s=timeout_s, interval_s=0.5)
        except AssertionError:
            raise AssertionError(
                f"the ledger did not settle within {timeout_s:g}s: (actions, not terminal) = "
                f"{progress[-1] if progress else None}\n{self.logs_tail()}"
            ) from None
        return time.monotonic() - started


@dataclass
class Chaos:
    """A background thread doing something at given moments (seconds from ``start()``)."""

    moments: Sequence[float]
    act: Callable[[int], None]
    done: list[tuple[float, str]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> Chaos:
        began = time.monotonic()

        def run() -> None:
            for index, moment in enumerate(self.moments):
                if self._stop.wait(max(0.0, began + moment - time.monotonic())):
                    return
                try:
                    self.act(index)
                    self.done.append((round(time.monotonic() - began, 2), f"#{index}"))
                except BaseException as exc:  # reported by join(); a chaos thread must not die silently
                    self.errors.append(exc)
                    return

        self._thread = threading.Thread(target=run, name="chaos", daemon=True)
        self._thread.start()
        return self

    def join(self, timeout_s: float) -> None:
        assert self._thread is not None
        self._thread.join(timeout=timeout_s)
        assert not self._thread.is_alive(), "the chaos thread did not finish in time"
        if self.errors:
            raise self.errors[0]

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)


@dataclass
class Timer:
    """Wall-clock phases of a case, for the summary."""

    started: float = field(default_factory=time.monotonic)
    marks: dict[str, float] = field(default_factory=dict)

    def mark(self, name: str) -> None:
        self.marks[name] = round(time.monotonic() - self.started, 1)


def iter_lines(path: Path) -> Iterator[str]:
    """A log file's lines (empty when it does not exist)."""
    if path.exists():
        yield from path.read_text(errors="replace").splitlines()
