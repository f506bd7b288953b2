"""The processes and services `make bench` runs: its own PostgreSQL database, a private Redis key
prefix, and the Procfile's processes (web, worker, urgent, beat) with the sandbox in a process of
its own.

Every phase gets a fresh database (a copy of a template migrated once with `alarm-bridge db
upgrade`) and a key prefix of its own on the shared Redis, so no phase sees another's rows or
messages; the shared Redis is never flushed, only this run's keys are deleted. Every process is
started in a session of its own and stopped by its id (SIGTERM to its process group, SIGKILL after a
grace period), also on Ctrl-C and on errors.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
import requests

import vendors

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
GUNICORN_CONF = "config/gunicorn.conf.py"
BENCH_SECRET_KEY = "bench-secret-key-signing-dashboard-sessions"  # noqa: S105 - the bench's own
SITES_FILE = REPO / ".ci" / "bench_sites.toml"
SEED_SQL = REPO / ".ci" / "bench_seed.sql"
# The seeded ledgers' shapes (.ci/bench_seed.sql says what each number counts).
YEAR = {
    "DAYS": 365,
    "ALARMS": 300_000,
    "OPEN": 204,
    "ATTACHED": 595_323,
    "ROUTINE": 404_677,
    "ACTIONS": 708_215,
}
MONTH = {"DAYS": 30, "ALARMS": 30_000, "OPEN": 20, "ATTACHED": 60_000, "ROUTINE": 15_000, "ACTIONS": 60_000}
# How .ci/bench_sandbox.py serves the simulators: "gunicorn" (connections kept alive, as vendors keep
# them) or "werkzeug" (a connection per call, as runs before 2026-12-06 measured).
SANDBOX_SERVERS = ("gunicorn", "werkzeug")


def sandbox_server() -> str:
    """BENCH_SANDBOX_SERVER, checked: the report and the sandbox process read it alike."""
    server = os.environ.get("BENCH_SANDBOX_SERVER", SANDBOX_SERVERS[0])
    if server not in SANDBOX_SERVERS:
        raise SystemExit(f"BENCH_SANDBOX_SERVER must be one of {', '.join(SANDBOX_SERVERS)}, not {server!r}")
    return server


PANEL_TOKEN = "bench-panel-token-3f9c2d7a51e8"  # noqa: S105 - a loopback benchmark's own credential
OPERATOR_KEY = "bench-operator-key-8b1e44c0"
PG_HOST, PG_PORT = "127.0.0.1", int(os.environ.get("TEST_PG_PORT", "5432"))
PG_USER = os.environ.get("TEST_PG_USER", "postgres")
REDIS_URL = os.environ.get(
    "BENCH_REDIS_URL", f"redis://127.0.0.1:{os.environ.get('TEST_REDIS_PORT', '6379')}/0"
)
DB_NAME = "alarm_bridge_bench"
TEMPLATE_DB = "alarm_bridge_bench_template"
CLK_TCK = os.sysconf("SC_CLK_TCK")
STOP_GRACE_S = 20.0
HTTP = requests.Session()  # the bench's own calls to the web process and the sandbox
# Variables the bench decides; inherited values would point the processes elsewhere.
OWN_VARIABLES = (
    "DATABASE_URL", "REDIS_URL", "BROKER_KEY_PREFIX", "PROMETHEUS_MULTIPROC_DIR", "SITES_FILE", "PORT",
    "HOST", "VAR_DIR", "OPERATOR_API_KEYS", "WORKER_METRICS_PORT", "LOG_FORMAT",
)  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return {name.strip(): cmd.strip() for name, _, cmd in (ln.partition(":") for ln in lines if ln.strip())}


def wait_until(probe: Any, timeout_s: float, interval_s: float = 0.2, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g}s waiting for {what or probe}")
        time.sleep(interval_s)


# -- CPU accounting -----------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def session_cpu_s(session_id: int) -> float:
    """CPU seconds (user + system) of every live process of a session (a process we started)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        fields = _stat_fields(int(entry))
        if fields and int(fields[3]) == session_id:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def pids_cpu_s(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        fields = _stat_fields(pid)
        if fields:
            found[pid] = (int(fields[11]) + int(fields[12])) / CLK_TCK
    return found


def reaped_children_cpu_s(pid: int) -> float:
    """CPU seconds of ``pid``'s children that have exited (cutime + cstime): for the postmaster, the
    backends a connection pool opened and closed within a window, which no pid list can catch."""
    fields = _stat_fields(pid)
    return (int(fields[13]) + int(fields[14])) / CLK_TCK if fields else 0.0


def parent_pid(pid: int) -> int | None:
    fields = _stat_fields(pid)
    return int(fields[1]) if fields else None


def machine_cpu() -> tuple[float, float]:
    """(busy, total) CPU seconds of the whole machine since boot, all cores."""
    values = [int(v) for v in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = values[3] + values[4]
    return (sum(values) - idle) / CLK_TCK, sum(values) / CLK_TCK


# -- services ----------------------------------------------------------------------------------------


class Services:
    """The shared PostgreSQL and Redis: this run's databases and key prefixes, and nothing else."""

    def __init__(self, run_id: str) -> None:
        self.run_id = run_id
        self.prefix_root = f"abbench:{run_id}:"
        self.redis = redis.Redis.from_url(REDIS_URL)
        self.database_url = f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{DB_NAME}"
        # "seeded" (the default): every phase starts from a month of history with planner statistics;
        # "empty": a new, never-analysed ledger, as runs before 2026-12-06 measured.
        self.ledger = os.environ.get("BENCH_LEDGER", "seeded")
        if self.ledger not in ("seeded", "empty"):
            raise SystemExit(f"BENCH_LEDGER must be seeded or empty, not {self.ledger!r}")
        # The highest seeded id per table: the phases count only the rows their own load made.
        self.seeded = {"events": 0, "alarms": 0, "actions": 0}
        self.sandbox_server = sandbox_server()

    def admin(self) -> psycopg.Connection[Any]:
        return psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname="postgres", autocommit=True)

    def _drop(self, conn: psycopg.Connection[Any], name: str) -> None:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def prepare_template(self, log: Path) -> None:
        """Create and migrate the template every phase's database is copied from."""
        with self.admin() as conn:
            self._drop(conn, DB_NAME)
            self._drop(conn, TEMPLATE_DB)
            conn.execute(f'CREATE DATABASE "{TEMPLATE_DB}"')
        env = {
            **_base_env(),
            "DATABASE_URL": f"postgresql://{PG_USER}@{PG_HOST}:{PG_PORT}/{TEMPLATE_DB}",
        }
        with log.open("ab") as out:
            subprocess.run(
                [str(BIN / "alarm-bridge"), "db", "upgrade"],
                cwd=REPO,
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
                check=True,
                timeout=120,
            )
        if self.ledger == "seeded":
            self.seed_template()

    def seed_template(self) -> None:
        """A month of history and the planner's statistics, as a production ledger has them.

        On a never-analysed database PostgreSQL plans the prepared statements for empty tables and
        keeps those plans while the load grows them (.ci/bench_seed.sql says more).
        """
        sql = render_seed(MONTH)
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=TEMPLATE_DB) as conn:
            conn.execute(sql)  # type: ignore[arg-type]  # one script, several statements
        with psycopg.connect(
            host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=TEMPLATE_DB, autocommit=True
        ) as conn:
            conn.execute("VACUUM ANALYZE")
            row = conn.execute(
                "SELECT (SELECT coalesce(max(id), 0) FROM events), "
                "(SELECT coalesce(max(id), 0) FROM alarms), (SELECT coalesce(max(id), 0) FROM actions)"
            ).fetchone()
        assert row is not None
        self.seeded = {"events": int(row[0]), "alarms": int(row[1]), "actions": int(row[2])}

    def fresh_database(self) -> str:
        with self.admin() as conn:
            self._drop(conn, DB_NAME)
            conn.execute(f'CREATE DATABASE "{DB_NAME}" TEMPLATE "{TEMPLATE_DB}"')
        return self.database_url

    def drop_databases(self) -> None:
        with self.admin() as conn:
            self._drop(conn, DB_NAME)
            self._drop(conn, TEMPLATE_DB)

    def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(host=PG_HOST, port=PG_PORT, user=PG_USER, dbname=DB_NAME) as conn:
            return list(conn.execute(sql, params).fetchall())

    def backend_pids(self) -> list[int]:
        with self.admin() as conn:
            rows = conn.execute("SELECT pid FROM pg_stat_activity WHERE datname = %s", (DB_NAME,)).fetchall()
        return [int(r[0]) for r in rows]

    def server_facts(self) -> dict[str, Any]:
        with self.admin() as conn:
            facts = {
                name: conn.execute(f"SHOW {name}").fetchone()[0]  # type: ignore[index]
                for name in (
                    "server_version",
                    "fsync",
                    "synchronous_commit",
                    "wal_sync_method",
                    "full_page_writes",
                    "max_connections",
                    "shared_buffers",
                )
            }
        info = self.redis.info("server")
        persistence = self.redis.info("persistence")
        facts_redis = {
            "redis_version": info.get("redis_version"),
            "redis_pid": info.get("process_id"),
            "redis_aof_enabled": persistence.get("aof_enabled"),
        }
        return {"postgresql": facts, "redis": facts_redis}

    def queue_depth(self, prefix: str, queue: str) -> int:
        return int(self.redis.llen(f"{prefix}{queue}"))

    def delete_keys(self, prefix: str) -> int:
        deleted = 0
        batch = []
        for key in self.redis.scan_iter(match=f"{prefix}*", count=1000):
            batch.append(key)
            if len(batch) >= 1000:
                deleted += int(self.redis.delete(*batch))
                batch = []
        if batch:
            deleted += int(self.redis.delete(*batch))
        return deleted


