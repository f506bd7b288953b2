"""The Procfile's lines, run as written against PostgreSQL and Redis, make a working deployment:
`release` migrates, `web` serves, `worker` and `urgent` consume their queues, `beat` ticks and
`flower` answers behind its basic auth, showing the tasks by name; without FLOWER_BASIC_AUTH the
`flower` line refuses to start."""

from __future__ import annotations

import os
import shlex
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from tests.polling import wait_until

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
AUTH = {"Authorization": "Bearer procfile-key"}
FLOWER_USER = ("ops", "procfile-flower-password")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def procfile() -> dict[str, str]:
    lines = (REPO / "Procfile").read_text().splitlines()
    return {
        name.strip(): cmd.strip() for name, _, cmd in (line.partition(":") for line in lines if line.strip())
    }


def _argv(command: str, env: dict[str, str]) -> list[str]:
    argv = shlex.split(command.replace("$PORT", env["PORT"]))
    bindir = Path(sys.executable).parent
    return [str(bindir / argv[0]), *argv[1:]]


@pytest.fixture
def deploy_env(postgres_url: str, redis_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "REDIS_"))}
    env.update(
        DATABASE_URL=postgres_url.replace("postgresql+psycopg://", "postgres://"),  # as platforms hand it out
        REDIS_URL=redis_url,
        BROKER_KEY_PREFIX=f"abproc:{uuid.uuid4().hex[:10]}:",
        OPERATOR_API_KEYS="procfile-key",
        HOST="127.0.0.1",
        WEB_CONCURRENCY="1",
        VAR_DIR=str(tmp_path / "var"),
        LOG_FORMAT="console",
        FLOWER_BASIC_AUTH=f"someone:else,{':'.join(FLOWER_USER)}",
    )
    return env


@pytest.fixture
def running(deploy_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, int]]:
    lines = procfile()
    assert set(lines) == {"release", "web", "worker", "urgent", "beat", "flower"}
    release = subprocess.run(
        _argv(lines["release"], {**deploy_env, "PORT": str(_free_port())}), cwd=REPO, env=deploy_env,
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert release.returncode == 0, release.stderr
    ports = {"web": _free_port(), "flower": _free_port()}
    procs: list[subprocess.Popen[bytes]] = []
    for name in ("web", "worker", "urgent", "beat", "flower"):
        env = {**deploy_env, "PORT": str(ports.get(name) or _free_port())}  # platforms set PORT for all
        log = (tmp_path / f"{name}.log").open("wb")
        procs.append(
            subprocess.Popen(
                _argv(lines[name], env),
                cwd=REPO,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        )
        log.close()
    yield ports
    for proc in procs:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
    for proc in procs:
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def test_every_procfile_line_runs_against_real_services(running: dict[str, int]) -> None:
    web = f"http://127.0.0.1:{running['web']}"
    flower = f"http://127.0.0.1:{running['flower']}"
    with requests.Session() as http:

        def answers(url: str) -> bool:
            try:
                return http.get(url, timeout=2).status_code == 200
            except requests.RequestException:
                return False

        wait_until(lambda: answers(f"{web}/readyz"), timeout_s=60, interval_s=0.2)
        wait_until(lambda: answers(f"{flower}/healthcheck"), timeout_s=60, interval_s=0.2)
        assert http.get(f"{flower}/", timeout=5).status_code == 401  # never open on 0.0.0.0
        assert http.get(f"{flower}/", auth=("ops", "wrong"), timeout=5).status_code == 401
        assert http.get(f"{flower}/", auth=FLOWER_USER, timeout=5).status_code == 200

        def flower_task_names() -> set[str]:
            answer = http.get(f"{flower}/api/tasks", auth=FLOWER_USER, timeout=5)
            assert answer.status_code == 200, answer.text
            return {task.get("name") for task in answer.json().values()} - {None}

        # Beat's dispatcher tick runs every second: once Flower shows it, Flower receives task events.
        wait_until(flower_task_names, timeout_s=60, interval_s=0.5)

        urls = []
        for queue in ("life_safety", "default", "bulk"):  # urgent takes the first, worker the others
            accepted = http.post(f"{web}/v1/system/selftest", headers=AUTH, json={"queue": queue}, timeout=5)
            assert accepted.status_code == 202
            urls.append(web + accepted.json()["status_url"])
        for url in urls:
            wait_until(
                lambda u=url: http.get(u, headers=AUTH, timeout=5).json()["state"] == "succeeded",
                timeout_s=60,
                interval_s=0.2,
            )
        # Tasks show by name (worker_send_task_events), as the workers ran them.
        wait_until(lambda: "system.selftest" in flower_task_names(), timeout_s=30, interval_s=0.5)


def test_the_flower_line_refuses_to_listen_on_every_interface_without_basic_auth(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "FLOWER_BASIC_AUTH"}
    env.update(PORT=str(_free_port()), VAR_DIR=str(tmp_path / "var"))

    done = subprocess.run(
        _argv(procfile()["flower"], env), cwd=REPO, env=env, capture_output=True, text=True, timeout=60
    )

    assert done.returncode == 1
    assert done.stderr.strip() == (
        "alarm-bridge flower: refusing to serve Flower on 0.0.0.0 without FLOWER_BASIC_AUTH "
        "(user:password pairs, comma-separated)"
    )
    with socket.socket() as sock:  # nothing was left listening
        assert sock.connect_ex(("127.0.0.1", int(env["PORT"]))) != 0


def test_the_web_process_loads_no_worker_client_or_sandbox_code(tmp_path: Path) -> None:
    probe = (
        "import sys\n"
        "from app.web import create_app\n"
        "from config.settings import Settings\n"
        f"create_app(Settings(database_url='sqlite:///{tmp_path}/l.sqlite3', var_dir='{tmp_path}'))\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('workers', 'sandbox', 'requests'))\n"
        "print(bad)\n"
        "sys.exit(1 if bad else 0)\n"
    )
    done = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
