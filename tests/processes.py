"""Real processes for the tests that run the deployment as a platform would: the Procfile's lines
(gunicorn ``web``, Celery ``worker``/``urgent``/``beat``, ``flower``), the sandbox, a Redis server,
``alarm-bridge dev``.

Each process runs in a session (process group) of its own with its output appended to a log file,
so that it can be stopped whole: ``stop_all`` sends SIGTERM to every group at once, waits out one
grace period, then SIGKILLs whatever is left of each group (orphaned pool children included).

- ``free_port()``, ``port_open(port)``: loopback ports;
- ``procfile()``, ``procfile_argv(type, port)``: the Procfile's lines, as text and as argv;
- ``deployment_env(...)``, ``inherited_env()``, ``unique_prefix(tag)``: the
  environment of a deployment's processes (its own ledger, broker key prefix, sites file, sandbox);
- ``Proc`` (``start(name, argv, env, log)``), ``stop_all(procs, grace_s)``;
- ``answers(http, url)``, ``wait_answers(http, url)``, ``celery_ready(proc)``: readiness.
"""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import requests

import vendors
from tests.polling import wait_until

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent  # the virtualenv's scripts: gunicorn, celery, alarm-bridge
# Variables that name the services or state of another deployment (a developer's shell, CI's).
SERVICE_VARIABLES = ("DATABASE_", "REDIS_", "PROMETHEUS")


# -- ports and the Procfile ---------------------------------------------------------------------------


def free_port() -> int:
    """A TCP port nothing listens on now (loopback)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on the port."""
    with suppress(OSError), socket.create_connection((host, port), timeout=0.5):
        return True
    return False


def procfile() -> dict[str, str]:
    """The Procfile's command lines by process type."""
    lines = (REPO / "Procfile").read_text().splitlines()
    return {name.strip(): cmd.strip() for name, _, cmd in (ln.partition(":") for ln in lines if ln.strip())}


def procfile_argv(process_type: str, port: int | str | None = None) -> list[str]:
    """A Procfile line as argv, ``$PORT`` set to ``port``, its command from this virtualenv."""
    command = procfile()[process_type]
    if port is not None:
        command = command.replace("$PORT", str(port))
    argv = shlex.split(command)
    return [str(BIN / argv[0]), *argv[1:]]


# -- the environment ----------------------------------------------------------------------------------


def unique_prefix(tag: str) -> str:
    """A Redis key prefix no other test (or run) shares, e.g. ``abobs:1f3c…:``."""
    return f"{tag}:{uuid.uuid4().hex[:10]}:"


def inherited_env(drop: Sequence[str] = SERVICE_VARIABLES) -> dict[str, str]:
    """This process's environment less the variables starting with any of ``drop``."""
    return {k: v for k, v in os.environ.items() if not k.startswith(tuple(drop))}


def deployment_env(
    *,
    database_url: str,
    redis_url: str,
    key_prefix: str | None = None,
    sites: Path | None = None,
    var_dir: Path | None = None,
    prometheus: Path | None = None,
    sandbox: str | None = None,
    drop: Sequence[str] = SERVICE_VARIABLES,
    **values: str,
) -> dict[str, str]:
    """The environment of a deployment's processes: this one's own less ``drop``, then its ledger,
    its broker (under ``key_prefix``), its sites file, its var directory, the metrics directory its
    processes share (``prometheus``, made here), the vendors of the sandbox at ``sandbox``, and
    ``values`` last. Whatever is None is left as inherited."""
    env = inherited_env(drop)
    env.update(DATABASE_URL=database_url, REDIS_URL=redis_url)
    env.setdefault("SECRET_KEY", "test-deployment-secret-key-signing-sessions")  # the web process needs one
    if key_prefix is not None:
        env["BROKER_KEY_PREFIX"] = key_prefix
    if sites is not None:
        env["SITES_FILE"] = str(sites)
    if var_dir is not None:
        env["VAR_DIR"] = str(var_dir)
    if prometheus is not None:
        prometheus.mkdir(parents=True, exist_ok=True)
        env["PROMETHEUS_MULTIPROC_DIR"] = str(prometheus)
    if sandbox is not None:
        env.update(vendors.sandbox_base_urls(sandbox))
    env.update(values)
    return env


# -- processes -------------------------------------------------------------------------------------------