def render_seed(shape: dict[str, int]) -> str:
    """.ci/bench_seed.sql for one shape, without psql's own commands (it runs through psycopg)."""
    sql = "\n".join(ln for ln in SEED_SQL.read_text().splitlines() if not ln.startswith("\\"))
    for token, value in shape.items():
        sql = sql.replace("{" + token + "}", str(value))
    return sql


def _base_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in OWN_VARIABLES}
    env.setdefault("LOG_LEVEL", "INFO")
    env["LOG_FORMAT"] = "json"
    env["PYTHONUNBUFFERED"] = "1"
    return env


# -- processes ---------------------------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def cpu_s(self) -> float:
        return session_cpu_s(self.pid)

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log.read_text(errors="replace")[-chars:]
        except OSError:
            return ""


def start(name: str, argv: list[str], env: dict[str, str], log: Path) -> Proc:
    with log.open("ab") as out:
        popen = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    return Proc(name, popen, log)


@contextlib.contextmanager
def paused(proc: Proc) -> Iterator[None]:
    """Hold a process group still (SIGSTOP) for the block, and let it go on (SIGCONT) after it."""
    os.killpg(proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.killpg(proc.pid, signal.SIGCONT)


def stop_all(procs: list[Proc]) -> None:
    """SIGTERM each process group we started, then SIGKILL what is left after the grace period."""
    for proc in procs:
        if proc.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_GRACE_S
    for proc in procs:
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
    for proc in procs:
        # The leader may be gone while its children (a pool, gunicorn workers) are not.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.popen.wait(timeout=5)


@dataclass
class Stack:
    """One phase's deployment: which processes, on which database and key prefix."""

    services: Services
    phase_dir: Path
    prefix: str
    processes: tuple[str, ...]  # of "sandbox", "web", "receiver", "worker", "urgent", "bulk", "beat"
    web_app: str | None = None  # another WSGI app for the web process (the bare ceiling)
    extra_env: dict[str, str] = field(default_factory=dict)  # settings of this phase only
    procs: dict[str, Proc] = field(default_factory=dict)
    web_port: int = 0
    sandbox_port: int = 0
    receiver_port: int = 0
    env: dict[str, str] = field(default_factory=dict)

    @property
    def web_url(self) -> str:
        return f"http://127.0.0.1:{self.web_port}"

    @property
    def sandbox_url(self) -> str:
        return f"http://127.0.0.1:{self.sandbox_port}"

    def start(self) -> None:
        self.phase_dir.mkdir(parents=True, exist_ok=True)
        (self.phase_dir / "prometheus").mkdir(exist_ok=True)
        self.web_port, self.sandbox_port = free_port(), free_port()
        database_url = self.services.fresh_database() if self.web_app is None else ""
        sandbox = self.sandbox_url
        self.env = {
            **_base_env(),
            "DATABASE_URL": database_url or "sqlite:///unused-by-the-bare-app.sqlite3",
            "REDIS_URL": REDIS_URL,
            "BROKER_KEY_PREFIX": self.prefix,
            "SITES_FILE": str(SITES_FILE),
            "BENCH_PANELS_TOKEN": PANEL_TOKEN,
            "OPERATOR_API_KEYS": OPERATOR_KEY,
            "SECRET_KEY": BENCH_SECRET_KEY,
            "HOST": "127.0.0.1",
            "VAR_DIR": str(self.phase_dir / "var"),
            "PROMETHEUS_MULTIPROC_DIR": str(self.phase_dir / "prometheus"),
            **vendors.sandbox_base_urls(sandbox),
            **self.extra_env,
        }
        lines = procfile()
        if "sandbox" in self.processes:
            argv = [sys.executable, str(REPO / ".ci" / "bench_sandbox.py"), "--port", str(self.sandbox_port)]
            self.procs["sandbox"] = start("sandbox", argv, self.env, self.phase_dir / "sandbox.log")
            wait_until(lambda: _answers(f"{sandbox}/"), 30, what="the sandbox")
        if "web" in self.processes:
            argv = shlex.split(lines["web"].replace("$PORT", str(self.web_port)))
            argv[0] = str(BIN / argv[0])
            if self.web_app is not None:
                argv += ["--pythonpath", str(REPO / ".ci"), self.web_app]
            env = {**self.env, "PORT": str(self.web_port)}
            self.procs["web"] = start("web", argv, env, self.phase_dir / "web.log")
            path = "/v1/events" if self.web_app else "/readyz"
            wait_until(lambda: self._web_ready(path), 60, what="the web process")
        if "receiver" in self.processes:
            argv = shlex.split(lines["receiver"])
            argv[0] = str(BIN / argv[0])
            self.receiver_port = free_port()
            env = {**self.env, "SIA_RECEIVER_HOST": "127.0.0.1", "SIA_RECEIVER_PORT": str(self.receiver_port)}
            self.procs["receiver"] = start("receiver", argv, env, self.phase_dir / "receiver.log")
            wait_until(lambda: _listens(self.receiver_port, self.procs["receiver"]), 60, what="the receiver")
        for name in ("worker", "urgent", "bulk", "beat"):
            if name in self.processes:
                argv = shlex.split(lines[name])
                argv[0] = str(BIN / argv[0])
                env = {**self.env, "PORT": str(free_port())}
                self.procs[name] = start(name, argv, env, self.phase_dir / f"{name}.log")
        for name in ("worker", "urgent", "bulk"):
            if name in self.procs:
                proc = self.procs[name]
                wait_until(lambda p=proc: _celery_ready(p), 60, what=f"the {name} process")

    def _web_ready(self, path: str) -> bool:
        proc = self.procs["web"]
        if proc.popen.poll() is not None:
            raise RuntimeError(f"the web process exited:\n{proc.log_tail()}")
        try:
            if path == "/readyz":
                return HTTP.get(f"{self.web_url}{path}", timeout=2).status_code == 200
            return HTTP.post(f"{self.web_url}{path}", data=b"{}", timeout=2).status_code == 202
        except requests.RequestException:
            return False

    def stop(self) -> None:
        stop_all(list(self.procs.values()))

    def cpu(self) -> dict[str, float]:
        return {name: proc.cpu_s() for name, proc in self.procs.items()}

    def metrics(self) -> str:
        # After an overload the web may still be answering the requests queued in its listen backlog.
        return HTTP.get(f"{self.web_url}/metrics", timeout=120).text

    def journal(self, simulator: str, path: str, method: str = "POST") -> list[dict[str, Any]]:
        response = HTTP.get(
            f"{self.sandbox_url}/{simulator}/_sandbox/journal",
            params={"path": path, "method": method},
            timeout=120,
        )
        response.raise_for_status()
        return list(response.json())


def _listens(port: int, proc: Proc) -> bool:
    if proc.popen.poll() is not None:
        raise RuntimeError(f"the {proc.name} process exited:\n{proc.log_tail()}")
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except OSError:
        return False
    return True


def _answers(url: str) -> bool:
    try:
        return HTTP.get(url, timeout=2).status_code < 500
    except requests.RequestException:
        return False


def _celery_ready(proc: Proc) -> bool:
    if proc.popen.poll() is not None:
        raise RuntimeError(f"the {proc.name} process exited:\n{proc.log_tail()}")
    return " ready." in proc.log_tail(20000)


@contextlib.contextmanager
def running(stack: Stack) -> Iterator[Stack]:
    try:
        stack.start()
        yield stack
    finally:
        stack.stop()
        stack.services.delete_keys(stack.prefix)