@dataclass
class Proc:
    """One process (and whatever it forks) in a session of its own, so it is signalled as a group.

    ``start()`` may be called again after the process exited (a platform restarting it): the log is
    appended to, each start under a banner line, and ``current_output()`` reads the latest one.
    """

    name: str
    argv: list[str]
    env: dict[str, str]
    log: Path
    cwd: Path = REPO
    popen: subprocess.Popen[bytes] | None = None
    starts: int = 0
    log_offset: int = 0  # where the current start's output begins in the log

    def start(self) -> Proc:
        self.starts += 1
        self.log_offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as out:
            out.write(f"\n===== start {self.starts} at {datetime.now(UTC).isoformat()} =====\n".encode())
            out.flush()
            self.popen = subprocess.Popen(
                self.argv,
                cwd=self.cwd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    def wait(self, timeout_s: float) -> int | None:
        """The exit status, or None if the process is still running ``timeout_s`` later."""
        if self.popen is None:
            return None
        with suppress(subprocess.TimeoutExpired):
            return self.popen.wait(timeout=timeout_s)
        return None

    def signal_group(self, sig: signal.Signals) -> None:
        """Send ``sig`` to the whole process group (never raises: the group may be gone)."""
        if self.popen is not None:
            with suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, sig)

    def kill(self) -> None:
        """SIGKILL the whole group (a container dying), and reap the main process."""
        self.signal_group(signal.SIGKILL)
        self.wait(timeout_s=10)

    def stop(self, timeout_s: float = 15) -> None:
        """SIGTERM the group, then SIGKILL what is left after ``timeout_s``."""
        stop_all([self], grace_s=timeout_s)

    def current_output(self) -> str:
        """What the process wrote since it was last started."""
        with self.log.open("rb") as log:
            log.seek(self.log_offset)
            return log.read().decode(errors="replace")

    def tail(self, chars: int = 3000) -> str:
        """The last ``chars`` characters of the log (every start)."""
        return self.log.read_text(errors="replace")[-chars:] if self.log.exists() else ""


def start(name: str, argv: Sequence[str], env: Mapping[str, str], log: Path, *, cwd: Path = REPO) -> Proc:
    """Start ``argv`` in a session of its own, its output appended to ``log``."""
    return Proc(name, list(argv), dict(env), log, cwd).start()


def stop_all(procs: Iterable[Proc], grace_s: float) -> None:
    """SIGTERM every group (newest first), wait ``grace_s`` in all, then SIGKILL what is left of each
    group (a straggler, an orphaned pool child) and reap. Never raises."""
    ordered = list(procs)[::-1]
    for proc in ordered:
        proc.signal_group(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for proc in ordered:
        proc.wait(timeout_s=max(0.1, deadline - time.monotonic()))
    for proc in ordered:
        proc.kill()


# -- readiness ---------------------------------------------------------------------------------------------


def answers(http: requests.Session, url: str, timeout_s: float = 2) -> bool:
    """Whether ``url`` answers 200 now (a refused or timed-out connection is a no)."""
    try:
        return http.get(url, timeout=timeout_s).status_code == 200
    except requests.RequestException:
        return False


def wait_answers(http: requests.Session, url: str, timeout_s: float = 60, interval_s: float = 0.2) -> None:
    """Until ``url`` answers 200 (``/readyz``, a health check); fails after ``timeout_s``."""
    wait_until(lambda: answers(http, url), timeout_s=timeout_s, interval_s=interval_s)


@contextmanager
def procfile_web(
    *, database_url: str, redis_url: str, tmp_path: Path, tag: str, sites: Path, **env: str
) -> Iterator[str]:
    """The Procfile's `release`, then its `web` line as written, on loopback against ``database_url``
    and a private key prefix of ``redis_url``; yields the web's base URL, stops it afterwards."""
    environment = deployment_env(
        database_url=database_url,
        redis_url=redis_url,
        key_prefix=unique_prefix(tag),
        sites=sites,
        var_dir=tmp_path / "var",
        drop=("DATABASE_", "REDIS_"),
        HOST="127.0.0.1",
        LOG_FORMAT="console",
        **env,
    )
    release = subprocess.run(
        procfile_argv("release"), cwd=REPO, env=environment, capture_output=True, text=True, timeout=120
    )
    assert release.returncode == 0, release.stderr
    port = free_port()
    proc = start("web", procfile_argv("web", port), {**environment, "PORT": str(port)}, tmp_path / "web.log")
    try:
        base = f"http://127.0.0.1:{port}"
        wait_answers(requests.Session(), f"{base}/healthz", timeout_s=60)
        yield base
    finally:
        stop_all([proc], grace_s=10)


def celery_ready(proc: Proc) -> bool:
    """Whether a Celery worker's current start is up and consuming (it logs ``… ready.``)."""
    return proc.alive() and " ready." in proc.current_output()
